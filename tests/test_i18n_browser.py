"""The language chooser switches the admin and the reports to French, in a real chromium."""

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from sync.models import SyncResult
from sync.services import preferences_update
from tests.factories import SyncLogFactory, UserFactory
from tests.servers import ROOT

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "demo-password-1"
SCREENSHOTS = ROOT / "var" / "screenshots" / "fr"
# Each report's address and its French title (the reports' tabs and <h1>).
REPORTS = {
    "index": ("/reports/", "Rapports"),
    "stock-on-hand": ("/reports/stock-on-hand/", "Stock disponible"),
    "expiring-stock": ("/reports/expiring-stock/", "Stock proche de la péremption"),
    "transactions": ("/reports/transactions/", "Mouvements"),
    "goods-in-transit": ("/reports/goods-in-transit/", "Marchandises en transit"),
    "sync-status": ("/reports/sync-status/", "État de la synchronisation"),
}


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    """A laptop-sized window in Nairobi's time zone, on the live server, logged out."""
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 1366, "height": 768},
        locale="en-GB",
        timezone_id="Africa/Nairobi",
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(autouse=True)
def master(transactional_db: None) -> None:
    """A master with a few stores and transactions, one failed sync and one superuser."""
    preferences_update(sync_id=1, username="sync", password="pw")
    call_command("seed_demo", "--stores", "3", "--items", "20", "--transactions", "30")
    SyncLogFactory(result=SyncResult.FAILURE, error_code="wrong_credentials", message="Refused.")
    UserFactory(username="admin", password=PASSWORD, is_superuser=True)


def choose(page: Page, language: str) -> None:
    """Pick `language` in the header's chooser and wait for the page it comes back to."""
    path = page.url
    with page.expect_navigation():
        page.select_option("#language-select", language)
    expect(page).to_have_url(path)


def test_the_chooser_switches_the_admin_and_the_reports_to_french(page: Page) -> None:
    page.goto("/admin/login/")
    expect(page.locator("label[for=language-select]")).to_have_text("Language")
    # Logged out, on the login page: the chooser works there too.
    choose(page, "fr")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("label[for=language-select]")).to_have_text("Langue")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#content h1")).to_have_text("Site d’administration")
    expect(page.locator("caption", has_text="Synchronisation")).to_be_visible()

    # A stored sync error shows in French, with a time in the browser's zone, zone named.
    page.goto("/admin/sync/synclog/")
    expect(page.locator("th.column-started")).to_contain_text("Début")
    error = page.locator("td.field-error").first
    expect(error).to_contain_text("Nom d'utilisateur ou mot de passe de synchronisation erroné")
    expect(page.locator(".field-started").first).to_contain_text(re.compile(r" à .* EAT$"))

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, (url, title) in REPORTS.items():
        page.goto(url)
        expect(page.locator("#language-select")).to_have_value("fr")
        expect(page.locator(".breadcrumbs")).to_contain_text("Accueil")
        if name != "index":
            expect(page.locator("nav.report-tabs a[aria-current=page]")).to_have_text(title)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    # And back to English from a report page.
    page.goto(REPORTS["stock-on-hand"][0])
    choose(page, "en")
    expect(page.locator("nav.report-tabs a[aria-current=page]")).to_have_text("Stock on hand")
    expect(page.locator(".breadcrumbs")).to_contain_text("Home")
