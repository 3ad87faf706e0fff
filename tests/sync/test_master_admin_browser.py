"""The master's admin on a laptop: the satellites card, their trouble and the sync log."""

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone
from rest_framework.test import APIClient

from stores.models import Store, Transaction
from sync.models import PeerState, RejectedRecord, SyncLog, SyncPeer, SyncResult, SyncTrigger
from sync.run import sync_run
from sync.services import peer_save, preferences_update
from tests.factories import (
    ItemFactory,
    StoreFactory,
    SyncLogFactory,
    TransactionFactory,
    TransactionLineFactory,
    UserFactory,
    changeset_of,
)
from tests.servers import ROOT
from tests.sync.test_auth import caller, shake
from tests.sync.test_protocol import PASSWORD, PULL, PUSH, assert_error, credentials, enrol
from tests.sync.test_rejects import REFUSED_NUMBER, allow_number_13, refuse_number_13

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
from playwright.sync_api import Browser, Locator, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OUTPUT = ROOT / "test-output"
LAPTOP = {"width": 1366, "height": 768}
# Not the machine's zone (UTC): the times must follow the browser's zone, and say which it is.
VIEWER_ZONE = "Africa/Nairobi"
ADMIN_PASSWORD = "demo-password-1"
PEERS_URL = "/admin/sync/syncpeer/"
LOG_URL = "/admin/sync/synclog/"
EXCHANGES_URL = "/admin/sync/syncexchange/"
REJECTED_URL = "/admin/sync/rejectedrecord/"
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
    error = rows.locator("td.field-last_error")
    expect(error).to_contain_text("wrong_credentials")
    expect(error.locator(".sync-streak")).to_have_text(
        re.compile(r"^2 failures in a row, last \d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d:\d\d EAT$")
    )
    screenshot(page, "sync-peers-errors.png")
    assert_no_side_scroll(page)

    page.goto(LOG_URL)
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    for row in (rows.nth(0), rows.nth(1)):
        expect(row.locator("td.field-started, th.field-started")).to_have_text(
            re.compile(r"^\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d:\d\d EAT$")
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


def pushed_invoice(api: APIClient, batch: int, number: int) -> tuple[str, str]:
    """Satellite 6 pushes a new invoice numbered `number` with one line as batch `batch`;
    returns the invoice's and the line's ids."""
    invoice = TransactionFactory.build(store=Store.objects.get(code="S006"), name=None)
    invoice.number = number
    line = TransactionLineFactory.build(transaction=invoice, item=ItemFactory())
    body = {
        "batch_id": f"batch-{batch}",
        "generation": 1,
        "start": f"0.{batch - 1}",
        "end": f"0.{batch}",
        "digest": "",
        "changes": changeset_of(invoice, line).to_wire(),
    }
    answer = api.post(PUSH, body, format="json")
    assert answer.status_code == 200, answer.json()
    return str(invoice.pk), str(line.pk)


def row_of(page: Page, record_id: str) -> Locator:
    """The rejected records list's row of record `record_id`."""
    return page.locator("#result_list tbody tr").filter(
        has=page.locator(".field-record", has_text=record_id)
    )


def choose(page: Page, action: str, record_ids: list[str]) -> None:
    """Tick the change list's rows of `record_ids`, pick `action` and press Go."""
    for record_id in record_ids:
        row_of(page, record_id).locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    with page.expect_navigation():
        page.click("button[name=index]")


def test_rejected_records_are_discarded_with_a_note_or_retried_from_the_admin(
    page: Page,
) -> None:
    StoreFactory(code="S006")
    peer_save(
        peer=SyncPeer(sync_id=6, name="Lake Clinic", store_code="S006", url="http://127.0.0.1:9/")
    )
    api = APIClient()
    api.credentials(**credentials(sync_id=6, key=enrol(6)))
    refuse_number_13()
    try:
        invoice, line = pushed_invoice(api, 1, REFUSED_NUMBER)
        page.goto(REJECTED_URL)
        rows = page.locator("#result_list tbody tr")
        expect(rows).to_have_count(2)
        expect(row_of(page, invoice).locator("td.field-status")).to_have_text("Rejected")
        expect(row_of(page, line).locator("td.field-status")).to_contain_text("Waiting")
        expect(row_of(page, invoice)).to_contain_text("number 13 is taken")
        screenshot(page, "rejected-records.png")
        assert_no_side_scroll(page)

        choose(page, "discard", [invoice])
        expect(page.locator("#discard-records li")).to_have_count(1)
        expect(page.locator("#id_note")).to_have_attribute("required", "")
        page.fill("#id_note", "   ")  # passes the browser's check, not the master's
        with page.expect_navigation():
            page.click("#discard-confirm")
        expect(page.locator(".errorlist")).to_contain_text("required")
        assert RejectedRecord.objects.count() == 2
        page.fill("#id_note", "Entered twice after the restore")
        screenshot(page, "rejected-records-discard.png")
        with page.expect_navigation():
            page.click("#discard-confirm")
        expect(page.locator(".messagelist")).to_contain_text("Discarded 2 records, with your note.")
        expect(page.locator("#result_list tbody tr")).to_have_count(0)
        note = LogEntry.objects.get(object_id=str(SyncPeer.objects.get(sync_id=6).pk))
        assert "Entered twice after the restore" in note.get_change_message()
        assert note.user.username == "admin"

        invoice, line = pushed_invoice(api, 2, REFUSED_NUMBER)
        page.goto(REJECTED_URL)
        choose(page, "retry_now", [invoice])
        expect(page.locator(".messagelist")).to_contain_text("0 applied, 2 still set aside")
    finally:
        allow_number_13()
    choose(page, "retry_now", [invoice])
    expect(page.locator(".messagelist")).to_contain_text("2 applied, 0 still set aside")
    expect(page.locator("#result_list tbody tr")).to_have_count(0)
    screenshot(page, "rejected-records-retried.png")
    assert Transaction.objects.get(pk=invoice).lines.get().pk == uuid.UUID(line)

    page.goto(PEERS_URL)
    lake = page.locator("#result_list tbody tr").filter(has_text="Lake Clinic")
    expect(lake.locator("td.field-stages .sync-stages")).to_have_text(
        "0 to push4 acknowledged2 integrated0 waiting0 rejected"
    )
    screenshot(page, "sync-peers-stages.png")
    assert_no_side_scroll(page)
