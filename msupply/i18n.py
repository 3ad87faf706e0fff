"""Compile the translations (locale/*/LC_MESSAGES/*.po to .mo) with polib, no GNU gettext needed.

Run by bin/setup: `python -m msupply.i18n compile`. The .mo files are build output, not committed.
`python -m msupply.i18n fill` copies translations written ahead (locale/<lang>/glossary.po) into
the messages that makemessages added to django.po without one.
"""

import sys
from pathlib import Path

import polib

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"


def translations_compile(*, locale_dir: Path = LOCALE_DIR) -> list[Path]:
    """Write each .po's .mo beside it, leaving out fuzzy entries as msgfmt does; returns the .mo."""
    written = []
    for po_path in sorted(locale_dir.glob("*/LC_MESSAGES/*.po")):
        catalogue = polib.pofile(str(po_path))
        for entry in catalogue.fuzzy_entries():
            # msgfmt leaves fuzzy entries out: they are guesses, not translations.
            catalogue.remove(entry)
        mo_path = po_path.with_suffix(".mo")
        catalogue.save_as_mofile(str(mo_path))
        written.append(mo_path)
    return written


def _untranslated(entry: polib.POEntry) -> bool:
    if entry.msgid_plural:
        return not all(entry.msgstr_plural.values())
    return not entry.msgstr


def translations_fill(*, locale_dir: Path = LOCALE_DIR) -> dict[Path, list[str]]:
    """Fill each django.po's untranslated messages from its glossary.po; returns what is left."""
    left: dict[Path, list[str]] = {}
    for glossary_path in sorted(locale_dir.glob("*/glossary.po")):
        po_path = glossary_path.parent / "LC_MESSAGES" / "django.po"
        if not po_path.exists():
            continue
        glossary = {entry.msgid: entry for entry in polib.pofile(str(glossary_path))}
        catalogue = polib.pofile(str(po_path))
        for entry in catalogue:
            known = glossary.get(entry.msgid)
            if entry.obsolete or not _untranslated(entry) or known is None:
                continue
            if entry.msgid_plural and known.msgstr_plural:
                entry.msgstr_plural = dict(known.msgstr_plural)
            elif not entry.msgid_plural and known.msgstr:
                entry.msgstr = known.msgstr
            if "fuzzy" in entry.flags:
                entry.flags.remove("fuzzy")
        catalogue.save()
        left[po_path] = [e.msgid for e in catalogue if not e.obsolete and _untranslated(e)]
    return left


def main(argv: list[str]) -> int:
    """`compile`: compile every catalogue; `fill`: translate from the glossaries, list the rest."""
    if argv == ["compile"]:
        for path in translations_compile():
            print(f"Compiled {path.relative_to(LOCALE_DIR.parent)}")
        return 0
    if argv == ["fill"]:
        for path, msgids in translations_fill().items():
            print(f"{path.relative_to(LOCALE_DIR.parent)}: {len(msgids)} messages to translate")
            for msgid in msgids:
                print(f"  msgid {msgid!r}")
        return 0
    print("usage: python -m msupply.i18n compile|fill", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
