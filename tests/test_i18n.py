"""Translations: the French catalogue is complete, the language and time zone follow the viewer.

The API stays in English with codes, so satellites and masters in other languages agree.
"""

import html
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from msupply.i18n import translations_compile
from msupply.middleware import TIMEZONE_COOKIE, viewer_timezone
from stores.models import StockLine, Transaction
from sync.display import local_time_text
from sync.errors import ErrorCode, SyncError, error_text
from sync.models import SyncResult
from tests.factories import (
    ItemFactory,
    PeerStateFactory,
    StockLineFactory,
    StoreFactory,
    SyncExchangeFactory,
    SyncLogFactory,
    SyncPeerFactory,
    TransactionLineFactory,
)
from tests.stores.test_reports import csv_rows
from tests.sync.test_auth import caller, shake, sites  # noqa: F401 - the fixture

ROOT = Path(settings.BASE_DIR)
FRENCH_PO = ROOT / "locale" / "fr" / "LC_MESSAGES" / "django.po"
LOG_LIST = reverse("admin:sync_synclog_changelist")
STARTED = datetime(2026, 3, 9, 11, 3, 22, tzinfo=UTC)
# What makemessages leaves out, as in the README's command.
NOT_SOURCE = {".venv", "var", "bench", "tests", ".git", "node_modules", "__pycache__"}


@pytest.fixture(autouse=True)
def english_after() -> Iterator[None]:
    """LocaleMiddleware leaves a French request's language active in this thread: reset it."""
    yield
    translation.activate(settings.LANGUAGE_CODE)


def _msgid(entry: polib.POEntry) -> str:
    return entry.msgid if not entry.msgctxt else f"{entry.msgctxt}\x04{entry.msgid}"


def _translated(entry: polib.POEntry) -> bool:
    if entry.msgid_plural:
        return bool(entry.msgstr_plural) and all(entry.msgstr_plural.values())
    return bool(entry.msgstr)


@pytest.mark.skipif(
    shutil.which("xgettext") is None,
    reason="xgettext (GNU gettext) is not installed: apt-get install gettext to check the .po",
)
def test_the_french_translation_covers_every_message_of_the_source(tmp_path: Path) -> None:
    """Extract the messages as makemessages does, in a copy, and compare with locale/fr."""
    copy = tmp_path / "source"
    shutil.copytree(
        ROOT,
        copy,
        ignore=lambda folder, names: [n for n in names if n in NOT_SOURCE or n.endswith(".mo")],
    )
    env = {**os.environ, "DEBUG": "true", "DJANGO_SETTINGS_MODULE": "msupply.settings"}
    env.pop("DATABASE_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "fr", "--no-obsolete", "-v", "0"]
        + [f"--ignore={name}" for name in sorted(NOT_SOURCE)],
        cwd=copy,
        env=env,
        check=True,
        capture_output=True,
    )
    extracted = polib.pofile(str(copy / "locale" / "fr" / "LC_MESSAGES" / "django.po"))
    shipped = polib.pofile(str(FRENCH_PO))
    in_source = {_msgid(entry) for entry in extracted}
    by_msgid = {_msgid(entry): entry for entry in shipped if not entry.obsolete}
    missing = [
        msgid
        for msgid in sorted(in_source)
        if msgid not in by_msgid or not _translated(by_msgid[msgid])
    ]
    fuzzy = sorted(_msgid(entry) for entry in shipped if "fuzzy" in entry.flags)
    obsolete = sorted(
        [_msgid(entry) for entry in shipped if entry.obsolete]
        + [msgid for msgid in by_msgid if msgid not in in_source]
    )
    report = []
    for title, msgids in [
        ("not translated (add a msgstr in locale/fr/LC_MESSAGES/django.po)", missing),
        ("fuzzy (check the translation, then remove the fuzzy flag)", fuzzy),
        ("obsolete (no longer in the source: remove them, or run makemessages)", obsolete),
    ]:
        if msgids:
            report.append(f"{len(msgids)} French messages {title}:")
            report += [f"  msgid {msgid!r}" for msgid in msgids]
    assert not report, "\n".join(report)


def test_the_catalogue_compiles_without_gnu_gettext(tmp_path: Path) -> None:
    po_folder = tmp_path / "fr" / "LC_MESSAGES"
    po_folder.mkdir(parents=True)
    shutil.copy(FRENCH_PO, po_folder / "django.po")
    [mo_path] = translations_compile(locale_dir=tmp_path)
    compiled = polib.mofile(str(mo_path))
    assert compiled.find("Stock on hand").msgstr == "Stock disponible"
    assert len(compiled) >= len(polib.pofile(str(FRENCH_PO)).translated_entries())


def test_the_browser_language_picks_french_for_a_logged_out_page(client: Client) -> None:
    page = client.get(reverse("admin:login"), HTTP_ACCEPT_LANGUAGE="fr-FR,fr;q=0.9")
    assert page["Content-Language"] == "fr"
    text = page.content.decode()
    assert '<html lang="fr"' in text
    assert 'id="language-chooser"' in text
    assert ">Langue</label>" in text
    # Django's own admin catalogue, through LocaleMiddleware too.
    assert "Connexion" in text
    english = client.get(reverse("admin:login"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert ">Language</label>" in english


def test_the_chooser_sets_the_language_and_returns_to_the_page(client: Client) -> None:
    login = reverse("admin:login")
    answer = client.post(reverse("set_language"), {"language": "fr", "next": login})
    assert answer.status_code == 302
    assert answer["Location"] == login
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == "fr"
    # The cookie wins over the browser's Accept-Language.
    page = client.get(login, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert ">Langue</label>" in page
    assert '<option value="fr" lang="fr" selected>' in page
    client.post(reverse("set_language"), {"language": "en", "next": login})
    assert ">Language</label>" in client.get(login).content.decode()


@pytest.mark.django_db
def test_an_admin_page_and_a_report_in_french(admin_client: Client) -> None:
    admin_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"
    SyncLogFactory(started_at=STARTED, result=SyncResult.SUCCESS)
    logs = html.unescape(admin_client.get(LOG_LIST).content.decode())
    for heading in ["Début", "Résultat", "Durée", "Enregistrements", "Synchronisation"]:
        assert heading in logs, heading
    report = html.unescape(admin_client.get(reverse("reports:stock_on_hand")).content.decode())
    assert ">Rapports</a>" in report
    for tab in ["Stock disponible", "Stock proche de la péremption", "Marchandises en transit"]:
        assert f">{tab}</a>" in report, tab


@pytest.mark.django_db
def test_a_service_refusal_shows_in_french_in_the_admin(admin_client: Client) -> None:
    store = StoreFactory(code="CMS", name="Central Medical Store")
    item = ItemFactory(code="OXY", name="Oxytocin")
    expiry = date(2027, 3, 9)
    StockLineFactory(store=store, item=item, batch="B1", expiry=expiry, quantity=10)
    # Not TransactionFactory: its number sequence is what tests/sync/test_rejects.py counts on.
    record = Transaction.objects.create(
        store=store, kind=Transaction.Kind.CUSTOMER_INVOICE, number=1, date=expiry
    )
    TransactionLineFactory(transaction=record, item=item, batch="B1", expiry=expiry, quantity=15)
    admin_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"

    response = admin_client.post(
        reverse("admin:stores_transaction_changelist"),
        {"action": "finalise", "_selected_action": [str(record.pk)]},
        follow=True,
    )

    shown = [str(message) for message in response.context["messages"]]
    assert shown == [
        "Impossible de sortir 15 de OXY Oxytocin lot B1 (péremption 09/03/2027) : seulement 10 "
        "en stock dans CMS Central Medical Store.",
        "0 transaction(s) finalisée(s).",
    ]
    page = html.unescape(response.content.decode())
    assert "Facture client (marchandises sorties)" in page  # the kind's label, in the list
    assert Transaction.objects.get(pk=record.pk).status == Transaction.Status.DRAFT
    assert StockLine.objects.get().quantity == 10


@pytest.mark.django_db
def test_a_time_shows_in_the_locale_format_in_the_viewers_zone_named(
    admin_client: Client,
) -> None:
    with translation.override("fr"), timezone.override("Europe/Paris"):
        assert local_time_text(STARTED) == "9 mars 2026 à 12:03:22 CET"
    with translation.override("en"):
        assert local_time_text(STARTED) == "9 Mar 2026, 11:03:22 UTC"
    SyncLogFactory(started_at=STARTED, result=SyncResult.SUCCESS)
    admin_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"
    admin_client.cookies[TIMEZONE_COOKIE] = "Africa/Nairobi"
    assert "9 mars 2026 à 14:03:22 EAT" in admin_client.get(LOG_LIST).content.decode()
    # A zone the server does not know is ignored: settings.TIME_ZONE (UTC here) instead.
    admin_client.cookies[TIMEZONE_COOKIE] = "Mars/Olympus_Mons"
    assert "9 mars 2026 à 11:03:22 UTC" in admin_client.get(LOG_LIST).content.decode()


@pytest.mark.django_db
def test_a_stored_sync_error_shows_in_the_viewers_language(admin_client: Client) -> None:
    stored = "The master refused the password (or the sync user name)."
    log = SyncLogFactory(
        started_at=STARTED,
        result=SyncResult.FAILURE,
        error_code=ErrorCode.WRONG_CREDENTIALS,
        message=stored,
    )
    admin_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"
    page = html.unescape(
        admin_client.get(reverse("admin:sync_synclog_change", args=[log.pk])).content.decode()
    )
    assert "Nom d'utilisateur ou mot de passe de synchronisation erroné" in page
    assert "Mettez le même nom d'utilisateur et le même mot de passe" in page
    assert f"Détail : {stored}" in page
    admin_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    english = html.unescape(
        admin_client.get(reverse("admin:sync_synclog_change", args=[log.pk])).content.decode()
    )
    assert stored in english
    assert "erroné" not in english


@pytest.mark.django_db
def test_the_sync_status_report_shows_last_errors_in_the_viewers_language(
    admin_client: Client,
) -> None:
    stored = "The master refused the password (or the sync user name)."
    for sync_id in (3, 4):
        PeerStateFactory(
            peer=SyncPeerFactory(sync_id=sync_id, store_code=StoreFactory().code),
            last_error=stored if sync_id == 3 else "",
        )
    # Satellite 3's state keeps the message; its failed run has the code. Satellite 4 has a
    # failure streak on the master, from its refused logins.
    SyncLogFactory(
        peer_sync_id=3, error_code=ErrorCode.WRONG_CREDENTIALS, message=stored, started_at=STARTED
    )
    SyncExchangeFactory(sync_id=4, message=stored)
    url = reverse("sync_status_report") + "?format=csv"
    label = "Nom d'utilisateur ou mot de passe de synchronisation erroné"

    admin_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"
    french = {row[0]: row[9] for row in csv_rows(admin_client.get(url).getvalue())[1:]}
    admin_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    english = {row[0]: row[9] for row in csv_rows(admin_client.get(url).getvalue())[1:]}

    assert french["3"].startswith(label)
    assert french["3"].endswith(f"Détail : {stored}")
    assert french["4"].startswith(f"wrong_credentials: {label}")
    assert english == {"3": stored, "4": f"wrong_credentials: {stored}"}


def test_error_text_translates_the_code_and_keeps_the_stored_detail() -> None:
    with translation.override("fr"):
        assert error_text("timeout") == (
            "Le serveur principal ne répond plus. Rien : la prochaine synchronisation reprend là "
            "où celle-ci s'est arrêtée. Si cela se répète, vérifiez la liaison."
        )
        # A code from a newer release shows as it was stored.
        assert error_text("from_the_future", "As stored.") == "As stored."


def test_a_sync_error_raised_in_french_keeps_its_english_message() -> None:
    with translation.override("fr"):
        error = SyncError(ErrorCode.TIMEOUT)
    assert error.message.startswith("Master stopped answering. Nothing:")
    assert error.code == "timeout"


@pytest.mark.django_db
def test_the_api_answers_in_english_with_codes_to_a_french_caller(sites: None) -> None:  # noqa: F811
    client = caller(password="wrong")
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "fr"
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"
    answer = shake(client)
    assert answer.status_code == 401
    assert answer["Content-Language"] == "en"
    body = answer.json()
    assert body["code"] == "wrong_credentials"
    assert "refused the password" in body["message"]
    schema = Client().get(reverse("schema"), HTTP_ACCEPT_LANGUAGE="fr")
    assert "Wrong sync user name or password" in schema.content.decode()
    assert "erroné" not in schema.content.decode()


def test_unknown_and_malformed_time_zones_are_ignored() -> None:
    assert str(viewer_timezone("Africa/Nairobi")) == "Africa/Nairobi"
    for zone in ["", "Not/AZone", "../../etc/passwd", "/etc/localtime", "x" * 300]:
        assert viewer_timezone(zone) is None, zone
