"""Report pages in the admin's look: a table of typed columns, rendered as HTML or CSV.

Shared below the apps, so that stores' reports and sync's status page use one toolkit and
neither imports the other's views.
"""

import csv
import io
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from django.contrib import admin
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.utils import formats, timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Every report page, the sync status page too, is behind the one reports permission.
REPORT_PERMISSION = "stores.view_reports"

View = Callable[..., HttpResponseBase]


def report_view(view: View) -> View:
    """Log in first (302 to the login page), then hold the reports permission (else 403)."""
    return login_required(permission_required(REPORT_PERMISSION, raise_exception=True)(view))


ColumnKind = Literal["text", "number", "money", "date", "datetime"]


@dataclass(frozen=True)
class Column:
    """A table column: its heading, how its values read on the page and how they go in a CSV."""

    label: str
    kind: ColumnKind = "text"

    @property
    def numeric(self) -> bool:
        return self.kind in ("number", "money")

    def text(self, value: Any) -> str:
        if value is None:
            return "" if self.kind == "text" else "—"
        if isinstance(value, str):
            # A label such as "Total" may stand in any column.
            return value
        if self.kind == "number":
            return f"{value:,}"
        if self.kind == "money":
            return f"{value:,.2f}"
        # Dates in the viewer's language's format; the CSV keeps ISO dates for machines.
        if self.kind == "date":
            return formats.date_format(value, "SHORT_DATE_FORMAT")
        if self.kind == "datetime":
            return formats.date_format(timezone.localtime(value), "SHORT_DATETIME_FORMAT")
        return str(value)

    def csv(self, value: Any) -> Any:
        """ISO dates, local ISO times, and text that a spreadsheet will not run as a formula."""
        return self.csv_writer()(value)

    def csv_writer(self) -> Callable[[Any], Any]:
        """This column's csv() as one function, chosen once per download rather than per cell."""
        return _CSV_WRITERS[self.kind]


def _csv_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        # Spreadsheets run cells starting like formulas (CSV injection); quote them as text.
        # Numbers are never str here, so a negative quantity stays a number.
        return f"'{value}" if value[:1] in FORMULA_STARTS else value
    return value


def _csv_number(value: Any) -> Any:
    # A label such as "Total" may stand in any column.
    if value is None:
        return ""
    return _csv_text(value) if isinstance(value, str) else value


def _csv_date(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return _csv_text(value)
    return value.isoformat()


def _csv_datetime(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return _csv_text(value)
    return timezone.localtime(value).isoformat()


_CSV_WRITERS: dict[str, Callable[[Any], Any]] = {
    "text": _csv_text,
    "number": _csv_number,
    "money": _csv_number,
    "date": _csv_date,
    "datetime": _csv_datetime,
}


# OWASP's CSV injection list: a leading tab or carriage return also starts a formula in some
# spreadsheets (https://owasp.org/www-community/attacks/CSV_Injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Row:
    """Raw values (what the CSV gets) and, by column index, what the page shows instead."""

    values: Sequence[Any]
    css: str = ""
    texts: dict[int, str] | None = None
    urls: dict[int, str] | None = None
    classes: dict[int, str] | None = None


@dataclass
class ReportTable:
    """Columns, body rows and footer (totals) rows: one HTML rendering and one CSV writer."""

    # Rows render in Python rather than in a template loop: a master's table can hold thousands
    # of cells, and this keeps a page well inside its one-second budget.

    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    footer: list[Row] = field(default_factory=list)
    # Body values a CSV streams before `rows`, read as it is written (see stream()).
    streamed: Iterable[Sequence[Any]] = ()
    # Body rows the database wrote as CSV already (see stream_written()), before `streamed`.
    written: Iterable[str] = ()

    def stream(self, values: Iterable[Sequence[Any]]) -> None:
        """Body rows for the CSV only, consumed lazily while the download is written."""
        self.streamed = values

    def stream_written(self, chunks: Iterable[str]) -> None:
        """Body rows for the CSV only, as CSV text the database wrote (see csv_line_sql())."""
        self.written = chunks

    def add(self, values: Sequence[Any], *, footer: bool = False, **display: Any) -> None:
        """Append a row; `texts`, `urls` and `classes` override single cells by column index."""
        (self.footer if footer else self.rows).append(Row(values=values, **display))

    def _html(self, rows: list[Row]) -> SafeString:
        cell_classes = ["num" if column.numeric else "" for column in self.columns]
        html = []
        for row in rows:
            texts, urls, classes = row.texts or {}, row.urls or {}, row.classes or {}
            cells = []
            for index, (column, value) in enumerate(zip(self.columns, row.values, strict=True)):
                text: str = escape(texts[index] if index in texts else column.text(value))
                if index in urls:
                    text = f'<a href="{escape(urls[index])}">{text}</a>'
                css = " ".join(filter(None, [cell_classes[index], classes.get(index, "")]))
                cells.append(
                    f'<td class="{escape(css)}">{text}</td>' if css else f"<td>{text}</td>"
                )
            row_class = f' class="{escape(row.css)}"' if row.css else ""
            html.append(f"<tr{row_class}>{''.join(cells)}</tr>")
        # Every text, link and class above went through escape().
        return mark_safe("\n".join(html))  # noqa: S308

    def body_html(self) -> SafeString:
        return self._html(self.rows)

    def footer_html(self) -> SafeString:
        return self._html(self.footer)


# Rows written per chunk of a CSV download: a write per row would cost more than the CSV itself.
CSV_CHUNK_ROWS = 2000


def csv_cell_sql(kind: ColumnKind, expression: str) -> str:
    """PostgreSQL text of `expression` as the csv module writes Column(kind).csv() of it."""
    if kind == "text":
        # ASCII() is the first character's code (0 for an empty text), cheaper than LEFT() IN.
        starts = ", ".join(str(ord(start)) for start in FORMULA_STARTS)
        text = (
            f"CASE WHEN ASCII({expression}) IN ({starts}) THEN '''' || {expression} "
            f"ELSE {expression} END"
        )
        # The csv module quotes a cell holding the delimiter, a quote, CR or LF, doubling quotes.
        return (
            f"COALESCE(CASE WHEN {expression} ~ E'[\",\\r\\n]' "
            f"THEN '\"' || REPLACE({text}, '\"', '\"\"') || '\"' ELSE {text} END, '')"
        )
    if kind == "date":
        # Not the session's DateStyle: ISO whatever the server is set to, as date.isoformat().
        return f"COALESCE(TO_CHAR({expression}, 'YYYY-MM-DD'), '')"
    if kind in ("number", "money"):
        # A money expression must be NUMERIC(_, 2): its text is then str() of the cent amount.
        return f"COALESCE(CAST({expression} AS TEXT), '')"
    raise ValueError(f"no SQL CSV cell for {kind} columns")


def csv_line_sql(cells: Iterable[tuple[ColumnKind, str]]) -> str:
    """PostgreSQL text of one CSV line of `cells` (kind, expression), as the csv module ends it."""
    # The database writes the line, so a download of 50,000 rows makes no Python call per cell.
    return " || ',' || ".join(csv_cell_sql(kind, expression) for kind, expression in cells) + (
        " || E'\\r\\n'"
    )


def _csv_chunks(table: ReportTable) -> Iterator[str]:
    """The CSV text of the heading row, the written, streamed and body rows, then the totals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(column.label for column in table.columns)
    if table.written:
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        yield from table.written
    writers = [column.csv_writer() for column in table.columns]
    # Streamed rows hold what the database read: numbers and dates, which the csv module writes
    # as they are (None as empty, a date as ISO), so only text and times need a function; the
    # body and totals rows may carry labels anywhere and go through every column's writer.
    cells = [
        (index, column.csv_writer())
        for index, column in enumerate(table.columns)
        if column.kind in ("text", "datetime")
    ]

    def streamed(values: Sequence[Any]) -> list[Any]:
        row = list(values)
        for index, write in cells:
            row[index] = write(row[index])
        return row

    def written(values: Sequence[Any]) -> list[Any]:
        return [write(value) for write, value in zip(writers, values, strict=True)]

    rows = itertools.chain(
        map(streamed, table.streamed), (written(row.values) for row in [*table.rows, *table.footer])
    )
    while chunk := list(itertools.islice(rows, CSV_CHUNK_ROWS)):
        writer.writerows(chunk)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def csv_response(*, filename: str, table: ReportTable) -> StreamingHttpResponse:
    """The table as a CSV download, streamed: heading row, body rows, then the totals rows."""
    response = StreamingHttpResponse(_csv_chunks(table), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def wants_csv(request: HttpRequest) -> bool:
    return request.GET.get("format") == "csv"


class ReportHeading(Protocol):
    """What a report page says about the data it covers (stores.reports.ReportScope)."""

    @property
    def heading(self) -> str: ...


def report_render(
    request: HttpRequest,
    *,
    template: str,
    title: str,
    scope: ReportHeading,
    table: ReportTable | None = None,
    filename: str = "",
    **context: Any,
) -> HttpResponseBase:
    """The report page in the admin's look, or, with ?format=csv, its table as CSV."""
    if table is not None and wants_csv(request):
        return csv_response(filename=filename, table=table)
    return TemplateResponse(
        request,
        template,
        {
            **admin.site.each_context(request),
            "title": title,
            "subtitle": scope.heading,
            "scope": scope,
            "table": table,
            # Report tables need the width that the admin's app sidebar would take.
            "is_nav_sidebar_enabled": False,
            **context,
        },
    )
