"""Read paths of the reports: stock on hand, expiring stock, transaction totals and goods in
transit, in a scope."""

import datetime
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db import models
from django.db.models import Case, Count, F, Min, Q, QuerySet, Sum, When, Window
from django.db.models.functions import RowNumber, TruncDay, TruncMonth, TruncWeek

from msupply import identity

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
            return "All stores — master server"
        if self.store is None:
            return "No store yet — this satellite has not synced with the master"
        return f"Store {self.store.code} — this satellite's own store only"


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


@dataclass(frozen=True)
class StockRow:
    """The stock of one item in one store: its batches, earliest expiry and quantity."""

    item_code: str
    item_name: str
    unit: str
    store_code: str
    store_name: str
    batches: int
    earliest_expiry: datetime.date
    quantity: int


@dataclass(frozen=True)
class StockOnHand:
    """Stock of each item in each store (one page of items, or all) and the total of every row."""

    rows: list[StockRow]
    total_quantity: int
    total_batches: int
    page: Page | None = None


def stock_on_hand(
    *,
    scope: ReportScope,
    store: Store | None = None,
    item: Item | None = None,
    search: str = "",
    page: int | None = 1,
    items_per_page: int = 25,
) -> StockOnHand:
    """Quantity on hand of each item in each store, from its stock lines; `page=None` for all."""
    # Finalising a transaction moves its lines into the stock lines, so this equals the sum of
    # finalised movements. Pages hold whole items, so each item's total is complete on its page.
    lines = _scoped(StockLine.objects.filter(quantity__gt=0), scope=scope)
    if store is not None:
        lines = lines.filter(store=store)
    lines = lines.filter(_item_filter(item=item, search=search))
    totals = lines.aggregate(quantity=Sum("quantity"), batches=Count("id"))
    current: Page | None = None
    if page is not None:
        items = Item.objects.filter(pk__in=lines.values("item_id")).order_by("code")
        current = Paginator(items.values_list("pk", flat=True), items_per_page).get_page(page)
        lines = lines.filter(item_id__in=list(current.object_list))
    grouped = (
        lines.values("item__code", "item__name", "item__unit", "store__code", "store__name")
        .annotate(quantity=Sum("quantity"), batches=Count("id"), earliest=Min("expiry"))
        .order_by("item__code", "store__code")
    )
    return StockOnHand(
        rows=[
            StockRow(
                item_code=row["item__code"],
                item_name=row["item__name"],
                unit=row["item__unit"],
                store_code=row["store__code"],
                store_name=row["store__name"],
                batches=row["batches"],
                earliest_expiry=row["earliest"],
                quantity=row["quantity"],
            )
            for row in grouped
        ],
        total_quantity=totals["quantity"] or 0,
        total_batches=totals["batches"],
        page=current,
    )


# --- Expiring stock ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiringBatch:
    """One batch on hand in one store that expires soon, with its value at cost."""

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
class ExpiringStock:
    """Batches expiring on or before `until`, soonest first, with totals over all of them."""

    until: datetime.date
    batches: list[ExpiringBatch]
    total_batches: int
    total_quantity: int
    total_value: Decimal
    unpriced_batches: int
    page: Page | None = None


BatchKey = tuple[uuid.UUID, uuid.UUID, str, datetime.date]


def latest_receipt_costs(
    *,
    scope: ReportScope,
    expiring: tuple[datetime.date, datetime.date],
    store: Store | None,
    item_filter: Q,
) -> dict[BatchKey, Decimal]:
    """Each batch expiring within `expiring`: its cost on its store's latest finalised receipt."""
    # Stock lines carry no price, so a batch is valued at what its store last paid for it. One
    # windowed query ranks the receipts: a correlated subquery per stock line took 78 s on the
    # benchmark, because a batch number recurs in every store that received it.
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
    # order_by() drops the lines' default ordering, which would join stores and items to sort.
    latest = (
        receipts.order_by()
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("expiry"), F("batch"), F("item_id"), F("transaction__store_id")],
                order_by=[F("transaction__date").desc(), F("transaction__number").desc()],
            )
        )
        .filter(rank=1)
    )
    return {
        (store_id, item_id, batch, expiry): _money(cost_price)
        for store_id, item_id, batch, expiry, cost_price in latest.values_list(
            "transaction__store_id", "item_id", "batch", "expiry", "cost_price"
        )
    }


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
    """Batches on hand expiring within `within_days` (and expired ones), soonest first, valued."""
    # page=None returns every batch; the totals always cover every batch, not just the page.
    until = today + datetime.timedelta(days=within_days)
    lines = _scoped(StockLine.objects.filter(quantity__gt=0, expiry__lte=until), scope=scope)
    if store is not None:
        lines = lines.filter(store=store)
    lines = lines.filter(_item_filter(item=item, search=search))
    # Receipts of batches that expired before the oldest one still on hand cannot matter;
    # leaving them out keeps the ranking from growing with years of history.
    earliest = lines.aggregate(earliest=Min("expiry"))["earliest"] or until
    costs = latest_receipt_costs(
        scope=scope,
        expiring=(earliest, until),
        store=store,
        item_filter=_item_filter(item=item, search=search),
    )
    # Key and quantity first, then what the page shows.
    ordered = lines.order_by("expiry", "store__code", "item__code", "batch").values_list(
        "store_id",
        "item_id",
        "batch",
        "expiry",
        "quantity",
        "store__code",
        "store__name",
        "item__code",
        "item__name",
        "item__unit",
    )
    current: Page | None = None
    if page is None:
        rows: list[tuple] = list(ordered)
        keyed: Iterable[tuple] = rows
    else:
        current = Paginator(ordered, per_page).get_page(page)
        rows = list(current.object_list)
        keyed = lines.values_list("store_id", "item_id", "batch", "expiry", "quantity")
    total_batches, total_quantity, total_value, unpriced = 0, 0, Decimal("0.00"), 0
    for store_id, item_id, batch, expiry, quantity, *_ in keyed:
        cost_price = costs.get((store_id, item_id, batch, expiry))
        total_batches += 1
        total_quantity += quantity
        if cost_price is None:
            unpriced += 1
        else:
            total_value += quantity * cost_price
    return ExpiringStock(
        until=until,
        batches=[
            ExpiringBatch(
                store_code=store_code,
                store_name=store_name,
                item_code=item_code,
                item_name=item_name,
                unit=unit,
                batch=batch,
                expiry=expiry,
                days_left=(expiry - today).days,
                quantity=quantity,
                cost_price=costs.get((store_id, item_id, batch, expiry)),
            )
            for (
                store_id,
                item_id,
                batch,
                expiry,
                quantity,
                store_code,
                store_name,
                item_code,
                item_name,
                unit,
            ) in rows
        ],
        total_batches=total_batches,
        total_quantity=total_quantity,
        total_value=total_value,
        unpriced_batches=unpriced,
        page=current,
    )


# --- Transactions --------------------------------------------------------------------------


class Period(models.TextChoices):
    DAY = "day", "Day"
    WEEK = "week", "Week (from Monday)"
    MONTH = "month", "Month"


TRUNCATE = {Period.DAY: TruncDay, Period.WEEK: TruncWeek, Period.MONTH: TruncMonth}


def _period_start(date: datetime.date, period: Period) -> datetime.date:
    """The first day of the day, ISO week or month holding `date`, as the database truncates."""
    if period == Period.WEEK:
        return date - datetime.timedelta(days=date.weekday())
    if period == Period.MONTH:
        return date.replace(day=1)
    return date


def _period_starts(
    date_from: datetime.date, date_to: datetime.date, period: Period
) -> list[datetime.date]:
    """Every period touching `date_from`..`date_to`, so quiet periods show as zero."""
    starts = []
    current = _period_start(date_from, period)
    while current <= date_to:
        starts.append(current)
        if period == Period.MONTH:
            current = (current + datetime.timedelta(days=32)).replace(day=1)
        else:
            current += datetime.timedelta(days=7 if period == Period.WEEK else 1)
    return starts


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
    return TransactionTotals(
        period=period,
        periods=_period_starts(date_from, date_to, period),
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
