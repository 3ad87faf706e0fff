"""Report pages: each parses its filters with a form, calls a selector, renders a table or CSV."""

import datetime
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from msupply.tables import Column, ReportTable, report_render, report_view, wants_csv

from . import charts, reports
from .forms import (
    ExpiringStockFilterForm,
    StockOnHandFilterForm,
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
def reports_index(request: HttpRequest) -> HttpResponseBase:
    """The list of reports."""
    return report_render(
        request, template="reports/index.html", title=_("Reports"), scope=reports.report_scope()
    )


@report_view
def stock_on_hand_report(request: HttpRequest) -> HttpResponseBase:
    """Stock on hand, item by store, stock-outs too, with a chart of the chosen item by store."""
    scope = reports.report_scope()
    form = StockOnHandFilterForm(request.GET, scope=scope)
    table = ReportTable(
        [
            Column(_("Item code")),
            Column(_("Item")),
            Column(_("Unit")),
            Column(_("Store")),
            Column(_("Store name")),
            Column(_("Batches"), "number"),
            Column(_("Earliest expiry"), "date"),
            Column(_("Quantity"), "number"),
            Column(_("Stock-out")),
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
            only_stock_outs=form.cleaned_data["stock_outs"],
            page=None if wants_csv(request) else form.cleaned_data["page"] or 1,
        )
        _stock_rows(request, table, stock)
        _stock_total(table, stock)
        if item is not None:
            chart = charts.bar_chart(
                title=_("%(item)s: stock on hand by store (%(unit)s)")
                % {"item": f"{item.code} {item.name}", "unit": item.unit},
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
        title=_("Stock on hand"),
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
    if wants_csv(request):
        # Values only, written as the download streams: no per-row display to build.
        table.stream(values for values, _link in _stock_values(stock))
    else:
        stock_out = _("Stock-out")
        links: dict[str, dict[int, str]] = {}
        for values, subtotal in _stock_values(stock):
            code = values[0]
            if code not in links:
                links[code] = {0: query_with(request, item=code)}
            out = values[8] == stock_out
            table.add(
                values,
                urls=links[code],
                css="subtotal" if subtotal else "stock-out" if out else "",
                classes={8: "stock-out-badge"} if out and not subtotal else {},
            )


def _stock_values(stock: reports.StockOnHand) -> Iterator[tuple[list[Any], bool]]:
    """Each row's values, and whether it is an item's total over its stores."""
    stock_out = _("Stock-out")
    rows_by_item: dict[str, list[reports.StockRow]] = {}
    for row in stock.rows:
        rows_by_item.setdefault(row.item_code, []).append(row)
    for code, rows in rows_by_item.items():
        for row in rows:
            yield (
                [
                    row.item_code,
                    row.item_name,
                    row.unit,
                    row.store_code,
                    row.store_name,
                    row.batches,
                    row.earliest_expiry,
                    row.quantity,
                    stock_out if row.quantity == 0 else "",
                ],
                False,
            )
        if len(rows) > 1:
            first = rows[0]
            expiries = [row.earliest_expiry for row in rows if row.earliest_expiry]
            outs = sum(row.stock_out for row in rows)
            yield (
                [
                    code,
                    first.item_name,
                    first.unit,
                    _("All"),
                    ngettext("%(count)d store", "%(count)d stores", len(rows))
                    % {"count": len(rows)},
                    sum(row.batches for row in rows),
                    min(expiries, default=None),
                    sum(row.quantity for row in rows),
                    ngettext("%(count)d stock-out", "%(count)d stock-outs", outs) % {"count": outs}
                    if outs
                    else "",
                ],
                True,
            )


def _stock_total(table: ReportTable, stock: reports.StockOnHand) -> None:
    table.add(
        [
            _("Total"),
            "",
            "",
            "",
            "",
            stock.total_batches,
            None,
            stock.total_quantity,
            ngettext("%(count)d stock-out", "%(count)d stock-outs", stock.total_stock_outs)
            % {"count": stock.total_stock_outs},
        ],
        footer=True,
    )


@report_view
def expiring_stock_report(request: HttpRequest) -> HttpResponseBase:
    """Batches expiring soon across stores, soonest first, with quantity and value."""
    scope = reports.report_scope()
    form = ExpiringStockFilterForm(filter_data(request, {"days": "90"}), scope=scope)
    table = ReportTable(
        [
            Column(_("Expiry"), "date"),
            Column(_("Days left"), "number"),
            Column(_("Store")),
            Column(_("Item code")),
            Column(_("Item")),
            Column(_("Unit")),
            Column(_("Batch")),
            Column(_("Quantity"), "number"),
            Column(_("Cost price"), "money"),
            Column(_("Value"), "money"),
        ]
    )
    expiring, chart = None, None
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
        expired = _("expired")
        if wants_csv(request):
            # Every batch, read from the database as the CSV streams out; PostgreSQL writes
            # the lines itself (reports.EXPIRING_CSV holds these columns' cells).
            if expiring.csv_rows is not None:
                table.stream_written(expiring.csv_rows)
            else:
                table.stream(_batch_values(batch) for batch in expiring.batches)
        else:
            for batch in expiring.batches:
                table.add(
                    _batch_values(batch),
                    css="expired" if batch.days_left < 0 else "",
                    texts={1: expired} if batch.days_left < 0 else {},
                )
            chart = expiring_chart(expiring, today=timezone.localdate())
        table.add(
            [
                _("Total"),
                None,
                ngettext("%(count)d batch", "%(count)d batches", expiring.total_batches)
                % {"count": expiring.total_batches},
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
        title=_("Expiring stock"),
        scope=scope,
        table=table,
        filename="expiring-stock.csv",
        form=form,
        result=expiring,
        page=expiring.page if expiring else None,
        chart=chart,
    )


def _batch_values(batch: reports.ExpiringBatch) -> Sequence[Any]:
    return [
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
    ]


# The chart keeps this many stores apart, the ones with the most value expiring, and sums the rest.
CHART_STORES = 6


def expiring_chart(expiring: reports.ExpiringStock, *, today: datetime.date) -> Any:
    """Value expiring per month by store (the largest apart, the rest together), the last month
    marked partial when the look-ahead ends inside it."""
    if not expiring.by_month:
        return None
    # Every month from the first expiry (or this month) to the look-ahead's end, quiet ones too.
    first = min(expiring.by_month[0].month, today.replace(day=1))
    months = reports.period_starts(first, expiring.until, Period.MONTH)
    value_of: dict[str, Any] = {}
    for month in expiring.by_month:
        name = f"{month.store_code} {month.store_name}"
        value_of[name] = value_of.get(name, 0) + month.value
    largest = sorted(value_of, key=lambda name: (-value_of[name], name))[:CHART_STORES]
    others = _("Other stores")
    series: dict[str, list[Any]] = {name: [0] * len(months) for name in sorted(largest)}
    index = {start: position for position, start in enumerate(months)}
    for month in expiring.by_month:
        name = f"{month.store_code} {month.store_name}"
        if name not in series:
            name = others
            series.setdefault(others, [0] * len(months))
        series[name][index[month.month]] += month.value
    # Expired batches count in the months they expired; the look-ahead starts today.
    spans = [
        reports.period_span(
            start, Period.MONTH, date_from=min(start, today), date_to=expiring.until
        )
        for start in months
    ]
    return charts.line_chart(
        title=_("Value at cost expiring per month, by store"),
        x_labels=[period_text(span, Period.MONTH, short=True) for span in spans],
        series=series,
        notes=[period_text(span, Period.MONTH) if span.partial else "" for span in spans],
    )


def period_text(span: reports.PeriodSpan, period: Period, *, short: bool = False) -> str:
    """A period as the reports show it, in the viewer's language and date format; a partial one
    says so and how many of its days the range covers (unless `short`)."""
    start = span.start
    if period == Period.MONTH:
        text = formats.date_format(start, "YEAR_MONTH_FORMAT")
    else:
        text = formats.date_format(start, "SHORT_DATE_FORMAT")
        if period == Period.WEEK and not short:
            text = _("Week of %(date)s") % {"date": text}
    if not span.partial:
        return text
    if short:
        return _("%(period)s (partial)") % {"period": text}
    return _("%(period)s (partial, %(covered)d of %(days)d days)") % {
        "period": text,
        "covered": span.covered,
        "days": span.days,
    }


@report_view
def transactions_report(request: HttpRequest) -> HttpResponseBase:
    """Counts and values of finalised transactions by period, store and kind, over time."""
    scope = reports.report_scope()
    form = TransactionsFilterForm(filter_data(request, transactions_defaults()), scope=scope)
    table = ReportTable(
        [
            Column(_("Period"), "date"),
            Column(_("Store")),
            Column(_("Store name")),
            Column(_("Kind")),
            Column(_("Transactions"), "number"),
            Column(_("Lines"), "number"),
            Column(_("Value"), "money"),
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
        labels = {span.start: period_text(span, period) for span in totals.spans}
        partial = {span.start: span.partial for span in totals.spans}
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
                texts={0: labels[row.period]},
                css="partial" if partial[row.period] else "",
            )
        for kind in totals.by_kind:
            table.add(
                [_("Total"), "", "", kind.label, kind.transactions, kind.lines, kind.value],
                footer=True,
            )
        table.add(
            [
                _("Total"),
                "",
                "",
                _("All kinds"),
                totals.total_transactions,
                totals.total_lines,
                totals.total_value,
            ],
            footer=True,
            css="grand-total",
        )
        chart = charts.line_chart(
            title=str(TRANSACTIONS_CHART_TITLE[period]),
            x_labels=[period_text(span, period, short=True) for span in totals.spans],
            series=totals.value_by_period(),
            notes=[period_text(span, period) if span.partial else "" for span in totals.spans],
        )
    return report_render(
        request,
        template="reports/transactions.html",
        title=_("Transactions"),
        scope=scope,
        table=table,
        filename="transactions.csv",
        form=form,
        result=totals,
        page=page,
        chart=chart,
    )


TRANSACTIONS_CHART_TITLE = {
    Period.DAY: gettext_lazy("Value of finalised transactions by day and kind"),
    Period.WEEK: gettext_lazy("Value of finalised transactions by week and kind"),
    Period.MONTH: gettext_lazy("Value of finalised transactions by month and kind"),
}

TRANSIT_STATUS = {
    "ok": gettext_lazy("OK"),
    "warning": gettext_lazy("Over %(warning)d days"),
    "error": gettext_lazy("Over %(error)d days"),
}


@report_view
def goods_in_transit_report(request: HttpRequest) -> HttpResponseBase:
    """Outbound transfers not yet received, longest in transit first, with a chart by receiver."""
    scope = reports.report_scope()
    form = TransitFilterForm(request.GET)
    table = ReportTable(
        [
            Column(_("From store")),
            Column(_("To store")),
            Column(_("Outbound number"), "number"),
            Column(_("Date sent"), "date"),
            Column(_("Days in transit"), "number"),
            Column(_("Status")),
            Column(_("Inbound draft"), "number"),
            Column(_("Value"), "money"),
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
            key: str(label)
            % {"warning": settings.TRANSIT_WARNING_DAYS, "error": settings.TRANSIT_ERROR_DAYS}
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
                _("Total"),
                ngettext("%(count)d transfer", "%(count)d transfers", count) % {"count": count},
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
                title=_("Value in transit by receiving store"), bars=transit.value_by_receiver()
            )
    return report_render(
        request,
        template="reports/goods_in_transit.html",
        title=_("Goods in transit"),
        scope=scope,
        table=table,
        filename="goods-in-transit.csv",
        form=form,
        result=transit,
        chart=chart,
        warning_days=settings.TRANSIT_WARNING_DAYS,
        error_days=settings.TRANSIT_ERROR_DAYS,
    )
