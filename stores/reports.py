"""Read paths of the reports: stock on hand, expiring stock, transaction totals and goods in
transit, in a scope."""

import datetime
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db import connection, models, transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Concat, LPad, TruncDay, TruncMonth, TruncWeek
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from msupply import identity
from msupply.tables import CSV_CHUNK_ROWS, ColumnKind, csv_line_sql

from .models import Item, StockLine, Store, Transaction, TransactionLine
from .transfers import outbound_transfers

MONEY = models.DecimalField(max_digits=20, decimal_places=2)
CENT = Decimal("0.01")


def _money(value: Decimal | None) -> Decimal:
    """An amount to the cent; SQLite sums decimals as floats, so its sums need rounding back."""
    return (value or Decimal(0)).quantize(CENT)


# Every selector takes a ReportScope: the master reports on every store it holds, a satellite on
# its own store only. Each runs a fixed handful of aggregate queries, whatever the data size.
@dataclass(frozen=True)
class ReportScope:
    """The stores a report may show: all of them on the master, the hosted one on a satellite."""

    is_master: bool
    # On a satellite, the store it hosts; None on the master, and on a satellite before its first
    # sync (it then shows nothing rather than guess).
    store: Store | None = None

    def stores(self) -> QuerySet[Store]:
        """The stores in scope, in code order."""
        if self.is_master:
            return Store.objects.order_by("code")
        if self.store is None:
            return Store.objects.none()
        return Store.objects.filter(pk=self.store.pk)

    @property
    def heading(self) -> str:
        """What the page's heading says about the data it covers."""
        if self.is_master:
            return gettext("All stores — master server")
        if self.store is None:
            return gettext("No store yet — this satellite has not synced with the master")
        return gettext("Store %(code)s — this satellite's own store only") % {
            "code": self.store.code
        }


def report_scope() -> ReportScope:
    """The scope of this site's reports, from the site's role (msupply.identity)."""
    if identity.site_is_master():
        return ReportScope(is_master=True)
    store_id = identity.hosted_store_id()
    store = Store.objects.filter(pk=store_id).first() if store_id else None
    return ReportScope(is_master=False, store=store)


def _scoped(queryset: QuerySet, *, scope: ReportScope, store_path: str = "store") -> QuerySet:
    """Restrict `queryset` to the stores in `scope`."""
    if scope.is_master:
        return queryset
    if scope.store is None:
        return queryset.none()
    return queryset.filter(**{f"{store_path}_id": scope.store.pk})


def _item_filter(*, item: Item | None, search: str, item_path: str = "item__") -> Q:
    """Rows of `item`, and of items whose code or name contains `search`; the prefix leads there."""
    condition = Q()
    if item is not None:
        condition &= Q(**{f"{item_path}pk": item.pk})
    if search:
        condition &= Q(**{f"{item_path}code__icontains": search}) | Q(
            **{f"{item_path}name__icontains": search}
        )
    return condition


def items_matching(*, search: str = "", limit: int) -> list[Item]:
    """Up to `limit` items in code order whose code or name contains `search`."""
    items = Item.objects.filter(_item_filter(item=None, search=search, item_path=""))
    return list(items.order_by("code")[:limit])


# --- Stock on hand -------------------------------------------------------------------------


class StockRow(NamedTuple):
    """The stock of one item in one store: its batches, earliest expiry and quantity."""

    # A tuple, not a dataclass: a master's CSV builds one per item and store (30,000 and more).

    item_code: str
    item_name: str
    unit: str
    store_code: str
    store_name: str
    batches: int
    # None on a stock-out: no batch is on hand.
    earliest_expiry: datetime.date | None
    quantity: int

    @property
    def stock_out(self) -> bool:
        """The store has (or had) a stock line of the item and none holds any."""
        return self.quantity == 0


@dataclass(frozen=True)
class StoreStockOuts:
    """How many items a store is out of, among those it has stocked."""

    store_code: str
    store_name: str
    stock_outs: int


@dataclass(frozen=True)
class StockOnHand:
    """Stock of each item in each store (one page of items, or all) and the total of every row."""

    rows: list[StockRow]
    total_quantity: int
    total_batches: int
    total_stock_outs: int = 0
    stock_outs_by_store: list[StoreStockOuts] = field(default_factory=list)
    page: Page | None = None


ON_HAND = Q(quantity__gt=0)


def stock_on_hand(
    *,
    scope: ReportScope,
    store: Store | None = None,
    item: Item | None = None,
    search: str = "",
    only_stock_outs: bool = False,
    page: int | None = 1,
    items_per_page: int = 25,
) -> StockOnHand:
    """Quantity on hand of each item in each store, from its stock lines, stock-outs (0) too;
    `page=None` for all."""
    # Finalising a transaction moves its lines into the stock lines, so this equals the sum of
    # finalised movements. A stock line stays at 0 when its batch runs out, so an item a store
    # stocked and holds none of is a group whose sum is 0: a stock-out. Pages hold whole items,
    # so each item's total is complete on its page.
    lines = _scoped(StockLine.objects.all(), scope=scope)
    if store is not None:
        lines = lines.filter(store=store)
    lines = lines.filter(_item_filter(item=item, search=search))
    if only_stock_outs:
        # The lines of items a store holds no batch of; the unique batch index finds them.
        lines = lines.exclude(
            Exists(
                StockLine.objects.filter(
                    ON_HAND, item_id=OuterRef("item_id"), store_id=OuterRef("store_id")
                )
            )
        )
    # One grouped query finds every (store, item) whose lines sum to 0: the stock-outs, few
    # beside the stocked pairs; the page counts them by store.
    outs = Counter(
        lines.order_by()
        .values("store_id", "item_id")
        .annotate(on_hand=Sum("quantity"))
        .filter(on_hand=0)
        .values_list("store_id", flat=True)
    )
    stores = {record.pk: record for record in scope.stores()}
    totals = lines.aggregate(on_hand=Sum("quantity"), batches=Count("id", filter=ON_HAND))
    current: Page | None = None
    if page is not None:
        items = Item.objects.filter(pk__in=lines.values("item_id")).order_by("code")
        current = Paginator(items.values_list("pk", flat=True), items_per_page).get_page(page)
        lines = lines.filter(item_id__in=list(current.object_list))
    # Grouped by the two keys alone (grouping by five text columns took twice as long at
    # 63 stores); names and the order come from the few stores and items after.
    grouped = (
        lines.order_by()
        .values("item_id", "store_id")
        .annotate(
            on_hand=Sum("quantity"),
            batches=Count("id", filter=ON_HAND),
            earliest=Min("expiry", filter=ON_HAND),
        )
    )
    groups = list(grouped.values_list("item_id", "store_id", "on_hand", "batches", "earliest"))
    items_of = {
        pk: (code, name, unit)
        for pk, code, name, unit in Item.objects.filter(
            pk__in={group[0] for group in groups}
        ).values_list("pk", "code", "name", "unit")
    }
    store_of = {pk: (record.code, record.name) for pk, record in stores.items()}
    rows = [
        StockRow(*items_of[item_id], *store_of[store_id], batches, earliest, on_hand)
        for item_id, store_id, on_hand, batches, earliest in groups
    ]
    rows.sort(key=lambda row: (row.item_code, row.store_code))
    return StockOnHand(
        rows=rows,
        total_quantity=totals["on_hand"] or 0,
        total_batches=totals["batches"],
        total_stock_outs=sum(outs.values()),
        stock_outs_by_store=[
            StoreStockOuts(store_code=record.code, store_name=record.name, stock_outs=outs[pk])
            for pk, record in stores.items()
            if outs[pk]
        ],
        page=current,
    )


# --- Expiring stock ------------------------------------------------------------------------


class ExpiringBatch(NamedTuple):
    """One batch on hand in one store that expires soon, with its value at cost."""

    # A tuple, not a dataclass: a year's CSV builds 50,000 of them.

    store_code: str
    store_name: str
    item_code: str
    item_name: str
    unit: str
    batch: str
    expiry: datetime.date
    days_left: int
    quantity: int
    # None when no finalised supplier invoice of this store received the batch.
    cost_price: Decimal | None

    @property
    def value(self) -> Decimal | None:
        return None if self.cost_price is None else self.quantity * self.cost_price


@dataclass(frozen=True)
class MonthExpiring:
    """What expires in one store in one month: batches, quantity and value at cost."""

    month: datetime.date
    store_code: str
    store_name: str
    batches: int
    quantity: int
    value: Decimal
    unpriced_batches: int


@dataclass(frozen=True)
class ExpiringStock:
    """Batches expiring on or before `until`, soonest first, with totals over all of them."""

    until: datetime.date
    batches: list[ExpiringBatch]
    total_batches: int
    total_quantity: int
    total_value: Decimal
    unpriced_batches: int
    page: Page | None = None
    # Every batch (not just the page's) by expiry month and store, in that order.
    by_month: list[MonthExpiring] = field(default_factory=list)
    # With page=None on PostgreSQL: every batch as CSV text the database writes (EXPIRING_CSV's
    # cells), read instead of `batches`, never both; None elsewhere.
    csv_rows: Iterator[str] | None = None


def _latest_receipts(
    *,
    scope: ReportScope,
    expiring: tuple[datetime.date, datetime.date],
    store: Store | None,
    item_filter: Q,
) -> QuerySet:
    """Each batch expiring within `expiring` with its store's latest finalised receipt of it, as
    one text: the receipt's date, its number (10 digits) and then the cost price."""
    # Stock lines carry no price, so a batch is valued at what its store last paid for it. A
    # correlated subquery per stock line took 78 s on the benchmark (a batch number recurs in
    # every store that received it) and ranking the receipts with a window sorted all ~330,000
    # of them; the greatest (date, number, cost) text per batch is one hashed grouping, about
    # twice as fast, and the same on PostgreSQL and SQLite.
    receipts = _scoped(
        TransactionLine.objects.filter(
            item_filter,
            transaction__kind=Transaction.Kind.SUPPLIER_INVOICE,
            transaction__status=Transaction.Status.FINALISED,
            expiry__range=expiring,
        ),
        scope=scope,
        store_path="transaction__store",
    )
    if store is not None:
        receipts = receipts.filter(transaction__store=store)
    text = models.CharField()
    # order_by() drops the lines' default ordering, which would join stores and items to sort.
    return (
        receipts.order_by()
        .values(
            c_store=F("transaction__store_id"),
            c_item=F("item_id"),
            c_batch=F("batch"),
            c_expiry=F("expiry"),
        )
        .annotate(
            c_latest=Max(
                Concat(
                    Cast("transaction__date", text),
                    LPad(Cast("transaction__number", text), RECEIPT_NUMBER_DIGITS, Value("0")),
                    Cast("cost_price", text),
                    output_field=text,
                )
            )
        )
    )


# The expiring stock CSV's cells, in the order of its columns (stores.views): how each is written
# and its SQL over _ExpiringQuery's table, the %s being today.
EXPIRING_CSV: list[tuple[ColumnKind, str]] = [
    ("date", "s.s_expiry"),
    ("number", "(s.s_expiry - %s::date)"),
    ("text", "s.s_store_code"),
    ("text", "s.s_item_code"),
    ("text", "s.s_item_name"),
    ("text", "s.s_unit"),
    ("text", "s.s_batch"),
    ("number", "s.s_quantity"),
    ("money", "s.c_cost"),
    ("money", "(s.s_quantity * s.c_cost)"),
]

# Transaction numbers are positive integers below 10^10 (PositiveIntegerField).
RECEIPT_NUMBER_DIGITS = 10
# Where the cost starts in the latest receipt's text: after the ISO date and the number.
RECEIPT_COST_AT = 10 + RECEIPT_NUMBER_DIGITS + 1


def _as_date(value: Any) -> datetime.date:
    """A date from a raw cursor: SQLite hands back text, PostgreSQL a date or a timestamp."""
    if type(value) is datetime.date:
        return value
    if isinstance(value, datetime.datetime):
        return value.date()
    return datetime.date.fromisoformat(str(value)[:10])


def _as_money(value: Any) -> Decimal | None:
    """An amount from a raw cursor to the cent (SQLite hands back floats), None left as None."""
    if value is None:
        return None
    return (value if isinstance(value, Decimal) else Decimal(str(value))).quantize(CENT)


class _ExpiringQuery:
    """Stock lines joined to their batch's latest receipt cost, in SQL: totals, pages, all."""

    # The ORM cannot join a stock line to a ranked subquery, so both sides are compiled by the
    # ORM (filters, scope and backend functions included) and joined here; the valuation, the
    # totals and the monthly sums run in the database, never row by row in Python.

    def __init__(self, lines: QuerySet, ranks: QuerySet) -> None:
        stock = lines.order_by().values(
            s_store=F("store_id"),
            s_item=F("item_id"),
            s_batch=F("batch"),
            s_expiry=F("expiry"),
            s_quantity=F("quantity"),
            s_month=TruncMonth("expiry"),
            s_store_code=F("store__code"),
            s_store_name=F("store__name"),
            s_item_code=F("item__code"),
            s_item_name=F("item__name"),
            s_unit=F("item__unit"),
        )
        stock_sql, stock_params = stock.query.sql_with_params()
        ranks_sql, ranks_params = ranks.query.sql_with_params()
        # The ranking is the costly part (it sorts every receipt in the expiry range), so it runs
        # once into a table of this connection's own, which the totals, the chart and the page
        # or the CSV then read; close() drops it.
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # Sorting ~330,000 receipts spilled to disk with the default 4 MB.
                cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute(f"DROP TABLE IF EXISTS {self.TABLE}")
            # Both halves are the ORM's compiled SQL, with every value left as a parameter.
            joined = (
                f"CREATE TEMPORARY TABLE {self.TABLE} AS SELECT s.*, "  # noqa: S608
                f"CAST(SUBSTR(c.c_latest, {RECEIPT_COST_AT}) AS DECIMAL(20, 2)) AS c_cost "
                f"FROM ({stock_sql}) s LEFT JOIN ({ranks_sql}) c "
                "ON c.c_store = s.s_store AND c.c_item = s.s_item AND c.c_batch = s.s_batch "
                "AND c.c_expiry = s.s_expiry"
            )
            cursor.execute(joined, [*stock_params, *ranks_params])
        self.source = f"FROM {self.TABLE} s"

    TABLE = "report_expiring_batches"

    def close(self) -> None:
        """Drop this report's table; the next report on this connection makes its own."""
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.TABLE}")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = connection.cursor()
        cursor.execute(sql, params)
        return cursor

    def by_month(self) -> list[MonthExpiring]:
        """Batches, quantity, value and unpriced batches by expiry month and store."""
        sql = (
            "SELECT s.s_month, s.s_store_code, s.s_store_name, COUNT(*), SUM(s.s_quantity), "
            "SUM(s.s_quantity * s.c_cost), SUM(CASE WHEN s.c_cost IS NULL THEN 1 ELSE 0 END) "
            f"{self.source} GROUP BY s.s_month, s.s_store_code, s.s_store_name "
            "ORDER BY s.s_month, s.s_store_code"
        )
        with self._execute(sql) as cursor:
            return [
                MonthExpiring(
                    month=_as_date(month),
                    store_code=code,
                    store_name=name,
                    batches=batches,
                    quantity=int(quantity),
                    value=_as_money(value) or Decimal("0.00"),
                    unpriced_batches=int(unpriced),
                )
                for month, code, name, batches, quantity, value, unpriced in cursor.fetchall()
            ]

    ROWS_CELLS = (
        "SELECT s.s_store_code, s.s_store_name, s.s_item_code, s.s_item_name, s.s_unit, "
        "s.s_batch, s.s_expiry, s.s_quantity, s.c_cost "
    )
    ROWS = ROWS_CELLS + "{source} ORDER BY s.s_expiry, s.s_store_code, s.s_item_code, s.s_batch"

    def rows(
        self, *, today: datetime.date, limit: int | None = None, offset: int = 0, last: bool = False
    ) -> Any:
        """The batches soonest first, `limit` of them from `offset`, or all, as they are read;
        `last` drops the table once they are all read (or the reader stops)."""
        sql, params = self.ROWS.format(source=self.source), []
        if limit is not None:
            sql += " LIMIT %s OFFSET %s"
            params = [limit, offset]
        try:
            yield from self._read(sql, params, today=today)
        finally:
            if last:
                self.close()

    def csv(self, *, today: datetime.date) -> Iterator[str]:
        """Every batch soonest first as CSV lines of EXPIRING_CSV's cells that PostgreSQL writes,
        CSV_CHUNK_ROWS to a chunk; the table is dropped once all are read (or the reader stops)."""
        # Whole lines, not COPY ... CSV: psycopg hands COPY's rows over one call each, which
        # took longer than the csv module; a few thousand lines a fetch make no call per row.
        select = self.ROWS.format(source=self.source).replace(
            self.ROWS_CELLS, f"SELECT {csv_line_sql(EXPIRING_CSV)} ", 1
        )
        try:
            with self._execute(select, [today]) as cursor:
                while chunk := cursor.fetchmany(CSV_CHUNK_ROWS):
                    yield "".join([line for (line,) in chunk])
        finally:
            self.close()

    def _read(self, sql: str, params: list[Any], *, today: datetime.date) -> Any:
        with self._execute(sql, params) as cursor:
            while chunk := cursor.fetchmany(2000):
                for row in chunk:
                    store_code, store_name, code, name, unit, batch, expiry, quantity, cost = row
                    expiry = _as_date(expiry)
                    yield ExpiringBatch(
                        store_code=store_code,
                        store_name=store_name,
                        item_code=code,
                        item_name=name,
                        unit=unit,
                        batch=batch,
                        expiry=expiry,
                        days_left=(expiry - today).days,
                        quantity=quantity,
                        cost_price=_as_money(cost),
                    )


class _Rows:
    """A sequence of `count` batches read a page at a time, for the Paginator."""

    def __init__(self, query: _ExpiringQuery, *, count: int, today: datetime.date) -> None:
        self.query, self._count, self.today = query, count, today

    def count(self) -> int:
        return self._count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, window: slice) -> list[ExpiringBatch]:
        start, stop = window.start or 0, window.stop or self._count
        return list(self.query.rows(today=self.today, limit=stop - start, offset=start))


def expiring_stock(
    *,
    scope: ReportScope,
    within_days: int = 90,
    today: datetime.date,
    store: Store | None = None,
    item: Item | None = None,
    search: str = "",
    page: int | None = 1,
    per_page: int = 100,
) -> ExpiringStock:
    """Batches on hand expiring within `within_days` (and expired ones), soonest first, valued;
    `page=None` reads every batch lazily, as a CSV streams them."""
    # The totals always cover every batch, not just the page.
    until = today + datetime.timedelta(days=within_days)
    lines = _scoped(StockLine.objects.filter(quantity__gt=0, expiry__lte=until), scope=scope)
    if store is not None:
        lines = lines.filter(store=store)
    lines = lines.filter(_item_filter(item=item, search=search))
    # Receipts of batches that expired before the oldest one still on hand cannot matter;
    # leaving them out keeps the ranking from growing with years of history.
    earliest = lines.aggregate(earliest=Min("expiry"))["earliest"] or until
    query = _ExpiringQuery(
        lines,
        _latest_receipts(
            scope=scope,
            expiring=(earliest, until),
            store=store,
            item_filter=_item_filter(item=item, search=search),
        ),
    )
    by_month = query.by_month()
    total_batches = sum(month.batches for month in by_month)
    current: Page | None = None
    batches: Any
    csv_rows = None
    if page is None:
        batches = query.rows(today=today, last=True)
        if connection.vendor == "postgresql":
            csv_rows = query.csv(today=today)
    else:
        rows: Any = _Rows(query, count=total_batches, today=today)
        current = Paginator(rows, per_page).get_page(page)
        batches = list(current.object_list)
        query.close()
    return ExpiringStock(
        until=until,
        batches=batches,
        total_batches=total_batches,
        total_quantity=sum(month.quantity for month in by_month),
        total_value=sum((month.value for month in by_month), Decimal("0.00")),
        unpriced_batches=sum(month.unpriced_batches for month in by_month),
        page=current,
        by_month=by_month,
        csv_rows=csv_rows,
    )


# --- Transactions --------------------------------------------------------------------------


class Period(models.TextChoices):
    DAY = "day", _("Day")
    WEEK = "week", _("Week (from Monday)")
    MONTH = "month", _("Month")


TRUNCATE = {Period.DAY: TruncDay, Period.WEEK: TruncWeek, Period.MONTH: TruncMonth}


def _period_start(date: datetime.date, period: Period) -> datetime.date:
    """The first day of the day, ISO week or month holding `date`, as the database truncates."""
    if period == Period.WEEK:
        return date - datetime.timedelta(days=date.weekday())
    if period == Period.MONTH:
        return date.replace(day=1)
    return date


def _next_start(start: datetime.date, period: Period) -> datetime.date:
    if period == Period.MONTH:
        return (start + datetime.timedelta(days=32)).replace(day=1)
    return start + datetime.timedelta(days=7 if period == Period.WEEK else 1)


def period_starts(
    date_from: datetime.date, date_to: datetime.date, period: Period
) -> list[datetime.date]:
    """Every period touching `date_from`..`date_to`, so quiet periods show as zero."""
    starts = []
    current = _period_start(date_from, period)
    while current <= date_to:
        starts.append(current)
        current = _next_start(current, period)
    return starts


@dataclass(frozen=True)
class PeriodSpan:
    """A period of a report and how many of its days the report's date range covers."""

    start: datetime.date
    days: int
    covered: int

    @property
    def partial(self) -> bool:
        """The range cuts the period short, so its figures are not comparable with a whole one."""
        return self.covered < self.days


def period_span(
    start: datetime.date, period: Period, *, date_from: datetime.date, date_to: datetime.date
) -> PeriodSpan:
    """The period starting `start`: its length in days and the days of it in the range."""
    end = _next_start(start, period)  # exclusive
    covered = (min(end - datetime.timedelta(days=1), date_to) - max(start, date_from)).days + 1
    return PeriodSpan(start=start, days=(end - start).days, covered=max(covered, 0))


@dataclass(frozen=True)
class TransactionTotal:
    """Finalised transactions of one kind in one store and period: how many and their value."""

    period: datetime.date
    store_code: str
    store_name: str
    kind: str
    transactions: int
    lines: int
    value: Decimal

    @property
    def kind_label(self) -> str:
        return str(Transaction.Kind(self.kind).label)


@dataclass(frozen=True)
class KindTotal:
    kind: str
    label: str
    transactions: int = 0
    lines: int = 0
    value: Decimal = Decimal("0.00")


@dataclass(frozen=True)
class TransactionTotals:
    """Totals by period, store and kind, in that order, and the sums the page shows around them."""

    period: Period
    periods: list[datetime.date]
    rows: list[TransactionTotal]
    by_kind: list[KindTotal] = field(default_factory=list)
    # One per period, in the same order: the first and last may be partly in the range.
    spans: list[PeriodSpan] = field(default_factory=list)

    @property
    def total_transactions(self) -> int:
        return sum(row.transactions for row in self.rows)

    @property
    def total_lines(self) -> int:
        return sum(row.lines for row in self.rows)

    @property
    def total_value(self) -> Decimal:
        return sum((row.value for row in self.rows), Decimal("0.00"))

    def value_by_period(self) -> dict[str, list[Decimal]]:
        """Value of each kind in each period, every store together, for a chart over time."""
        index = {start: position for position, start in enumerate(self.periods)}
        series: dict[str, list[Decimal]] = {}
        for kind in self.by_kind:
            series[kind.label] = [Decimal("0.00")] * len(self.periods)
        for row in self.rows:
            series[row.kind_label][index[row.period]] += row.value
        return series


# A line is worth what the customer paid on a customer invoice and what the store paid otherwise.
LINE_VALUE = F("quantity") * Case(
    When(transaction__kind=Transaction.Kind.CUSTOMER_INVOICE, then=F("sell_price")),
    default=F("cost_price"),
)


def transaction_totals(
    *,
    scope: ReportScope,
    date_from: datetime.date,
    date_to: datetime.date,
    period: Period = Period.WEEK,
    store: Store | None = None,
    kind: str = "",
) -> TransactionTotals:
    """Counts and values of finalised transactions dated `date_from`..`date_to`, by group."""
    # Grouped by period, store and kind; the caller bounds the range, so the groups are bounded.

    def finalised(prefix: str) -> Q:
        condition = Q(
            **{
                f"{prefix}status": Transaction.Status.FINALISED,
                f"{prefix}date__gte": date_from,
                f"{prefix}date__lte": date_to,
            }
        )
        if store is not None:
            condition &= Q(**{f"{prefix}store": store})
        if kind:
            condition &= Q(**{f"{prefix}kind": kind})
        return condition

    truncate = TRUNCATE[period]
    counts = (
        _scoped(Transaction.objects.filter(finalised("")), scope=scope)
        .annotate(period=truncate("date"))
        .values("period", "store_id", "kind")
        .annotate(transactions=Count("id"))
        .order_by()
    )
    sums = (
        _scoped(
            TransactionLine.objects.filter(finalised("transaction__")),
            scope=scope,
            store_path="transaction__store",
        )
        .annotate(period=truncate("transaction__date"))
        .values("period", "transaction__store_id", "transaction__kind")
        .annotate(lines=Count("id"), value=Sum(LINE_VALUE, output_field=MONEY))
        .order_by()
    )
    line_sums = {
        (row["period"], row["transaction__store_id"], row["transaction__kind"]): row for row in sums
    }
    stores = {record.pk: record for record in scope.stores()}
    rows = []
    for row in counts:
        key = (row["period"], row["store_id"], row["kind"])
        line_sum = line_sums.get(key, {})
        rows.append(
            TransactionTotal(
                period=row["period"],
                store_code=stores[row["store_id"]].code,
                store_name=stores[row["store_id"]].name,
                kind=row["kind"],
                transactions=row["transactions"],
                lines=line_sum.get("lines", 0),
                value=_money(line_sum.get("value")),
            )
        )
    rows.sort(key=lambda row: (row.period, row.store_code, row.kind))
    by_kind = []
    for choice in Transaction.Kind:
        if kind and choice != kind:
            continue
        of_kind = [row for row in rows if row.kind == choice]
        by_kind.append(
            KindTotal(
                kind=choice.value,
                label=str(choice.label),
                transactions=sum(row.transactions for row in of_kind),
                lines=sum(row.lines for row in of_kind),
                value=sum((row.value for row in of_kind), Decimal("0.00")),
            )
        )
    starts = period_starts(date_from, date_to, period)
    return TransactionTotals(
        period=period,
        periods=starts,
        spans=[
            period_span(start, period, date_from=date_from, date_to=date_to) for start in starts
        ],
        rows=rows,
        by_kind=by_kind,
    )


# --- Goods in transit ----------------------------------------------------------------------

TransitStaleness = Literal["ok", "warning", "error"]


def transit_staleness(days: int) -> TransitStaleness:
    """Grade a transfer `days` in transit: a warning past settings.TRANSIT_WARNING_DAYS, an
    error past settings.TRANSIT_ERROR_DAYS (never before the warning)."""
    warning = settings.TRANSIT_WARNING_DAYS
    if days > max(settings.TRANSIT_ERROR_DAYS, warning):
        return "error"
    if days > warning:
        return "warning"
    return "ok"


@dataclass(frozen=True)
class TransferInTransit:
    """An outbound transfer its receiving store has not received: where from and to, its value."""

    number: int
    from_code: str
    from_name: str
    to_code: str
    to_name: str
    sent_on: datetime.date
    days: int
    value: Decimal
    # The number of its inbound draft at the receiving store, when this site holds it.
    inbound_number: int | None

    @property
    def staleness(self) -> TransitStaleness:
        return transit_staleness(self.days)


@dataclass(frozen=True)
class GoodsInTransit:
    """The unreceived transfers, longest in transit first, and the sent and received values of
    every transfer under the same filters: sent = received + in transit."""

    transfers: list[TransferInTransit]
    sent_value: Decimal
    received_value: Decimal
    # What the receiving stores counted in on the received ones: less when they lowered lines.
    counted_value: Decimal

    @property
    def in_transit_value(self) -> Decimal:
        return sum((transfer.value for transfer in self.transfers), Decimal("0.00"))

    def value_by_receiver(self) -> list[tuple[str, Decimal]]:
        """Value in transit to each receiving store, in store code order."""
        values: dict[tuple[str, str], Decimal] = {}
        for transfer in self.transfers:
            key = (transfer.to_code, transfer.to_name)
            values[key] = values.get(key, Decimal("0.00")) + transfer.value
        return [(f"{code} {name}", value) for (code, name), value in sorted(values.items())]


def goods_in_transit(
    *,
    scope: ReportScope,
    today: datetime.date,
    from_store: Store | None = None,
    to_store: Store | None = None,
) -> GoodsInTransit:
    """Outbound transfers in scope (on a satellite, those from or to its store) whose inbound is
    missing or not finalised here, valued at quantity x sell price; three queries."""
    # Received means received as far as this site knows: a sender's satellite learns of the
    # receipt when the finalised inbound reaches it by sync.
    sent = outbound_transfers()
    if not scope.is_master:
        if scope.store is None:
            sent = sent.none()
        else:
            sent = sent.filter(Q(store=scope.store) | Q(name__store=scope.store))
    if from_store is not None:
        sent = sent.filter(store=from_store)
    if to_store is not None:
        sent = sent.filter(name__store=to_store)
    received = Q(inbound__status=Transaction.Status.FINALISED)
    sent_value = F("quantity") * F("sell_price")
    sums = (
        TransactionLine.objects.filter(transaction__in=sent.values("pk"))
        .order_by()
        .aggregate(
            sent=Sum(sent_value, output_field=MONEY),
            received=Sum(
                sent_value,
                filter=Q(transaction__inbound__status=Transaction.Status.FINALISED),
                output_field=MONEY,
            ),
        )
    )
    counted = (
        TransactionLine.objects.filter(
            transaction__transfer_of__in=sent.filter(received).values("pk")
        )
        .order_by()
        .aggregate(value=Sum(F("quantity") * F("cost_price"), output_field=MONEY))
    )
    pending = (
        sent.exclude(received)
        .annotate(value=Sum(F("lines__quantity") * F("lines__sell_price"), output_field=MONEY))
        .order_by("date", "store__code", "number")
        .values(
            "number",
            "date",
            "value",
            "store__code",
            "store__name",
            "name__store__code",
            "name__store__name",
            "inbound__number",
        )
    )
    return GoodsInTransit(
        transfers=[
            TransferInTransit(
                number=row["number"],
                from_code=row["store__code"],
                from_name=row["store__name"],
                to_code=row["name__store__code"],
                to_name=row["name__store__name"],
                sent_on=row["date"],
                days=(today - row["date"]).days,
                value=_money(row["value"]),
                inbound_number=row["inbound__number"],
            )
            for row in pending
        ],
        sent_value=_money(sums["sent"]),
        received_value=_money(sums["received"]),
        counted_value=_money(counted["value"]),
    )
