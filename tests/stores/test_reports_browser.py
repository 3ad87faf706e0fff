"""Every report on a real master holding two satellites' synced data, driven in a real chromium."""

import csv
import datetime
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from tests.servers import ROOT, Cluster, Site
from tests.stores.test_reports import short_date

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

# Site.sql takes no parameters: queries embed only codes and dates these tests read themselves.
# ruff: noqa: S608

pytestmark = [pytest.mark.browser, pytest.mark.servers]

ADMIN = "admin"
TRANSACTIONS = 30
OUTPUT = ROOT / "test-output"
SATELLITE_STORES = ["S002", "S003"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master holding the synced transactions of two satellites (stores S002 and S003)."""
    cluster = Cluster(tmp_path_factory.mktemp("reports"), satellites=2)
    try:
        cluster.provision()
        for satellite in cluster.satellites:
            satellite.manage("sync_now")  # learns which store it hosts
            satellite.manage("seed_demo", "--transactions", str(TRANSACTIONS))
            satellite.manage("sync_now")
        for site in (cluster.master, cluster.satellites[0]):
            site.manage(
                "createsuperuser", "--noinput", "--username", ADMIN,
                "--email", "admin@example.org", env={"DJANGO_SUPERUSER_PASSWORD": ADMIN},
            )  # fmt: skip
        cluster.satellites[0].start()
        yield cluster
    finally:
        cluster.destroy()


def logged_in(browser: Browser, site: Site) -> Page:
    """A page of a laptop-sized window, logged in to `site`'s admin index."""
    context = browser.new_context(
        base_url=site.url, viewport={"width": 1366, "height": 768}, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", ADMIN)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    return page


@pytest.fixture(scope="module")
def page(browser: Browser, cluster: Cluster) -> Iterator[Page]:
    page = logged_in(browser, cluster.master)
    yield page
    page.context.close()


# --- helpers -------------------------------------------------------------------------------


def screenshot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"reports-{name}.png"), full_page=True)


def cells(page: Page, section: str) -> list[list[str]]:
    """The text of each cell of the report table's `section` (tbody or tfoot), row by row."""
    rows: list[list[str]] = page.locator(f"#report-table {section} tr:not(.empty)").evaluate_all(
        "rows => rows.map(row => Array.from(row.cells, cell => cell.innerText.trim()))"
    )
    return rows


def number(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def cents(value: Any) -> Decimal:
    """A database sum (a float on SQLite, a decimal string on PostgreSQL) to the cent."""
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def download_csv(page: Page, name: str) -> list[list[str]]:
    """Press Download CSV, keep the file beside the screenshots and return its rows."""
    with page.expect_download() as info:
        page.click("#download-csv")
    path = OUTPUT / f"reports-{name}.csv"
    OUTPUT.mkdir(exist_ok=True)
    info.value.save_as(path)
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def apply_filters(page: Page) -> None:
    with page.expect_navigation():
        page.click("#apply-filters")


def open_report(page: Page, name: str) -> None:
    """Open a report from the reports index, the way a manager would."""
    page.goto("/reports/")
    with page.expect_navigation():
        page.locator("#reports-module").get_by_role("link", name=name, exact=True).click()
    expect(page.locator("h1")).to_have_text(name)
    expect(page.locator("#report-scope")).to_have_text("All stores — master server")


# --- the master's reports ------------------------------------------------------------------


def test_admin_index_leads_to_the_reports_index(page: Page) -> None:
    page.goto("/admin/")
    module = page.locator("#reports-module")
    for name in (
        "Stock on hand",
        "Expiring stock",
        "Transactions",
        "Goods in transit",
        "Sync status",
    ):
        expect(module.get_by_role("link", name=name, exact=True)).to_be_visible()

    with page.expect_navigation():
        module.get_by_role("link", name="Reports").click()

    expect(page).to_have_url(re.compile(r"/reports/$"))
    expect(page.locator("#reports-module tr")).to_have_count(5)
    screenshot(page, "index")


def test_stock_on_hand_by_store_matches_the_master_database(page: Page, cluster: Cluster) -> None:
    master = cluster.master
    on_hand = {
        (item, store): int(quantity)
        for item, store, quantity in master.sql(
            "SELECT i.code, s.code, SUM(l.quantity) FROM stores_stockline l "
            "JOIN stores_item i ON i.id = l.item_id JOIN stores_store s ON s.id = l.store_id "
            "WHERE l.quantity > 0 GROUP BY i.code, s.code"
        )
    }
    movements = master.sql(
        "SELECT i.code, s.code, SUM(CASE WHEN t.kind = 'customer_invoice' THEN -l.quantity "
        "ELSE l.quantity END) FROM stores_transactionline l "
        "JOIN stores_transaction t ON t.id = l.transaction_id "
        "JOIN stores_item i ON i.id = l.item_id JOIN stores_store s ON s.id = t.store_id "
        "WHERE t.status = 'finalised' GROUP BY i.code, s.code"
    )
    assert on_hand == {(item, store): int(qty) for item, store, qty in movements if int(qty)}
    assert {store for _, store in on_hand} == set(SATELLITE_STORES)
    shared = [code for code, store in on_hand if store == "S002" and (code, "S003") in on_hand]
    item = sorted(shared)[0]

    open_report(page, "Stock on hand")
    page.select_option("#id_item", item)
    apply_filters(page)

    rows = cells(page, "tbody")
    shown = {row[3]: int(number(row[7])) for row in rows if row[3] != "All"}
    assert shown == {store: on_hand[(item, store)] for store in SATELLITE_STORES}
    assert rows[-1][3:5] == ["All", "2 stores"]
    assert number(rows[-1][7]) == sum(shown.values())
    assert number(cells(page, "tfoot")[0][7]) == sum(shown.values())
    bars = page.locator("figure.report-chart svg rect.chart-bar")
    expect(bars).to_have_count(2)
    screenshot(page, "stock-on-hand")

    downloaded = download_csv(page, "stock-on-hand")
    assert downloaded[0][0] == "Item code"
    assert [[row[3], row[7]] for row in downloaded[1:]] == [
        [row[3], row[7].replace(",", "")] for row in [*rows, *cells(page, "tfoot")]
    ]


def test_expiring_stock_matches_the_master_database(page: Page, cluster: Cluster) -> None:
    open_report(page, "Expiring stock")
    page.fill("#id_days", "365")
    apply_filters(page)

    note = page.locator(".report-note").inner_text()
    # The page shows the date in the viewer's format; the master and this test share a zone.
    until = timezone.localdate() + datetime.timedelta(days=365)
    assert f"on or before {short_date(until)}" in note
    master = cluster.master
    batches = master.sql(
        "SELECT l.store_id, l.item_id, l.batch, l.expiry, l.quantity FROM stores_stockline l "
        f"WHERE l.quantity > 0 AND l.expiry <= '{until}'"
    )
    receipts = master.sql(
        "SELECT t.store_id, l.item_id, l.batch, l.expiry, t.date, t.number, l.cost_price "
        "FROM stores_transactionline l JOIN stores_transaction t ON t.id = l.transaction_id "
        "WHERE t.kind = 'supplier_invoice' AND t.status = 'finalised' ORDER BY t.date, t.number"
    )
    latest_cost = {tuple(str(value) for value in row[:4]): cents(row[6]) for row in receipts}
    value = sum(
        (row[4] * latest_cost[tuple(str(v) for v in row[:4])] for row in batches), Decimal(0)
    )
    assert batches, "the demo data should have batches expiring within a year"

    total = cells(page, "tfoot")[0]
    assert total[2] == f"{len(batches)} batches"
    assert number(total[7]) == sum(row[4] for row in batches)
    assert number(total[9]) == value
    first = cells(page, "tbody")[0]
    assert first[0] == short_date(datetime.date.fromisoformat(min(str(row[3]) for row in batches)))
    screenshot(page, "expiring-stock")

    downloaded = download_csv(page, "expiring-stock")
    assert len(downloaded) == 1 + len(batches) + 1
    assert downloaded[-1][9] == str(value.quantize(Decimal("0.01")))
    assert [row[0] for row in downloaded[1:-1]] == sorted(str(row[3]) for row in batches)


def test_transactions_of_one_store_match_the_master_database(page: Page, cluster: Cluster) -> None:
    open_report(page, "Transactions")
    page.select_option("#id_store", "S003")
    page.select_option("#id_period", "day")
    apply_filters(page)

    date_from = page.input_value("#id_date_from")
    date_to = page.input_value("#id_date_to")
    [(count, lines, value)] = cluster.master.sql(
        "SELECT COUNT(DISTINCT t.id), COUNT(l.id), SUM(l.quantity * CASE WHEN t.kind = "
        "'customer_invoice' THEN l.sell_price ELSE l.cost_price END) FROM stores_transaction t "
        "JOIN stores_transactionline l ON l.transaction_id = t.id "
        "JOIN stores_store s ON s.id = t.store_id WHERE s.code = 'S003' AND "
        f"t.status = 'finalised' AND t.date >= '{date_from}' AND t.date <= '{date_to}'"
    )
    assert count == TRANSACTIONS

    rows = cells(page, "tbody")
    assert {row[1] for row in rows} == {"S003"}
    grand_total = cells(page, "tfoot")[-1]
    assert grand_total[3] == "All kinds"
    assert [number(text) for text in grand_total[4:]] == [count, lines, cents(value)]
    expect(page.locator("figure.report-chart svg polyline")).to_have_count(3)
    screenshot(page, "transactions")

    downloaded = download_csv(page, "transactions")
    assert {row[1] for row in downloaded[1:] if row[0] != "Total"} == {"S003"}
    assert downloaded[-1][4:] == [str(count), str(lines), str(cents(value))]


def test_sync_status_shows_both_satellites_as_the_master_records_them(
    page: Page, cluster: Cluster
) -> None:
    states = {
        int(sync_id): int(records)
        for sync_id, records in cluster.master.sql(
            "SELECT p.sync_id, s.records_received FROM sync_peerstate s "
            "JOIN sync_syncpeer p ON p.id = s.peer_id"
        )
    }

    open_report(page, "Sync status")

    rows = cells(page, "tbody")
    assert [row[:3] for row in rows] == [["2", "satellite2", "S002"], ["3", "satellite3", "S003"]]
    assert {int(row[0]): int(number(row[8])) for row in rows} == states
    assert [row[7] for row in rows] == ["OK", "OK"]
    expect(page.locator("#sync-summary .sync-ok")).to_contain_text("2")
    screenshot(page, "sync-status")

    downloaded = download_csv(page, "sync-status")
    assert [row[:3] for row in downloaded[1:]] == [row[:3] for row in rows]


# --- a satellite's reports -----------------------------------------------------------------


def test_satellite_reports_show_only_its_own_store(browser: Browser, cluster: Cluster) -> None:
    satellite_page = logged_in(browser, cluster.satellites[0])
    try:
        # Each report and the column that names the store.
        reports = {"stock-on-hand/": 3, "expiring-stock/?days=3650": 2, "transactions/": 1}
        for path, store_column in reports.items():
            satellite_page.goto(f"/reports/{path}")
            expect(satellite_page.locator("#report-scope")).to_have_text(
                "Store S002 — this satellite's own store only"
            )
            assert "S003" not in satellite_page.content()
            rows = cells(satellite_page, "tbody")
            assert rows, path
            assert {row[store_column] for row in rows} <= {"S002", "All"}
            if path == "stock-on-hand/":
                screenshot(satellite_page, "satellite-stock-on-hand")
    finally:
        satellite_page.context.close()
