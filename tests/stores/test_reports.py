"""The reports: figures equal the underlying data, filters, CSV, permissions and satellite scope."""

import csv
import datetime
import io
import re
from collections import defaultdict
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from msupply.tables import Column, ReportTable, _csv_chunks
from stores import reports, services
from stores.models import Item, Name, Store, Transaction, TransactionLine
from stores.views import _batch_values
from sync.models import SyncPeer
from sync.services import peer_save, preferences_update
from tests.factories import (
    ItemFactory,
    PeerStateFactory,
    StockLineFactory,
    StoreFactory,
    SyncExchangeFactory,
    SyncPeerFactory,
    TransactionFactory,
    TransactionLineFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

# A Monday, so that week periods start on the dates the test names.
MONDAY = datetime.date(2026, 10, 5)
REPORT_URLS = {
    "index": "/reports/",
    "stock_on_hand": "/reports/stock-on-hand/",
    "expiring_stock": "/reports/expiring-stock/",
    "transactions": "/reports/transactions/",
    "sync_status": "/reports/sync-status/",
}
RANGE = f"?date_from={MONDAY}&date_to={MONDAY + datetime.timedelta(days=20)}"


# --- helpers -------------------------------------------------------------------------------


class TableParser(HTMLParser):
    """Collects the text of each cell of the page's report table, body and footer apart."""

    def __init__(self) -> None:
        super().__init__()
        self.body: list[list[str]] = []
        self.footer: list[list[str]] = []
        self.header: list[str] = []
        self._section = ""
        self._in_table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "report-table") in attrs:
            self._in_table = True
        elif self._in_table and tag in ("thead", "tbody", "tfoot"):
            self._section = tag
        elif self._in_table and tag == "tr" and self._section != "thead":
            target = self.footer if self._section == "tfoot" else self.body
            if ("class", "empty") not in attrs:
                target.append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif self._in_table and tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if self._section == "thead":
                self.header.append(text)
            elif self._section == "tfoot":
                self.footer[-1].append(text)
            elif self.body:
                self.body[-1].append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def page_table(content: bytes) -> TableParser:
    parser = TableParser()
    parser.feed(content.decode())
    return parser


def csv_rows(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode())))


def as_csv_text(shown: str) -> str:
    """What the CSV holds for a cell the page shows as `shown` (dates compared as the page
    shows them, see as_page_text)."""
    if shown == "—":
        return ""
    if shown.replace(",", "").replace(".", "").lstrip("-").isdigit():
        return shown.replace(",", "")
    return shown


def as_page_text(cell: str) -> str:
    """A CSV cell as the page shows it: an ISO date in the short date format, an ISO date-time
    in local short date-time format, a week start as "Week of"; other cells unchanged."""
    try:
        if cell[10:11] == "T":
            when = timezone.localtime(datetime.datetime.fromisoformat(cell))
            return formats.date_format(when, "SHORT_DATETIME_FORMAT")
        if len(cell) == 10 and cell[4] == "-":
            return short_date(datetime.date.fromisoformat(cell))
    except ValueError:
        pass
    return cell


def short_date(value: datetime.date) -> str:
    """A date as the report pages show it, in the active language's short format."""
    return formats.date_format(value, "SHORT_DATE_FORMAT")


def dated(**values: Any) -> datetime.date:
    return MONDAY + datetime.timedelta(**values)


def in_days(days: int) -> datetime.date:
    return timezone.localdate() + datetime.timedelta(days=days)


def line(item: Item, batch: str, expiry: datetime.date, quantity: int, **prices: str) -> Any:
    return services.LineInput(
        item=item,
        batch=batch,
        expiry=expiry,
        quantity=quantity,
        **{key: Decimal(value) for key, value in prices.items()},
    )


def finalised(store: Store, kind: str, date: datetime.date, *lines: Any, name: Name) -> None:
    record = services.transaction_create(
        store=store, kind=kind, date=date, lines=list(lines), name=name
    )
    services.transaction_finalise(record=record)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def reporter(client: Client) -> Client:
    """A client logged in as a staff user holding the reports permission only."""
    client.force_login(UserFactory(permissions=["stores.view_reports"]))
    return client


@pytest.fixture
def chain() -> dict[str, Any]:
    """Two stores' finalised transactions, made through the services, and one draft.

    Stock afterwards: S001 AMX A1 110 (expires in 30 days, last received at 0.30), A2 65,
    PAR P1 380, ORS O1 15 (expired, adjusted in, so unpriced); S002 AMX I1 50 (10 days, 0.27).
    """
    north = services.store_create(code="S001", name="Northern Warehouse")
    island = services.store_create(code="S002", name="Island Clinic")
    amox = services.item_create(code="AMX", name="Amoxicillin 250 mg", unit="capsule")
    para = services.item_create(code="PAR", name="Paracetamol <b>500</b> mg", unit="tablet")
    ors = services.item_create(code="ORS", name="Oral rehydration salts", unit="sachet")
    supplier = services.name_create(code="SUP", name="Pharma Wholesale", kind="supplier")
    customer = services.name_create(code="CUS", name="Coastal Clinic", kind="customer")
    receive, issue = Transaction.Kind.SUPPLIER_INVOICE, Transaction.Kind.CUSTOMER_INVOICE
    adjust = Transaction.Kind.INVENTORY_ADJUSTMENT
    finalised(
        north,
        receive,
        dated(days=0),
        line(amox, "A1", in_days(30), 100, cost_price="0.25"),
        line(para, "P1", in_days(400), 500, cost_price="0.10"),
        name=supplier,
    )
    finalised(
        island,
        receive,
        dated(days=1),
        line(amox, "I1", in_days(10), 80, cost_price="0.27"),
        name=supplier,
    )
    finalised(
        north,
        receive,
        dated(days=8),
        line(amox, "A1", in_days(30), 50, cost_price="0.30"),
        line(amox, "A2", in_days(200), 70, cost_price="0.20"),
        name=supplier,
    )
    finalised(
        north,
        issue,
        dated(days=9),
        line(amox, "A1", in_days(30), 40, sell_price="0.50"),
        line(para, "P1", in_days(400), 120, sell_price="0.20"),
        name=customer,
    )
    finalised(
        north,
        adjust,
        dated(days=10),
        line(ors, "O1", in_days(-3), 15),
        line(amox, "A2", in_days(200), -5, cost_price="0.20"),
        name=supplier,
    )
    finalised(
        island,
        issue,
        dated(days=15),
        line(amox, "I1", in_days(10), 30, sell_price="0.45"),
        name=customer,
    )
    services.transaction_create(
        store=north,
        kind=receive,
        date=dated(days=11),
        lines=[line(amox, "A1", in_days(30), 999, cost_price="9.00")],
        name=supplier,
    )
    return {"north": north, "island": island, "amox": amox, "para": para, "ors": ors}


def movements_on_hand() -> dict[tuple[str, str], int]:
    """Stock by (item code, store code) summed from finalised transaction lines by direction."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    lines = TransactionLine.objects.filter(
        transaction__status=Transaction.Status.FINALISED
    ).select_related("item", "transaction__store")
    for record in lines:
        direction = -1 if record.transaction.kind == Transaction.Kind.CUSTOMER_INVOICE else 1
        totals[(record.item.code, record.transaction.store.code)] += direction * record.quantity
    return {key: quantity for key, quantity in totals.items() if quantity}


def transaction_figures(
    date_from: datetime.date, date_to: datetime.date
) -> dict[tuple[str, str, str], tuple[int, int, Decimal]]:
    """(week start, store code, kind) -> (transactions, lines, value), computed record by record."""
    figures: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, 0, Decimal("0")])
    records = Transaction.objects.filter(
        status=Transaction.Status.FINALISED, date__range=(date_from, date_to)
    ).prefetch_related("lines")
    for record in records:
        week = record.date - datetime.timedelta(days=record.date.weekday())
        figure = figures[(week.isoformat(), record.store.code, record.kind)]
        figure[0] += 1
        for item_line in record.lines.all():
            figure[1] += 1
            price = (
                item_line.sell_price
                if record.kind == Transaction.Kind.CUSTOMER_INVOICE
                else item_line.cost_price
            )
            figure[2] += item_line.quantity * price
    return {key: (count, lines, value) for key, (count, lines, value) in figures.items()}


# --- access --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", REPORT_URLS.values())
def test_anonymous_user_is_sent_to_the_login_page(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={url}"


@pytest.mark.parametrize("url", REPORT_URLS.values())
def test_user_without_the_reports_permission_is_refused(client: Client, url: str) -> None:
    client.force_login(UserFactory(permissions=["stores.view_store", "stores.view_stockline"]))
    assert client.get(url).status_code == 403
    assert client.get(f"{url}?format=csv").status_code == 403


def test_reports_index_and_admin_index_link_every_report(reporter: Client) -> None:
    links = [url for name, url in REPORT_URLS.items() if name != "index"]
    index = reporter.get(REPORT_URLS["index"]).getvalue().decode()
    admin_index = reporter.get(reverse("admin:index")).getvalue().decode()
    for url in links:
        assert f'href="{url}"' in index
        assert f'href="{url}"' in admin_index
    assert 'id="reports-module"' in admin_index


def test_admin_index_has_no_reports_module_without_the_permission(client: Client) -> None:
    client.force_login(UserFactory(permissions=["stores.view_store"]))
    page = client.get(reverse("admin:index")).getvalue().decode()
    assert 'id="reports-module"' not in page
    assert REPORT_URLS["stock_on_hand"] not in page


# --- stock on hand -------------------------------------------------------------------------


def test_stock_on_hand_equals_the_sum_of_finalised_movements(
    reporter: Client, chain: dict[str, Any]
) -> None:
    rows = csv_rows(reporter.get("/reports/stock-on-hand/?format=csv").getvalue())

    header, body = rows[0], rows[1:]
    assert header == [
        "Item code",
        "Item",
        "Unit",
        "Store",
        "Store name",
        "Batches",
        "Earliest expiry",
        "Quantity",
        "Stock-out",
    ]
    stock = {(row[0], row[3]): int(row[7]) for row in body if row[3] not in ("All", "")}
    expected = movements_on_hand()
    assert stock == expected
    assert stock == {
        ("AMX", "S001"): 175,
        ("AMX", "S002"): 50,
        ("ORS", "S001"): 15,
        ("PAR", "S001"): 380,
    }
    # The draft's 999 moved nothing; AMX is in two stores, so it has a total row.
    amox_total = ["AMX", "Amoxicillin 250 mg", "capsule", "All", "2 stores", "3"]
    assert [*amox_total, str(in_days(10)), "225", ""] in body
    total = ["Total", "", "", "", "", "5", "", str(sum(expected.values())), "0 stock-outs"]
    assert body[-1] == total


def test_stock_on_hand_filters_by_store_item_and_search(
    reporter: Client, chain: dict[str, Any]
) -> None:
    def stock(query: str) -> set[tuple[str, str]]:
        body = csv_rows(reporter.get(f"/reports/stock-on-hand/?format=csv&{query}").getvalue())
        return {(row[0], row[3]) for row in body[1:-1] if row[3] != "All"}

    assert stock("store=S002") == {("AMX", "S002")}
    assert stock("item=PAR") == {("PAR", "S001")}
    assert stock("q=rehydration") == {("ORS", "S001")}
    assert stock("q=amx&store=S001") == {("AMX", "S001")}
    assert stock("q=nothing-like-this") == set()


def test_stock_on_hand_charts_the_chosen_item_by_store(
    reporter: Client, chain: dict[str, Any]
) -> None:
    page = reporter.get("/reports/stock-on-hand/?item=AMX").getvalue().decode()

    chart = page[page.index('<figure class="report-chart">') : page.index("</figure>")]
    assert "S001 Northern Warehouse" in chart
    assert "S002 Island Clinic" in chart
    assert chart.count('class="chart-bar"') == 2
    assert ">175</text>" in chart
    assert ">50</text>" in chart
    # Nothing is fetched from elsewhere: clinics are often offline.
    assert 'src="http' not in page
    assert 'href="http' not in page
    escaped = reporter.get("/reports/stock-on-hand/?item=PAR").getvalue().decode()
    assert "Paracetamol &lt;b&gt;500&lt;/b&gt; mg" in escaped
    assert "<b>500</b>" not in escaped


def test_stock_on_hand_pages_hold_whole_items(reporter: Client, chain: dict[str, Any]) -> None:
    from stores.reports import report_scope, stock_on_hand

    first = stock_on_hand(scope=report_scope(), page=1, items_per_page=1)
    second = stock_on_hand(scope=report_scope(), page=2, items_per_page=1)

    assert {row.item_code for row in first.rows} == {"AMX"}
    assert [row.store_code for row in first.rows] == ["S001", "S002"]
    assert {row.item_code for row in second.rows} == {"ORS"}
    assert first.page is not None
    assert first.page.paginator.num_pages == 3
    assert first.total_quantity == second.total_quantity == 620


# --- expiring stock ------------------------------------------------------------------------


def test_expiring_stock_lists_batches_soonest_first_valued_at_latest_receipt_cost(
    reporter: Client, chain: dict[str, Any]
) -> None:
    rows = csv_rows(reporter.get("/reports/expiring-stock/?format=csv").getvalue())

    assert rows[0] == [
        "Expiry",
        "Days left",
        "Store",
        "Item code",
        "Item",
        "Unit",
        "Batch",
        "Quantity",
        "Cost price",
        "Value",
    ]
    assert [row[6] for row in rows[1:-1]] == ["O1", "I1", "A1"]
    expired, island, north = rows[1:-1]
    assert expired[:2] == [str(in_days(-3)), "-3"]
    assert expired[7:] == ["15", "", ""]
    assert island[1:3] == ["10", "S002"]
    assert island[7:] == ["50", "0.27", "13.50"]
    # Received at 0.25, then again at 0.30: the latest receipt prices the batch.
    assert north[7:] == ["110", "0.30", "33.00"]
    assert rows[-1] == ["Total", "", "3 batches", "", "", "", "", "175", "", "46.50"]


def test_expiring_stock_looks_ahead_the_days_asked(reporter: Client, chain: dict[str, Any]) -> None:
    def batches(days: int) -> list[str]:
        download = reporter.get(f"/reports/expiring-stock/?format=csv&days={days}")
        return [row[6] for row in csv_rows(download.getvalue())[1:-1]]

    assert batches(0) == ["O1"]
    assert batches(20) == ["O1", "I1"]
    assert batches(365) == ["O1", "I1", "A1", "A2"]
    assert batches(1000) == ["O1", "I1", "A1", "A2", "P1"]
    page = reporter.get("/reports/expiring-stock/").getvalue().decode()
    assert 'name="days" value="90"' in page
    assert "latest finalised supplier invoice" in page
    assert "<strong>1 batch has no finalised supplier invoice" in page


# --- transactions --------------------------------------------------------------------------


def test_transactions_count_and_value_finalised_ones_by_week_store_and_kind(
    reporter: Client, chain: dict[str, Any]
) -> None:
    rows = csv_rows(reporter.get(f"/reports/transactions/{RANGE}&format=csv").getvalue())

    body = [row for row in rows[1:] if row[0] != "Total"]
    shown = {
        (row[0], row[1], kind): (int(row[4]), int(row[5]), Decimal(row[6]))
        for row in body
        for kind in [next(k for k in Transaction.Kind if k.label == row[3])]
    }
    expected = transaction_figures(MONDAY, dated(days=20))
    assert shown == expected
    assert shown[(str(MONDAY), "S001", "supplier_invoice")] == (1, 2, Decimal("75.00"))
    assert shown[(str(dated(days=7)), "S001", "customer_invoice")] == (1, 2, Decimal("44.00"))
    assert shown[(str(dated(days=7)), "S001", "inventory_adjustment")] == (1, 2, Decimal("-1.00"))
    grand_total = rows[-1]
    assert grand_total[:4] == ["Total", "", "", "All kinds"]
    assert grand_total[4:] == ["6", "10", "182.10"]
    by_kind = {row[3]: row[4:] for row in rows if row[0] == "Total" and row[3] != "All kinds"}
    assert by_kind[str(Transaction.Kind.CUSTOMER_INVOICE.label)] == ["2", "3", "57.50"]


def test_transactions_filter_by_date_range_store_kind_and_period(
    reporter: Client, chain: dict[str, Any]
) -> None:
    def body(query: str) -> list[list[str]]:
        rows = csv_rows(reporter.get(f"/reports/transactions/?format=csv&{query}").getvalue())
        return [row for row in rows[1:] if row[0] != "Total"]

    first_week = body(f"date_from={MONDAY}&date_to={dated(days=6)}")
    assert {row[1] for row in first_week} == {"S001", "S002"}
    assert sum(int(row[4]) for row in first_week) == 2
    assert {row[1] for row in body(RANGE[1:] + "&store=S002")} == {"S002"}
    issues = body(RANGE[1:] + "&kind=customer_invoice")
    assert {row[3] for row in issues} == {str(Transaction.Kind.CUSTOMER_INVOICE.label)}
    by_day = body(RANGE[1:] + "&period=day")
    assert sorted({row[0] for row in by_day}) == [str(dated(days=n)) for n in (0, 1, 8, 9, 10, 15)]
    by_month = body(RANGE[1:] + "&period=month")
    assert {row[0] for row in by_month} == {"2026-10-01"}
    assert sum(int(row[4]) for row in by_month) == 6


def test_transactions_refuse_a_range_too_long_for_its_period(reporter: Client) -> None:
    response = reporter.get(
        "/reports/transactions/?date_from=2025-01-01&date_to=2026-01-01&period=day"
    )
    assert response.status_code == 200
    assert "That range has more than 120 days" in response.getvalue().decode()
    assert page_table(response.getvalue()).body == []
    backwards = reporter.get("/reports/transactions/?date_from=2026-02-01&date_to=2026-01-01")
    assert "The From date is after the To date." in backwards.getvalue().decode()


def test_transactions_chart_plots_each_kind_over_every_period(
    reporter: Client, chain: dict[str, Any]
) -> None:
    page = reporter.get(f"/reports/transactions/{RANGE}").getvalue().decode()

    chart = page[page.index('<figure class="report-chart">') : page.index("</figure>")]
    assert chart.count("<polyline") == 3
    # Three weeks, each a point on each line.
    assert chart.count("<circle") == 9
    week_2, week_3 = short_date(dated(days=7)), short_date(dated(days=14))
    assert f"{Transaction.Kind.SUPPLIER_INVOICE.label}, {week_2}: 29</title>" in chart
    assert f"{Transaction.Kind.CUSTOMER_INVOICE.label}, {week_3}: 13.50</title>" in chart
    # Whole weeks: nothing is labelled partial.
    assert "partial" not in chart


# --- CSV equals the table ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/reports/stock-on-hand/",
        "/reports/stock-on-hand/?store=S001",
        "/reports/expiring-stock/?days=1000",
        f"/reports/transactions/{RANGE}",
        "/reports/sync-status/",
    ],
)
def test_csv_download_holds_the_table_with_the_same_filters(
    reporter: Client, chain: dict[str, Any], url: str
) -> None:
    PeerStateFactory(
        peer=SyncPeerFactory(sync_id=5, store_code="S002"),
        last_success_at=timezone.now(),
        records_received=12,
    )
    page = reporter.get(url)
    table = page_table(page.getvalue())
    query = url.partition("?")[2]
    link = f"?{query}&format=csv" if query else "?format=csv"
    assert f'href="{link.replace("&", "&amp;")}"' in page.getvalue().decode()

    download = reporter.get(f"{url}{'&' if query else '?'}format=csv")

    assert download["Content-Type"] == "text/csv; charset=utf-8"
    assert download["Content-Disposition"].startswith("attachment; filename=")
    rows = csv_rows(download.getvalue())
    assert rows[0] == table.header
    assert table.body
    shown = [[as_csv_text(cell) for cell in row] for row in [*table.body, *table.footer]]
    written = [[as_page_text(cell) for cell in row] for row in rows[1:]]
    if "transactions" in url:
        # The period column reads "Week of <date>" on the page.
        for row in written[: len(table.body)]:
            row[0] = _("Week of %(date)s") % {"date": row[0]}
    for shown_row, written_row in zip(shown, written, strict=True):
        if shown_row[1] == "expired":
            # Days left reads "expired" on the page; the CSV keeps the negative number.
            assert int(written_row[1]) < 0
            shown_row[1] = written_row[1]
    assert written == shown


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_quotes_text_that_starts_like_a_formula_but_keeps_negative_numbers(
    reporter: Client, start: str
) -> None:
    store = services.store_create(code="S001", name="Northern Warehouse")
    item = services.item_create(code=f"{start}X1", name=f"{start}SUM(1+1)", unit="tablet")
    StockLineFactory(store=store, item=item, batch=f"{start}B1", expiry=in_days(-5), quantity=7)

    stock = csv_rows(reporter.get("/reports/stock-on-hand/?format=csv").getvalue())
    expiring = csv_rows(reporter.get("/reports/expiring-stock/?format=csv").getvalue())

    assert stock[1][:2] == [f"'{start}X1", f"'{start}SUM(1+1)"]
    batch = expiring[1]
    assert (batch[1], batch[3], batch[6], batch[7]) == ("-5", f"'{start}X1", f"'{start}B1", "7")


# --- sync status ---------------------------------------------------------------------------


def test_sync_status_shows_each_satellite_with_its_store_and_stale_warnings(
    reporter: Client,
) -> None:
    now = timezone.now()
    for sync_id, store, days, error in [
        (2, "Island Clinic", 0.1, ""),
        (3, "Mountain Clinic", 2, "Could not reach the master."),
        (4, "Valley Post", 5, ""),
        (5, "Coastal Clinic", None, ""),
    ]:
        code = f"S{sync_id:03d}"
        StoreFactory(code=code, name=store)
        PeerStateFactory(
            peer=SyncPeerFactory(sync_id=sync_id, name=f"satellite{sync_id}", store_code=code),
            last_contact_at=now - datetime.timedelta(hours=1),
            last_success_at=None if days is None else now - datetime.timedelta(days=days),
            last_error=error,
            records_received=100 * sync_id,
        )
    # The master's record of satellite 4's requests: refused at login since its last success.
    SyncExchangeFactory(sync_id=4)

    page = reporter.get("/reports/sync-status/")
    rows = csv_rows(reporter.get("/reports/sync-status/?format=csv").getvalue())

    assert rows[0] == [
        "Sync ID",
        "Satellite",
        "Store",
        "Store name",
        "Last contact",
        "Last successful sync",
        "How long ago",
        "Status",
        "Records received",
        "Last error",
        "Failure streak",
        "Last failed",
    ]
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id["2"][1:4] == ["satellite2", "S002", "Island Clinic"]
    assert [by_id[key][7] for key in "2345"] == [
        "OK",
        "Over a day",
        "Over three days",
        "Never synced",
    ]
    assert by_id["3"][6] == "2\xa0days ago"
    assert by_id["3"][9] == "Could not reach the master."
    assert by_id["4"][9:11] == ["wrong_credentials: The master refused the password.", "1"]
    assert by_id["3"][10:12] == ["0", ""]
    assert by_id["5"][5:7] == ["", "never"]
    assert [by_id[key][8] for key in "2345"] == ["200", "300", "400", "500"]
    html = page.getvalue().decode()
    warnings = html[html.index('id="stale-warnings"') :]
    assert "satellite3 (store S003) last synced successfully 2\xa0days ago" in warnings
    assert "satellite5 (store S005) has never synced successfully" in warnings
    assert "satellite2 (store S002)" not in warnings
    assert 'class="sync-badge sync-error"' in html


def test_sync_staleness_follows_the_admin_rule() -> None:
    from sync.selectors import sync_staleness

    now = timezone.now()
    assert sync_staleness(None) == "never"
    assert sync_staleness(now - datetime.timedelta(hours=23), now=now) == "ok"
    assert sync_staleness(now - datetime.timedelta(days=1, minutes=1), now=now) == "warning"
    assert sync_staleness(now - datetime.timedelta(days=3, minutes=1), now=now) == "error"


# --- a satellite's reports -----------------------------------------------------------------


@pytest.fixture
def satellite_of_island(db: None) -> dict[str, Any]:
    """Satellite 2 hosting S002, holding (as it never should) a row of S001's data too."""
    north = StoreFactory(code="S001", name="Northern Warehouse")
    island = StoreFactory(code="S002", name="Island Clinic")
    for store, batch in [(north, "NORTH-BATCH"), (island, "ISLAND-BATCH")]:
        record = TransactionFactory(
            store=store, status=Transaction.Status.FINALISED, date=dated(days=2)
        )
        TransactionLineFactory(transaction=record, batch=batch, expiry=in_days(20), quantity=7)
        StockLineFactory(store=store, batch=batch, expiry=in_days(20), quantity=7)
    preferences_update(sync_id=2)
    master = peer_save(
        peer=SyncPeer(sync_id=1, name="master", store_code="S001", url="http://127.0.0.1:8000/")
    )
    PeerStateFactory(peer=master, hosted_store_id=island.pk, last_success_at=timezone.now())
    return {"north": north, "island": island}


@pytest.mark.parametrize(
    "url",
    [
        "/reports/",
        "/reports/stock-on-hand/",
        "/reports/expiring-stock/",
        f"/reports/transactions/{RANGE}",
        "/reports/sync-status/",
    ],
)
def test_satellite_reports_show_only_its_own_store(
    reporter: Client, satellite_of_island: dict[str, Any], url: str
) -> None:
    page = reporter.get(url).getvalue().decode()
    query = url.partition("?")[2]
    csv_url = f"{url}{'&' if query else '?'}format=csv"
    downloads = [] if url == "/reports/" else [reporter.get(csv_url).getvalue().decode()]

    assert "Store S002 — this satellite&#x27;s own store only" in page
    for content in [page, *downloads]:
        assert "S001" not in content
        assert "Northern Warehouse" not in content
        assert "NORTH-BATCH" not in content
    for download in downloads:
        assert "S002" in download
    if "expiring" in url:
        assert "ISLAND-BATCH" in downloads[0]


def test_satellite_refuses_another_stores_filter(
    reporter: Client, satellite_of_island: dict[str, Any]
) -> None:
    page = reporter.get("/reports/stock-on-hand/?store=S001")

    assert "Select a valid choice" in page.getvalue().decode()
    assert "NORTH-BATCH" not in page.getvalue().decode()
    assert page_table(page.getvalue()).body == []


def test_satellite_before_its_first_sync_shows_no_data(reporter: Client, satellite: int) -> None:
    StockLineFactory(batch="SOMEONE-ELSES")

    page = reporter.get("/reports/stock-on-hand/").getvalue().decode()

    assert "this satellite has not synced with the master" in page
    assert "SOMEONE-ELSES" not in page


def test_sync_with_admin_shows_the_same_staleness_badges(client: Client) -> None:
    client.force_login(UserFactory(permissions=["sync.view_syncpeer"]))
    now = timezone.now()
    for sync_id, days in [(2, 2), (3, 4)]:
        PeerStateFactory(
            peer=SyncPeerFactory(sync_id=sync_id, store_code=StoreFactory().code),
            last_success_at=now - datetime.timedelta(days=days),
        )
    SyncPeerFactory(sync_id=4, store_code=StoreFactory().code)

    page = client.get(reverse("admin:sync_syncpeer_changelist")).getvalue().decode()

    assert 'class="sync-badge sync-warning" title="More than a day ago"' in page
    assert 'class="sync-badge sync-error" title="More than three days ago"' in page
    assert '<span class="sync-badge sync-error">never</span>' in page
    assert "(2 days ago)" in page
    assert "(4 days ago)" in page


# --- stock-outs ----------------------------------------------------------------------------


@pytest.fixture
def sold_out(chain: dict[str, Any]) -> dict[str, Any]:
    """The chain, then S001 issues all its PAR and adjusts out all its ORS, S002 issues all its
    AMX: S001 is out of PAR and ORS, S002 of AMX; S002 never stocked PAR or ORS."""
    north, island = chain["north"], chain["island"]
    customer = Name.objects.get(code="CUS")
    finalised(
        north,
        Transaction.Kind.CUSTOMER_INVOICE,
        dated(days=16),
        line(chain["para"], "P1", in_days(400), 380, sell_price="0.20"),
        name=customer,
    )
    finalised(
        north,
        Transaction.Kind.INVENTORY_ADJUSTMENT,
        dated(days=16),
        line(chain["ors"], "O1", in_days(-3), -15),
        name=customer,
    )
    finalised(
        island,
        Transaction.Kind.CUSTOMER_INVOICE,
        dated(days=17),
        line(chain["amox"], "I1", in_days(10), 50, sell_price="0.45"),
        name=customer,
    )
    return chain


def test_stock_on_hand_shows_stock_outs_with_quantity_zero(
    reporter: Client, sold_out: dict[str, Any]
) -> None:
    rows = csv_rows(reporter.get("/reports/stock-on-hand/?format=csv").getvalue())

    body = {(row[0], row[3]): row for row in rows[1:-1] if row[3] != "All"}
    # Sold out: shown with 0, no batch on hand, no earliest expiry, marked as a stock-out.
    for key in [("PAR", "S001"), ("ORS", "S001"), ("AMX", "S002")]:
        assert body[key][5:] == ["0", "", "0", "Stock-out"]
    # Never stocked there: not a stock-out, not shown.
    assert ("PAR", "S002") not in body
    assert ("ORS", "S002") not in body
    # Still held: no mark.
    assert body[("AMX", "S001")][7:] == ["175", ""]
    # The stock-outs equal what the movements leave at zero among the pairs ever stocked.
    stocked = {
        (record.item.code, record.transaction.store.code)
        for record in TransactionLine.objects.filter(
            transaction__status=Transaction.Status.FINALISED
        ).select_related("item", "transaction__store")
    }
    on_hand = movements_on_hand()
    assert {key for key, row in body.items() if row[8]} == stocked - set(on_hand)
    assert rows[-1][-1] == "3 stock-outs"

    page = reporter.get("/reports/stock-on-hand/").getvalue().decode()
    assert '<tr class="stock-out">' in page
    assert '<td class="stock-out-badge">Stock-out</td>' in page


def test_only_stock_outs_filter_is_kept_in_the_url_and_the_csv(
    reporter: Client, sold_out: dict[str, Any]
) -> None:
    page = reporter.get("/reports/stock-on-hand/?stock_outs=on")
    html = page.getvalue().decode()
    table = page_table(page.getvalue())

    assert re.search(r'<input type="checkbox" name="stock_outs"[^>]* checked>', html)
    assert {(row[0], row[3]) for row in table.body if row[3] != "All"} == {
        ("ORS", "S001"),
        ("PAR", "S001"),
        ("AMX", "S002"),
    }
    assert 'href="?stock_outs=on&amp;format=csv"' in html
    rows = csv_rows(reporter.get("/reports/stock-on-hand/?stock_outs=on&format=csv").getvalue())
    assert [(row[0], row[3], row[7], row[8]) for row in rows[1:-1] if row[3] != "All"] == [
        ("AMX", "S002", "0", "Stock-out"),
        ("ORS", "S001", "0", "Stock-out"),
        ("PAR", "S001", "0", "Stock-out"),
    ]
    # The filters combine: one store's stock-outs only.
    one_store = csv_rows(
        reporter.get("/reports/stock-on-hand/?stock_outs=on&store=S002&format=csv").getvalue()
    )
    assert [(row[0], row[3]) for row in one_store[1:-1]] == [("AMX", "S002")]


def test_stock_outs_are_counted_per_store(reporter: Client, sold_out: dict[str, Any]) -> None:
    stock = reports.stock_on_hand(scope=reports.ReportScope(is_master=True), page=None)

    assert stock.stock_outs_by_store == [
        reports.StoreStockOuts(store_code="S001", store_name="Northern Warehouse", stock_outs=2),
        reports.StoreStockOuts(store_code="S002", store_name="Island Clinic", stock_outs=1),
    ]
    assert stock.total_stock_outs == 3
    # The count equals the rows marked on the page, store by store.
    marked: dict[str, int] = defaultdict(int)
    for row in stock.rows:
        marked[row.store_code] += row.stock_out
    assert dict(marked) == {"S001": 2, "S002": 1}

    page = reporter.get("/reports/stock-on-hand/").getvalue().decode()
    counts = page[page.index('id="stock-outs-by-store"') : page.index("</table>")]
    assert "3 stock-outs under these filters" in counts
    assert '<td>S001 Northern Warehouse</td><td class="num">2</td>' in counts
    assert '<td>S002 Island Clinic</td><td class="num">1</td>' in counts


def test_no_stock_outs_means_no_marked_rows(reporter: Client, chain: dict[str, Any]) -> None:
    page = reporter.get("/reports/stock-on-hand/?stock_outs=on")

    assert page_table(page.getvalue()).body == []
    assert "0 stock-outs under these filters" in page.getvalue().decode()


# --- expiring chart ------------------------------------------------------------------------


def test_expiring_chart_values_per_month_by_store_equal_the_batches(
    reporter: Client, chain: dict[str, Any]
) -> None:
    # A second batch of AMX in S001's month of A2 adds to the same point.
    finalised(
        chain["north"],
        Transaction.Kind.SUPPLIER_INVOICE,
        dated(days=12),
        line(chain["amox"], "A3", in_days(200), 10, cost_price="1.50"),
        name=Name.objects.get(code="SUP"),
    )
    today = timezone.localdate()
    expiring = reports.expiring_stock(
        scope=reports.ReportScope(is_master=True), within_days=1000, today=today, page=None
    )
    batches = list(expiring.batches)
    expected: dict[tuple[datetime.date, str], Decimal] = defaultdict(Decimal)
    for batch in batches:
        expected[(batch.expiry.replace(day=1), batch.store_code)] += batch.value or Decimal(0)
    by_month = {(month.month, month.store_code): month.value for month in expiring.by_month}
    assert by_month == expected
    a2_month = in_days(200).replace(day=1)
    # A2: 65 x 0.20 and A3: 10 x 1.50.
    assert by_month[(a2_month, "S001")] == Decimal("28.00")
    assert expiring.total_value == sum(expected.values())
    assert sum(month.batches for month in expiring.by_month) == len(batches) == 6

    page = reporter.get("/reports/expiring-stock/?days=1000").getvalue().decode()
    chart = page[page.index('<figure class="report-chart">') : page.index("</figure>")]
    assert "Value at cost expiring per month, by store" in chart
    month = formats.date_format(a2_month, "YEAR_MONTH_FORMAT")
    assert f"<title>S001 Northern Warehouse, {month}: 28</title>" in chart
    assert chart.count("<polyline") + chart.count("chart-partial") >= 2
    # The look-ahead ends inside its last month, which says so (unless it ends on a month's end).
    until = today + datetime.timedelta(days=1000)
    last = until.replace(day=1)
    days = ((last + datetime.timedelta(days=32)).replace(day=1) - last).days
    label = formats.date_format(last, "YEAR_MONTH_FORMAT")
    if until.day < days:
        assert f"{label} (partial, {until.day} of {days} days)" in chart
    else:
        assert "partial" not in chart


# --- partial periods -----------------------------------------------------------------------


def test_a_range_ending_mid_week_labels_its_last_week_partial(
    reporter: Client, chain: dict[str, Any]
) -> None:
    # Monday of week 1 to Wednesday of week 3: 3 of week 3's 7 days.
    url = f"/reports/transactions/?date_from={MONDAY}&date_to={dated(days=16)}&period=week"
    page = reporter.get(url)
    table = page_table(page.getvalue())
    html = page.getvalue().decode()

    partial = f"Week of {short_date(dated(days=14))} (partial, 3 of 7 days)"
    periods = [row[0] for row in table.body]
    assert partial in periods
    assert f"Week of {short_date(MONDAY)}" in periods
    assert f"Week of {short_date(dated(days=7))}" in periods
    assert [period for period in periods if "partial" in period] == [partial] * periods.count(
        partial
    )
    chart = html[html.index('<figure class="report-chart">') : html.index("</figure>")]
    assert f'<li class="chart-partial-note">{partial}</li>' in chart
    # Drawn apart: a hollow point per kind and a dashed line into it.
    assert chart.count('class="chart-point series-0 chart-partial"') == 1
    assert 'stroke-dasharray="5 4"' in chart
    assert f"{short_date(dated(days=14))} (partial)</text>" in chart


def test_a_range_starting_mid_week_labels_its_first_week_partial(
    reporter: Client, chain: dict[str, Any]
) -> None:
    # Wednesday of week 1 to Sunday of week 3: 5 of week 1's days; weeks 2 and 3 whole.
    url = f"/reports/transactions/?date_from={dated(days=2)}&date_to={dated(days=20)}"
    html = reporter.get(url).getvalue().decode()

    chart = html[html.index('<figure class="report-chart">') : html.index("</figure>")]
    notes = re.findall(r'<li class="chart-partial-note">([^<]*)</li>', chart)
    assert notes == [f"Week of {short_date(MONDAY)} (partial, 5 of 7 days)"]
    periods = [row[0] for row in page_table(html.encode()).body]
    assert f"Week of {short_date(dated(days=14))}" in periods
    assert not [period for period in periods if "partial" in period]


def test_whole_weeks_and_months_are_not_labelled_partial(
    reporter: Client, chain: dict[str, Any]
) -> None:
    whole_weeks = reporter.get(f"/reports/transactions/{RANGE}&period=week").getvalue().decode()
    assert "partial" not in whole_weeks.split('id="report-table"')[1]
    assert "(partial" not in whole_weeks

    october = "/reports/transactions/?date_from=2026-10-01&date_to=2026-10-31&period=month"
    assert "(partial" not in reporter.get(october).getvalue().decode()
    part = "/reports/transactions/?date_from=2026-10-01&date_to=2026-10-20&period=month"
    month = formats.date_format(datetime.date(2026, 10, 1), "YEAR_MONTH_FORMAT")
    assert f"{month} (partial, 20 of 31 days)" in reporter.get(part).getvalue().decode()


def test_period_span_counts_the_days_of_a_period_in_the_range() -> None:
    span = reports.period_span(
        dated(days=14), reports.Period.WEEK, date_from=MONDAY, date_to=dated(days=16)
    )
    assert (span.days, span.covered, span.partial) == (7, 3, True)
    whole = reports.period_span(
        MONDAY, reports.Period.WEEK, date_from=MONDAY, date_to=dated(days=6)
    )
    assert (whole.days, whole.covered, whole.partial) == (7, 7, False)
    february = reports.period_span(
        datetime.date(2028, 2, 1),
        reports.Period.MONTH,
        date_from=datetime.date(2028, 2, 10),
        date_to=datetime.date(2028, 3, 31),
    )
    assert (february.days, february.covered) == (29, 20)


# --- expiring stock: the latest receipt's cost, and the CSV PostgreSQL writes ---------------


def test_expiring_stock_values_each_batch_at_its_stores_latest_finalised_receipt(
    reporter: Client,
) -> None:
    north, island, coast = (
        StoreFactory(code=code) for code in ("S001", "S002", "S003")
    )  # fmt: skip
    item = ItemFactory(code="AMX")
    expiry = in_days(20)

    def received(store: Store, number: int, date: datetime.date, cost: str, **values: Any) -> None:
        record = TransactionFactory(
            store=store,
            number=number,
            date=date,
            status=values.pop("status", Transaction.Status.FINALISED),
            kind=values.pop("kind", Transaction.Kind.SUPPLIER_INVOICE),
        )
        TransactionLineFactory(
            transaction=record, item=item, batch="B1", expiry=expiry, cost_price=Decimal(cost)
        )

    # North: the latest date wins over a higher number dated earlier; a draft, an issue and
    # another store's later receipt of the same batch do not count.
    received(north, 5, dated(days=20), "0.40")
    received(north, 9, dated(days=10), "9.90")
    received(north, 3, dated(days=1), "0.10")
    received(north, 11, dated(days=30), "7.00", status=Transaction.Status.DRAFT)
    received(north, 12, dated(days=28), "3.00", kind=Transaction.Kind.CUSTOMER_INVOICE)
    received(island, 1, dated(days=25), "10.00")
    # Coast: two receipts on one day, the higher number (the later one) wins.
    received(coast, 1, dated(days=15), "0.50")
    received(coast, 2, dated(days=15), "0.45")
    for store in (north, island, coast):
        StockLineFactory(store=store, item=item, batch="B1", expiry=expiry, quantity=10)

    rows = csv_rows(reporter.get("/reports/expiring-stock/?format=csv").getvalue())
    expiring = reports.expiring_stock(
        scope=reports.ReportScope(is_master=True), today=timezone.localdate(), page=1
    )

    assert [(row[2], row[8], row[9]) for row in rows[1:-1]] == [
        ("S001", "0.40", "4.00"),
        ("S002", "10.00", "100.00"),
        ("S003", "0.45", "4.50"),
    ]
    assert [(batch.store_code, batch.cost_price) for batch in expiring.batches] == [
        ("S001", Decimal("0.40")),
        ("S002", Decimal("10.00")),
        ("S003", Decimal("0.45")),
    ]
    assert expiring.total_value == Decimal("108.50")


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="PostgreSQL writes the expiring stock CSV lines itself; SQLite has the csv module only",
)
def test_expiring_stock_csv_postgresql_writes_equals_the_python_writer(reporter: Client) -> None:
    store = StoreFactory(code="S001")
    # Text the csv module quotes or escapes, formula starts, an empty unit, accents, an
    # expired and an unpriced batch, and a price over ten.
    names = ['Amoxicillin, "250" mg', "Line\nbreak", "=SUM(1)", "Crème\r\nsolaire", "Plain"]
    for number, name in enumerate(names):
        item = ItemFactory(code=f"-I{number}" if number % 2 else f"I{number}", name=name)
        item.unit = "" if number == 1 else "tablet"
        item.save()
        expiry = in_days(number * 7 - 10)
        StockLineFactory(store=store, item=item, batch=f"@B,{number}", expiry=expiry, quantity=3)
        if number != 4:
            TransactionLineFactory(
                transaction=TransactionFactory(store=store, status=Transaction.Status.FINALISED),
                item=item,
                batch=f"@B,{number}",
                expiry=expiry,
                cost_price=Decimal("12.35") + number,
            )
    today = timezone.localdate()

    def expiring() -> reports.ExpiringStock:
        return reports.expiring_stock(
            scope=reports.ReportScope(is_master=True), today=today, page=None
        )

    columns = [Column("h", kind) for kind, _cell in reports.EXPIRING_CSV]
    by_python = ReportTable(columns)
    by_python.stream(_batch_values(batch) for batch in expiring().batches)
    # Read before the next report: a connection holds one report's table at a time.
    python = "".join(map(str, _csv_chunks(by_python))).encode()
    by_database = ReportTable(columns)
    written = expiring().csv_rows
    assert written is not None
    by_database.stream_written(written)

    database = "".join(_csv_chunks(by_database)).encode()
    assert database == python
    body = csv_rows(python)[1:]
    assert len(body) == 5
    assert body[1][4:6] == ["Line\nbreak", ""]
    assert body[4][8:] == ["", ""]
    # The view's download holds the same rows, between its heading and its totals.
    download = reporter.get("/reports/expiring-stock/?format=csv").getvalue()
    assert download.split(b"\r\n", 1)[1].startswith(python.split(b"\r\n", 1)[1])
