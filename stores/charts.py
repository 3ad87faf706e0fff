"""Server-side SVG charts for the reports: no JavaScript and nothing fetched from elsewhere."""

# Clinics are often offline, so a chart is markup in the page itself. Colours come from classes
# that static/reports/reports.css styles with the admin's own colour variables (dark mode too).

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

Number = int | float | Decimal

WIDTH = 900
BAR_HEIGHT = 22
BAR_GAP = 6
LABEL_WIDTH = 230
VALUE_WIDTH = 90
AXIS_HEIGHT = 26
LINE_HEIGHT = 280
LINE_MARGIN_LEFT = 80
LINE_MARGIN_RIGHT = 44
LINE_MARGIN_TOP = 14
LINE_MARGIN_BOTTOM = 44
# Rough width of a character of an 11px label, to keep x labels from overlapping.
CHARACTER_WIDTH = 6.5


def _number_text(value: Number) -> str:
    """A number as a chart label: thousands separated, two decimals unless it is whole."""
    if isinstance(value, Decimal | float) and value != int(value):
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering `low`..`high` (1, 2, 2.5 or 5 times 10^n apart)."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    last = math.ceil(high / step) * step
    return [first + index * step for index in range(round((last - first) / step) + 1)]


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg class="report-chart-svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
        + "".join(body)
        + "</svg>"
    )


def _figure(title: str, svg: str, legend: str = "") -> SafeString:
    # Every label went through escape(); numbers are formatted here.
    return mark_safe(  # noqa: S308
        f'<figure class="report-chart"><figcaption>{escape(title)}</figcaption>'
        f"{svg}{legend}</figure>"
    )


def bar_chart(*, title: str, bars: Sequence[tuple[str, Number]], unit: str = "") -> SafeString:
    """A horizontal bar chart, one labelled bar per (label, value), each showing its value."""
    values = [float(value) for _, value in bars]
    ticks = _nice_ticks(min([0.0, *values]), max([0.0, *values]))
    low, high = ticks[0], ticks[-1]
    plot_left, plot_width = LABEL_WIDTH, WIDTH - LABEL_WIDTH - VALUE_WIDTH
    height = len(bars) * (BAR_HEIGHT + BAR_GAP) + AXIS_HEIGHT + BAR_GAP

    def x(value: float) -> float:
        return plot_left + (value - low) / (high - low) * plot_width

    plot_bottom = len(bars) * (BAR_HEIGHT + BAR_GAP) + BAR_GAP
    body = []
    for tick in ticks:
        body.append(
            f'<line class="chart-grid" x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="0" '
            f'y2="{plot_bottom}"/>'
            f'<text class="chart-tick" x="{x(tick):.1f}" y="{plot_bottom + 16}" '
            f'text-anchor="middle">{_number_text(tick)}</text>'
        )
    suffix = f" {unit}" if unit else ""
    for position, (label, value) in enumerate(bars):
        top = BAR_GAP + position * (BAR_HEIGHT + BAR_GAP)
        middle = top + BAR_HEIGHT / 2 + 4
        start, end = sorted((x(0), x(float(value))))
        body.append(
            f'<text class="chart-label" x="{plot_left - 8}" y="{middle:.1f}" '
            f'text-anchor="end">{escape(label)}</text>'
            f'<rect class="chart-bar" x="{start:.1f}" y="{top}" width="{end - start:.1f}" '
            f'height="{BAR_HEIGHT}"><title>{escape(label)}: {_number_text(value)}{escape(suffix)}'
            "</title></rect>"
            f'<text class="chart-value" x="{end + 6:.1f}" y="{middle:.1f}">'
            f"{_number_text(value)}</text>"
        )
    body.append(
        f'<line class="chart-axis" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="0" y2="{plot_bottom}"/>'
    )
    return _figure(title, _svg(WIDTH, height, title, body))


def _segments(points: list[str], partial: list[bool]) -> list[str]:
    """The line through `points`: solid runs between whole periods, dashed into a partial one."""
    body, run = [], points[:1]
    for position in range(1, len(points)):
        if partial[position - 1] or partial[position]:
            if len(run) > 1:
                body.append(f'points="{" ".join(run)}"')
            x1, y1 = points[position - 1].split(",")
            x2, y2 = points[position].split(",")
            body.append(f'x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"')
            run = [points[position]]
        else:
            run.append(points[position])
    if len(run) > 1:
        body.append(f'points="{" ".join(run)}"')
    return body


def line_chart(
    *,
    title: str,
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[Number]],
    notes: Sequence[str] = (),
) -> SafeString:
    """A line chart over time: one line per series, a point per x label, y axis with ticks.

    A non-empty note marks its period partial (the range covers only part of it): its point is
    hollow, the line into it dashed, and the note shows under the chart, so a short period does
    not read as a drop."""
    partial = [bool(note) for note in notes] + [False] * (len(x_labels) - len(notes))
    values = [float(value) for points in series.values() for value in points]
    ticks = _nice_ticks(min([0.0, *values]), max([0.0, *values]))
    low, high = ticks[0], ticks[-1]
    plot_width = WIDTH - LINE_MARGIN_LEFT - LINE_MARGIN_RIGHT
    plot_height = LINE_HEIGHT - LINE_MARGIN_TOP - LINE_MARGIN_BOTTOM
    count = max(len(x_labels), 1)

    def x(position: int) -> float:
        if count == 1:
            return LINE_MARGIN_LEFT + plot_width / 2
        return LINE_MARGIN_LEFT + position / (count - 1) * plot_width

    def y(value: float) -> float:
        return LINE_MARGIN_TOP + (high - value) / (high - low) * plot_height

    body = []
    for tick in ticks:
        body.append(
            f'<line class="chart-grid" x1="{LINE_MARGIN_LEFT}" '
            f'x2="{WIDTH - LINE_MARGIN_RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text class="chart-tick" x="{LINE_MARGIN_LEFT - 8}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{_number_text(tick)}</text>'
        )
    body.append(
        f'<line class="chart-axis" x1="{LINE_MARGIN_LEFT}" x2="{WIDTH - LINE_MARGIN_RIGHT}" '
        f'y1="{y(0):.1f}" y2="{y(0):.1f}"/>'
    )
    widest = max((len(label) for label in x_labels), default=1) * CHARACTER_WIDTH + 12
    every = max(1, math.ceil(count * widest / plot_width))
    for position, label in enumerate(x_labels):
        if position % every == 0:
            body.append(
                f'<text class="chart-tick" x="{x(position):.1f}" '
                f'y="{LINE_HEIGHT - LINE_MARGIN_BOTTOM + 18}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    legend = []
    for number, (name, points) in enumerate(series.items()):
        css = f"series-{number % 4}"
        coordinates = [
            f"{x(position):.1f},{y(float(value)):.1f}" for position, value in enumerate(points)
        ]
        for segment in _segments(coordinates, partial):
            if segment.startswith("points"):
                body.append(f'<polyline class="chart-line {css}" {segment}/>')
            else:
                body.append(
                    f'<line class="chart-line chart-partial {css}" {segment} '
                    'stroke-dasharray="5 4"/>'
                )
        for position, value in enumerate(points):
            label = notes[position] if partial[position] else x_labels[position]
            # Hollow: the presentation attributes lose to the stylesheet, a style does not.
            hollow = ' style="fill-opacity: 0.15; stroke-width: 1.5"' if partial[position] else ""
            stroke = ' stroke="currentColor"' if partial[position] else ""
            extra = " chart-partial" if partial[position] else ""
            body.append(
                f'<circle class="chart-point {css}{extra}" cx="{x(position):.1f}" '
                f'cy="{y(float(value)):.1f}" r="{4 if partial[position] else 3}"{hollow}{stroke}>'
                f"<title>{escape(name)}, {escape(label)}: {_number_text(value)}</title></circle>"
            )
        legend.append(f'<li><span class="chart-swatch {css}"></span>{escape(name)}</li>')
    partial_notes = "".join(
        f'<li class="chart-partial-note">{escape(note)}</li>' for note in notes if note
    )
    # Outside the f-strings: xgettext does not read messages inside them.
    notes_label = escape(gettext("Partial periods"))
    notes_heading = escape(gettext("Partly covered by the range, drawn hollow and dashed:"))
    note_list = (
        f'<ul class="chart-notes help" aria-label="{notes_label}">'
        f"<li>{notes_heading}</li>{partial_notes}</ul>"
        if partial_notes
        else ""
    )
    return _figure(
        title,
        _svg(WIDTH, LINE_HEIGHT, title, body),
        f'<ul class="chart-legend">{"".join(legend)}</ul>{note_list}',
    )
