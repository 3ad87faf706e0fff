"""Report pages: each parses its filters with a form, calls a selector, renders a table or CSV."""

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from msupply.tables import Column, ReportTable, report_render, report_view, wants_csv

from . import charts, reports
from .forms import (
    ExpiringStockFilterForm,
    StockFilterForm,
    TransactionsFilterForm,
    TransitFilterForm,
    transactions_defaults,
)
from .reports import Period

ROWS_PER_PAGE = 100


def query_with(request: HttpRequest, **changes: str) -> str:
    """This page's query string with `changes` applied, on its first page, as a page."""
    query = request.GET.copy()
    query.pop("page", None)
    query.pop("format", None)
    for key, value in changes.items():
        query[key] = value
    return f"?{query.urlencode()}"


def filter_data(request: HttpRequest, defaults: dict[str, str]) -> dict[str, Any]:
    """The query string over `defaults`, so a first visit shows a sensible report."""
    return {**defaults, **request.GET.dict()}


# --- Pages ---------------------------------------------------------------------------------


@report_view
def reports_index(request: HttpRequest) -> HttpResponse:
    """The list of reports."""
    return report_render(
        request, template="reports/index.html", title="Reports", scope=reports.report_scope()
    )


@report_view
def stock_on_hand_report(request: HttpRequest) -> HttpResponse:
    """Stock on hand, item by store, with a chart of the chosen item's stock by store."""
    scope = reports.report_scope()
    form = StockFilterForm(request.GET, scope=scope)
    table = ReportTable(
        [
            Column("Item code"),
            Column("Item"),
            Column("Unit"),
            Column("Store"),
            Column("Store name"),
            Column("Batches", "number"),
            Column("Earliest expiry", "date"),
            Column("Quantity", "number"),
        ]
    )
    stock, chart = None, None
    if form.is_valid():
        item = form.cleaned_data["item"]
        stock = reports.stock_on_hand(
            scope=scope,
            store=form.cleaned_data["store"],
            item=item,
            search=form.cleaned_data["q"],
            page=None if wants_csv(request) else form.cleaned_data["page"] or 1,
        )
        _stock_rows(request, table, stock)
        if item is not None:
            chart = charts.bar_chart(
                title=f"{item.code} {item.name}: stock on hand by store ({item.unit})",
                bars=[
                    (f"{row.store_code} {row.store_name}", row.quantity)
                    for row in stock.rows
                    if row.item_code == item.code
                ],
                unit=item.unit,
            )
    return report_render(
        request,
        template="reports/stock_on_hand.html",
        title="Stock on hand",
        scope=scope,
        table=table,
        filename="stock-on-hand.csv",
        form=form,
        result=stock,
        page=stock.page if stock else None,
        chart=chart,
    )


def _stock_rows(request: HttpRequest, table: ReportTable, stock: reports.StockOnHand) -> None:
    """Each item's stores, then the item's total when it is in more than one store."""
    rows_by_item: dict[str, list[reports.StockRow]] = {}
    for row in stock.rows:
        rows_by_item.setdefault(row.item_code, []).append(row)
    for code, rows in rows_by_item.items():
        link = {0: query_with(request, item=code)}
        for row in rows:
            table.add(
                [
                    row.item_code,
                    row.item_name,
                    row.unit,
                    row.store_code,
                    row.store_name,
                    row.batches,
                    row.earliest_expiry,
                    row.quantity,
                ],
                urls=link,
            )
        if len(rows) > 1:
            first = rows[0]
            table.add(
                [
                    code,
                    first.item_name,
                    first.unit,
                    "All",
                    f"{len(rows)} stores",
                    sum(row.batches for row in rows),
                    min(row.earliest_expiry for row in rows),
                    sum(row.quantity for row in rows),
                ],
                css="subtotal",
                urls=link,
            )
    table.add(
        ["Total", "", "", "", "", stock.total_batches, None, stock.total_quantity],
        footer=True,
    )


@report_view
def expiring_stock_report(request: HttpRequest) -> HttpResponse:
    """Batches expiring soon across stores, soonest first, with quantity and value."""
    scope = reports.report_scope()
    form = ExpiringStockFilterForm(filter_data(request, {"days": "90"}), scope=scope)
    table = ReportTable(
        [
            Column("Expiry", "date"),
            Column("Days left", "number"),
            Column("Store"),
            Column("Item code"),
            Column("Item"),
            Column("Unit"),
            Column("Batch"),
            Column("Quantity", "number"),
            Column("Cost price", "money"),
            Column("Value", "money"),
        ]
    )
    expiring = None
    if form.is_valid():
        expiring = reports.expiring_stock(
            scope=scope,
            within_days=form.cleaned_data["days"],
            today=timezone.localdate(),
            store=form.cleaned_data["store"],
            item=form.cleaned_data["item"],
            search=form.cleaned_data["q"],
            page=None if wants_csv(request) else form.cleaned_data["page"] or 1,
            per_page=ROWS_PER_PAGE,
        )
        for batch in expiring.batches:
            table.add(
                [
                    batch.expiry,
                    batch.days_left,
                    batch.store_code,
                    batch.item_code,
                    batch.item_name,
                    batch.unit,
                    batch.batch,
                    batch.quantity,
                    batch.cost_price,
                    batch.value,
                ],
                css="expired" if batch.days_left < 0 else "",
                texts={1: "expired"} if batch.days_left < 0 else {},
            )
        table.add(
            [
                "Total",
                None,
                f"{expiring.total_batches} batches",
                "",
                "",
                "",
                "",
                expiring.total_quantity,
                None,
                expiring.total_value,
            ],
            footer=True,
        )
    return report_render(
        request,
        template="reports/expiring_stock.html",
        title="Expiring stock",
        scope=scope,
        table=table,
        filename="expiring-stock.csv",
        form=form,
        result=expiring,
        page=expiring.page if expiring else None,
    )


PERIOD_TEXT: dict[Period, Callable[[datetime.date], str]] = {
    Period.DAY: lambda start: start.isoformat(),
    Period.WEEK: lambda start: f"Week of {start.isoformat()}",
    Period.MONTH: lambda start: start.strftime("%Y-%m"),
}


@report_view
def transactions_report(request: HttpRequest) -> HttpResponse:
    """Counts and values of finalised transactions by period, store and kind, over time."""
    scope = reports.report_scope()
    form = TransactionsFilterForm(filter_data(request, transactions_defaults()), scope=scope)
    table = ReportTable(
        [
            Column("Period", "date"),
            Column("Store"),
            Column("Store name"),
            Column("Kind"),
            Column("Transactions", "number"),
            Column("Lines", "number"),
            Column("Value", "money"),
        ]
    )
    totals, chart, page = None, None, None
    if form.is_valid():
        period = Period(form.cleaned_data["period"])
        totals = reports.transaction_totals(
            scope=scope,
            date_from=form.cleaned_data["date_from"],
            date_to=form.cleaned_data["date_to"],
            period=period,
            store=form.cleaned_data["store"],
            kind=form.cleaned_data["kind"],
        )
        rows: Iterable[reports.TransactionTotal] = totals.rows
        if not wants_csv(request):
            page = Paginator(totals.rows, ROWS_PER_PAGE).get_page(form.cleaned_data["page"] or 1)
            rows = page.object_list
        for row in rows:
            table.add(
                [
                    row.period,
                    row.store_code,
                    row.store_name,
                    row.kind_label,
                    row.transactions,
                    row.lines,
                    row.value,
                ],
                texts={0: PERIOD_TEXT[period](row.period)},
            )
        for kind in totals.by_kind:
            table.add(
                ["Total", "", "", kind.label, kind.transactions, kind.lines, kind.value],
                footer=True,
            )
        table.add(
            [
                "Total",
                "",
                "",
                "All kinds",
                totals.total_transactions,
                totals.total_lines,
                totals.total_value,
            ],
            footer=True,
            css="grand-total",
        )
        chart = charts.line_chart(
            title=f"Value of finalised transactions by {period} and kind",
            x_labels=[
                start.strftime("%Y-%m" if period == Period.MONTH else "%Y-%m-%d")
                for start in totals.periods
            ],
            series=totals.value_by_period(),
        )
    return report_render(
        request,
        template="reports/transactions.html",
        title="Transactions",
        scope=scope,
        table=table,
        filename="transactions.csv",
        form=form,
        result=totals,
        page=page,
        chart=chart,
    )


TRANSIT_STATUS = {"ok": "OK", "warning": "Over {warning} days", "error": "Over {error} days"}


@report_view
def goods_in_transit_report(request: HttpRequest) -> HttpResponse:
    """Outbound transfers not yet received, longest in transit first, with a chart by receiver."""
    scope = reports.report_scope()
    form = TransitFilterForm(request.GET)
    table = ReportTable(
        [
            Column("From store"),
            Column("To store"),
            Column("Outbound number", "number"),
            Column("Date sent", "date"),
            Column("Days in transit", "number"),
            Column("Status"),
            Column("Inbound draft", "number"),
            Column("Value", "money"),
        ]
    )
    transit, chart = None, None
    if form.is_valid():
        transit = reports.goods_in_transit(
            scope=scope,
            today=timezone.localdate(),
            from_store=form.cleaned_data["from_store"],
            to_store=form.cleaned_data["to_store"],
        )
        labels = {
            key: label.format(
                warning=settings.TRANSIT_WARNING_DAYS, error=settings.TRANSIT_ERROR_DAYS
            )
            for key, label in TRANSIT_STATUS.items()
        }
        for transfer in transit.transfers:
            table.add(
                [
                    f"{transfer.from_code} {transfer.from_name}",
                    f"{transfer.to_code} {transfer.to_name}",
                    transfer.number,
                    transfer.sent_on,
                    transfer.days,
                    labels[transfer.staleness],
                    transfer.inbound_number,
                    transfer.value,
                ],
                css=f"sync-{transfer.staleness}",
                classes={5: f"sync-badge sync-{transfer.staleness}"},
            )
        count = len(transit.transfers)
        table.add(
            [
                "Total",
                f"{count} transfer{'s' if count != 1 else ''}",
                "",
                None,
                None,
                "",
                None,
                transit.in_transit_value,
            ],
            footer=True,
        )
        if transit.transfers:
            chart = charts.bar_chart(
                title="Value in transit by receiving store", bars=transit.value_by_receiver()
            )
    return report_render(
        request,
        template="reports/goods_in_transit.html",
        title="Goods in transit",
        scope=scope,
        table=table,
        filename="goods-in-transit.csv",
        form=form,
        result=transit,
        chart=chart,
        warning_days=settings.TRANSIT_WARNING_DAYS,
        error_days=settings.TRANSIT_ERROR_DAYS,
    )
