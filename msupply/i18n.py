"""Compile the translations (locale/*/LC_MESSAGES/*.po to .mo) with polib, no GNU gettext needed.

Run by bin/setup: `python -m msupply.i18n compile`. The .mo files are build output, not committed.
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


def main(argv: list[str]) -> int:
    """`compile`: compile every catalogue."""
    if argv == ["compile"]:
        for path in translations_compile():
            print(f"Compiled {path.relative_to(LOCALE_DIR.parent)}")
        return 0
    print("usage: python -m msupply.i18n compile", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
