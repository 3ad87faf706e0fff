"""The master's admin on a laptop: the satellites card, their trouble and the sync log."""

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from sync.models import PeerState, SyncLog, SyncPeer, SyncResult, SyncTrigger
from sync.run import sync_run
from sync.services import peer_save, preferences_update
from tests.factories import StoreFactory, SyncLogFactory, UserFactory
from tests.servers import ROOT
from tests.sync.test_auth import caller, shake
from tests.sync.test_protocol import PASSWORD, PULL, assert_error, credentials, enrol

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OUTPUT = ROOT / "test-output"
LAPTOP = {"width": 1366, "height": 768}
# Not the machine's zone (UTC): the times must follow the browser's zone, and say which it is.
VIEWER_ZONE = "Africa/Nairobi"
ADMIN_PASSWORD = "demo-password-1"
PEERS_URL = "/admin/sync/syncpeer/"
LOG_URL = "/admin/sync/synclog/"
EXCHANGES_URL = "/admin/sync/syncexchange/"
# The admin's --message-error-bg-like badge colour in reports.css, as chromium computes it.
ERROR_BADGE_BG = "rgb(248, 215, 218)"


def pulled(sync_id: int) -> None:
    """Satellite `sync_id` enrols and pulls everything the master holds: a complete sync."""
    client = APIClient()
    client.credentials(**credentials(sync_id=sync_id, key=enrol(sync_id)))
    answer = client.get(PULL)
    assert (answer.status_code, answer.json()["remaining"]) == (200, 0), answer.json()


@pytest.fixture
def master(transactional_db: None) -> None:
    """A master with satellites 2 (OK), 3 (refused twice, failing), 4 (stale) and 5 (never).

    Each satellite's state comes from real requests to the sync API, and the master's sync log
    from a real run on the master (refused) beside the run it found dead.
    """
    preferences_update(sync_id=1, username="sync", password=PASSWORD)
    names = {2: "Hill Clinic", 3: "Island Clinic", 4: "River Post", 5: "New Site"}
    for sync_id, name in names.items():
        StoreFactory(code=f"S00{sync_id}")
        peer_save(
            peer=SyncPeer(
                sync_id=sync_id, name=name, store_code=f"S00{sync_id}", url="http://127.0.0.1:9/"
            )
        )
    pulled(2)
    pulled(4)
    # Two days cannot pass in a test: satellite 4's complete sync is moved back instead.
    PeerState.objects.filter(peer__sync_id=4).update(
        last_success_at=timezone.now() - timedelta(days=2)
    )
    for _ in range(2):
        assert_error(
            shake(caller(password="not-the-password", sync_id=3), 3), 401, "wrong_credentials"
        )
    # A run whose process died as it pulled: the next run marks it interrupted.
    SyncLogFactory(
        started_at=timezone.now() - timedelta(minutes=3, seconds=12),
        trigger=SyncTrigger.SCHEDULE,
        result=SyncResult.RUNNING,
        step="pull",
        error_code="",
        message="",
    )
    assert sync_run(trigger=SyncTrigger.BUTTON).error_code == "is_master"
    UserFactory(username="admin", is_superuser=True)


@pytest.fixture
def page(browser: Browser, live_server: Any, master: None) -> Iterator[Page]:
    """A superuser's admin session in a laptop-sized window whose clock is in VIEWER_ZONE."""
    context = browser.new_context(
        base_url=live_server.url, viewport=LAPTOP, timezone_id=VIEWER_ZONE
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    yield page
    context.close()


def screenshot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)


def assert_no_side_scroll(page: Page) -> None:
    """Neither the page nor the change list's table scrolls sideways."""
    widths = page.evaluate(
        """() => {
            const results = document.querySelector("#changelist .results");
            return [document.documentElement.scrollWidth, results.scrollWidth, results.clientWidth];
        }"""
    )
    assert widths[0] <= LAPTOP["width"], (page.url, widths)
    assert widths[1] <= widths[2], (page.url, widths)


def test_master_admin_shows_each_satellites_health_trouble_and_a_readable_sync_log(
    page: Page,
) -> None:
    card = page.locator("#sync-health")
    for health, label in [("ok", "OK"), ("stale", "Stale"), ("failing", "Failing")]:
        row = card.locator(f"tr.sync-health-{health}")
        expect(row.locator("th")).to_contain_text(re.compile(label, re.IGNORECASE))
        expect(row.locator("td")).to_have_text("1")
    expect(card.locator("tr.sync-health-never td")).to_have_text("1")
    screenshot(page, "sync-status-card.png")

    with page.expect_navigation():
        card.locator("tr.sync-health-failing th a").click()
    expect(page).to_have_url(re.compile(rf"{PEERS_URL}\?health=failing$"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.locator("td.field-name")).to_have_text("Island Clinic")
    expect(rows.locator("td.field-failure_streak")).to_have_text("2")
    expect(rows.locator("td.field-last_error")).to_contain_text("wrong_credentials")
    expect(rows.locator("td.field-last_failed")).not_to_have_text("-")
    screenshot(page, "sync-peers-errors.png")

    page.goto(LOG_URL)
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    for row in (rows.nth(0), rows.nth(1)):
        expect(row.locator("td.field-started, th.field-started")).to_have_text(
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d EAT$")
        )
    interrupted = rows.filter(has_text="interrupted")
    expect(interrupted.locator("td.field-duration")).to_have_text(re.compile(r"^3 min 1\d s$"))
    badge = interrupted.locator(".sync-badge")
    expect(badge).to_have_text("Failure")
    expect(badge).to_have_css("background-color", ERROR_BADGE_BG)
    error = interrupted.locator("td.field-error")
    full_message = SyncLog.objects.get(error_code="interrupted").message
    expect(error.locator("[title]")).to_have_attribute("title", full_message)
    screenshot(page, "sync-log-1366.png")
    box = error.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= LAPTOP["width"], box
    assert_no_side_scroll(page)

    page.goto(EXCHANGES_URL)
    refused = page.locator("#result_list tbody tr").filter(has_text="wrong_credentials")
    expect(refused).to_have_count(2)
    expect(refused.first.locator(".sync-badge")).to_have_css("background-color", ERROR_BADGE_BG)
    screenshot(page, "sync-exchanges-1366.png")
    assert_no_side_scroll(page)
