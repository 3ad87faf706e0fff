"""Goods in transit in a real chromium: the table and its CSV equal the database, and the
transaction list with its transfer marks fits a 1366 px laptop."""

import csv
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from stores.models import Transaction
from tests.factories import UserFactory
from tests.servers import ROOT
from tests.stores.test_reports import short_date
from tests.stores.test_transit_report import database_value, network  # noqa: F401

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OUTPUT = ROOT / "test-output"
PASSWORD = "demo-password-1"


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    """A superuser's session on the live server, in a laptop-sized window."""
    user = UserFactory(username="manager", is_superuser=True)
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1366, "height": 768}, accept_downloads=True
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    yield page
    context.close()


def cells(page: Page, section: str) -> list[list[str]]:
    rows: list[list[str]] = page.locator(f"#report-table {section} tr:not(.empty)").evaluate_all(
        "rows => rows.map(row => Array.from(row.cells, cell => cell.innerText.trim()))"
    )
    return rows


def assert_fits_a_laptop(page: Page) -> None:
    """Neither the page nor the change list's own scroll box scrolls sideways."""
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    widths = page.locator("#changelist .results").evaluate(
        "box => [box.scrollWidth, box.clientWidth, Array.from("
        "document.querySelectorAll('#result_list thead th'), th => th.className + ':' + "
        "Math.round(th.getBoundingClientRect().width))]"
    )
    assert widths[0] <= widths[1], widths


def expected_rows(*outbounds: Transaction) -> list[list[str]]:
    """The page's row of each unreceived outbound, figured from the database."""
    today = timezone.localdate()
    rows = []
    for outbound in outbounds:
        receiver = outbound.name.store  # type: ignore[union-attr]
        inbound = Transaction.objects.filter(transfer_of=outbound).first()
        rows.append(
            [
                str(outbound.store),
                str(receiver),
                str(outbound.number),
                short_date(outbound.date),
                str((today - outbound.date).days),
                str(inbound.number) if inbound else "—",
                f"{database_value(outbound):,.2f}",
            ]
        )
    return rows


def test_goods_in_transit_table_and_csv_equal_the_database(
    page: Page,
    network: dict[str, Any],  # noqa: F811
) -> None:
    page.goto("/reports/")
    with page.expect_navigation():
        page.locator("#reports-module").get_by_role("link", name="Goods in transit").click()
    expect(page.locator("h1")).to_have_text("Goods in transit")
    shown = cells(page, "tbody")
    old, far, back = network["old"], network["far"], network["back"]
    assert [row[:5] + row[6:] for row in shown] == expected_rows(old, far, back)
    assert [row[5] for row in shown] == ["Over 30 days", "Over 7 days", "OK"]
    in_transit = sum(map(database_value, (old, far, back)), Decimal("0.00"))
    assert cells(page, "tfoot") == [
        ["Total", "3 transfers", "", "—", "—", "", "—", f"{in_transit:,.2f}"]
    ]
    expect(page.locator("#transit-summary .transit-pending strong")).to_have_text(
        f"{in_transit:,.2f}"
    )
    expect(page.locator("figure.report-chart rect.chart-bar")).to_have_count(3)
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "transit-report.png"), full_page=True)

    page.select_option("#id_to_store", value="CL")
    with page.expect_navigation():
        page.click("#apply-filters")
    assert [row[2] for row in cells(page, "tbody")] == [str(old.number)]
    with page.expect_download() as info:
        page.click("#download-csv")
    path = OUTPUT / "transit-report.csv"
    info.value.save_as(path)
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0][:4] == ["From store", "To store", "Outbound number", "Date sent"]
    assert rows[1:] == [
        [str(old.store), str(old.name.store), str(old.number), old.date.isoformat(),  # type: ignore[union-attr]
         str((timezone.localdate() - old.date).days), "Over 30 days", str(old.inbound.number),
         str(database_value(old))],
        ["Total", "1 transfer", "", "", "", "", "", str(database_value(old))],
    ]  # fmt: skip


def test_the_transaction_list_with_transfer_marks_fits_a_laptop(
    page: Page,
    network: dict[str, Any],  # noqa: F811
) -> None:
    page.goto("/admin/stores/transaction/")
    expect(page.locator("#result_list td.field-transfer .transfer-badge")).to_have_count(7)
    assert_fits_a_laptop(page)
    with page.expect_navigation():
        page.get_by_role("link", name="Incoming waiting to be received").click()
    marks = page.locator("#result_list td.field-transfer")
    expect(marks).to_have_count(2)
    assert sorted(marks.all_inner_texts()) == ["Inbound from CL", "Inbound from WH"]
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "transit-admin.png"), full_page=True)
    assert_fits_a_laptop(page)
    # The mark leads to the other half: the outbound, which says its inbound waits here.
    with page.expect_navigation():
        page.get_by_role("link", name="Inbound from WH").click()
    expect(page.locator(".field-received")).to_contain_text(
        f"{network['old'].inbound} waits in draft at CL Hill clinic"
    )
