"""Small server-side SVG charts: stacked columns over days, lines over days, stacked
horizontal bars over named categories.

Made for a 375-px phone: a 360-unit-wide viewBox that scales to its container, 12-unit text,
every value also in a ``<title>`` (shown on hover and read by screen readers) and in a
``data-value`` attribute, series told apart by a pattern or marker shape as well as by
colour, colours with at least 3:1 contrast against white (WCAG 1.4.11). The markup is built
with ElementTree, so it is always well-formed XML and every text is escaped.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
WIDTH = 360
FONT_SIZE = 12
INK = "#1b1f24"
MUTED = "#5b6470"
GRID = "#d9dee5"
# Contrast against white: each at least 3:1 (most above 4.5:1).
PALETTE = ("#0b63ce", "#b35900", "#1a7f37", "#8250df", "#cf222e", "#4d5966", "#006d75", "#9a6700")
# A white mark drawn over each series' colour, so two series never differ by colour alone.
PATTERNS = ("solid", "diagonal", "dots", "horizontal", "crosshatch", "vertical", "antidiagonal", "grid")
MARKERS = ("circle", "square", "triangle", "diamond")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
CATEGORIES_MAX = 400
# Above this many categories (about a quarter of days) a column or point is narrower than a
# finger and a title per mark makes a chart of a year weigh over a megabyte: such charts
# draw only the shapes, and their figures are in the table under them.
DETAILED_CATEGORIES_MAX = 92
SERIES_MAX = len(PALETTE)

ChartKind = Literal["columns", "lines", "bars"]


@dataclass(frozen=True)
class Series:
    """One named series: a value per category (None: no figure) and its text for people."""

    name: str
    values: tuple[float | None, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Chart:
    """What to draw. ``categories`` are full names (used in titles); ``axis_labels`` the
    short ones under the axis (empty strings are skipped)."""

    kind: ChartKind
    title: str
    description: str
    categories: tuple[str, ...]
    series: tuple[Series, ...]
    value_axis_label: str
    category_axis_label: str = ""
    axis_labels: tuple[str, ...] = ()
    tick_format: Callable[[float], str] = field(default=lambda value: f"{value:g}")
    # Text shown at the end of each horizontal bar (the category's total, formatted).
    totals: tuple[str, ...] = ()
    empty_text: str = "No data"
    element_id: str = "chart"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^n at or above ``value`` (1 for nothing to show)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value * (1 - 1e-12):
            return candidate
    return 10.0 ** (exponent + 1)  # pragma: no cover - the loop always returns


def ticks(maximum: float, count: int = 4) -> list[float]:
    """``count`` + 1 evenly spaced, round tick values from 0 to at least ``maximum``."""
    step = nice_ceiling(maximum / count) if maximum > 0 else 0.25
    return [step * index for index in range(count + 1)]


def text_width(text: str) -> float:
    """A rough width of ``text`` at FONT_SIZE: wide (CJK) characters count double."""
    return sum(FONT_SIZE if ord(character) > 0x2E7F else FONT_SIZE * 0.58 for character in text)


def _format(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _sub(parent: ET.Element, tag: str, text: str | None = None, /, **attributes: object) -> ET.Element:
    element = ET.SubElement(
        parent, tag, {name.rstrip("_").replace("_", "-"): str(value) for name, value in attributes.items()}
    )
    if text is not None:
        element.text = text
    return element


PATTERN_MARKS = {
    "diagonal": "M-1,1 l2,-2 M0,6 l6,-6 M5,7 l2,-2",
    "antidiagonal": "M-1,5 l2,2 M0,0 l6,6 M5,-1 l2,2",
    "horizontal": "M0,3 h6",
    "vertical": "M3,0 v6",
    "crosshatch": "M0,0 l6,6 M6,0 l-6,6",
    "grid": "M0,3 h6 M3,0 v6",
}


def _pattern(defs: ET.Element, chart_id: str, index: int) -> str:
    """Define the fill of series ``index`` (its colour plus its white mark); returns a url()."""
    kind = PATTERNS[index % len(PATTERNS)]
    pattern_id = f"{chart_id}-fill-{index}"
    pattern = _sub(defs, "pattern", id=pattern_id, width=6, height=6, patternUnits="userSpaceOnUse")
    _sub(pattern, "rect", width=6, height=6, fill=PALETTE[index % len(PALETTE)])
    if kind in PATTERN_MARKS:
        _sub(pattern, "path", d=PATTERN_MARKS[kind], stroke="#fff", stroke_width=1.2)
    elif kind == "dots":
        _sub(pattern, "circle", cx=3, cy=3, r=1.2, fill="#fff")
    return f"url(#{pattern_id})"


def _points(*pairs: tuple[float, float]) -> str:
    return " ".join(f"{_format(x)},{_format(y)}" for x, y in pairs)


def _marker(parent: ET.Element, index: int, x: float, y: float, colour: str) -> ET.Element:
    """A point of series ``index``: circle, square, triangle or diamond (shape tells series apart)."""
    shape = MARKERS[index % len(MARKERS)]
    size = 3.5
    if shape == "circle":
        element = _sub(parent, "circle", cx=_format(x), cy=_format(y), r=size)
    elif shape == "square":
        element = _sub(
            parent, "rect", x=_format(x - size), y=_format(y - size), width=size * 2, height=size * 2
        )
    elif shape == "triangle":
        corners: tuple[tuple[float, float], ...] = (
            (x, y - size - 1),
            (x - size - 1, y + size),
            (x + size + 1, y + size),
        )
        element = _sub(parent, "polygon", points=_points(*corners))
    else:
        corners = ((x, y - size - 1), (x + size + 1, y), (x, y + size + 1), (x - size - 1, y))
        element = _sub(parent, "polygon", points=_points(*corners))
    for name, value in (("fill", colour), ("stroke", "#fff"), ("stroke-width", "1"), ("class", "point")):
        element.set(name, value)
    return element


def _legend(svg: ET.Element, chart: Chart, fills: list[str], top: float) -> float:
    """Lay the legend out in wrapped rows from ``top``; returns the y below it."""
    if len(chart.series) < 2 and chart.kind != "lines":
        return top
    legend = _sub(svg, "g", class_="legend")
    x, y = 0.0, top + FONT_SIZE
    for index, series in enumerate(chart.series):
        width = 16 + text_width(series.name) + 14
        if x > 0 and x + width > WIDTH:
            x, y = 0.0, y + FONT_SIZE + 8
        if chart.kind == "lines":
            colour = PALETTE[index % len(PALETTE)]
            _sub(
                legend,
                "line",
                x1=x,
                y1=_format(y - 4),
                x2=x + 14,
                y2=_format(y - 4),
                stroke=colour,
                stroke_width=2,
                stroke_dasharray=DASHES[index % len(DASHES)] or "none",
            )
            _marker(legend, index, x + 7, y - 4, colour).set("class", "legend-marker")
        else:
            _sub(
                legend,
                "rect",
                x=x,
                y=_format(y - 10),
                width=12,
                height=12,
                fill=fills[index],
                stroke=INK,
                stroke_width=0.5,
            )
        _sub(legend, "text", series.name, x=_format(x + 18), y=_format(y), fill=INK)
        x += width
    return y + 8


def _svg_root(chart: Chart) -> tuple[ET.Element, ET.Element]:
    svg = ET.Element(
        "svg",
        {
            "xmlns": SVG_NAMESPACE,
            "class": f"chart chart-{chart.kind}",
            "role": "img",
            "aria-labelledby": f"{chart.element_id}-title {chart.element_id}-desc",
            "font-size": str(FONT_SIZE),
            "font-family": "system-ui, sans-serif",
        },
    )
    _sub(svg, "title", chart.title, id=f"{chart.element_id}-title")
    _sub(svg, "desc", chart.description, id=f"{chart.element_id}-desc")
    defs = _sub(svg, "defs")
    return svg, defs


def _finish(svg: ET.Element, height: float) -> str:
    svg.set("viewBox", f"0 0 {WIDTH} {_format(height)}")
    svg.set("width", "100%")
    return ET.tostring(svg, encoding="unicode")


def _has_data(chart: Chart) -> bool:
    return any(value for series in chart.series for value in series.values if value)


def _check(chart: Chart) -> None:
    if len(chart.categories) > CATEGORIES_MAX:
        raise ValueError(f"at most {CATEGORIES_MAX} categories per chart")
    if len(chart.series) > SERIES_MAX:
        raise ValueError(f"at most {SERIES_MAX} series per chart")
    for series in chart.series:
        if len(series.values) != len(chart.categories) or len(series.labels) != len(chart.categories):
            raise ValueError(f"series {series.name!r} does not have one value per category")
        if any(value is not None and value < 0 for value in series.values) and chart.kind != "lines":
            raise ValueError("stacked charts take no negative values")


def render(chart: Chart) -> str:
    """The chart as an ``<svg>`` element (a string of well-formed XML)."""
    _check(chart)
    if chart.kind == "bars":
        return _render_bars(chart)
    return _render_over_categories(chart)


def _render_empty(svg: ET.Element, chart: Chart) -> str:
    _sub(svg, "text", chart.empty_text, x=WIDTH / 2, y=40, fill=MUTED, text_anchor="middle", class_="empty")
    return _finish(svg, 64)


def _render_over_categories(chart: Chart) -> str:
    """Columns (stacked) or lines, with a value axis on the left and categories below."""
    svg, defs = _svg_root(chart)
    if not _has_data(chart):
        return _render_empty(svg, chart)
    fills = [_pattern(defs, chart.element_id, index) for index in range(len(chart.series))]
    count = len(chart.categories)
    if chart.kind == "columns":
        peak = max(sum(series.values[index] or 0 for series in chart.series) for index in range(count))
    else:
        peak = max(value for series in chart.series for value in series.values if value is not None)
    tick_values = ticks(peak)
    top_value = tick_values[-1]
    tick_texts = [chart.tick_format(value) for value in tick_values]
    left = max(28.0, max(text_width(text) for text in tick_texts) + 8)
    top, plot_height = 22.0, 150.0
    right = WIDTH - 6
    plot_width = right - left
    bottom = top + plot_height

    def y_of(value: float) -> float:
        return bottom - plot_height * value / top_value

    _sub(svg, "text", chart.value_axis_label, x=0, y=FONT_SIZE, fill=INK, class_="axis-label")
    axis = _sub(svg, "g", class_="value-axis")
    for tick_value, text in zip(tick_values, tick_texts, strict=True):
        y = y_of(tick_value)
        _sub(axis, "line", x1=_format(left), y1=_format(y), x2=_format(right), y2=_format(y), stroke=GRID)
        _sub(axis, "text", text, x=_format(left - 4), y=_format(y + 4), fill=MUTED, text_anchor="end")
    band = plot_width / count
    labels = chart.axis_labels or chart.categories
    category_axis = _sub(svg, "g", class_="category-axis")
    for index, label in enumerate(labels):
        if label:
            _sub(
                category_axis,
                "text",
                label,
                x=_format(left + band * (index + 0.5)),
                y=_format(bottom + FONT_SIZE + 4),
                fill=MUTED,
                text_anchor="middle",
            )
    _sub(svg, "line", x1=_format(left), y1=_format(bottom), x2=_format(right), y2=_format(bottom), stroke=INK)
    below = bottom + FONT_SIZE + 8
    if chart.category_axis_label:
        below += FONT_SIZE + 4
        _sub(
            svg,
            "text",
            chart.category_axis_label,
            x=_format(left + plot_width / 2),
            y=_format(below),
            fill=INK,
            text_anchor="middle",
            class_="axis-label",
        )
    plot = _sub(svg, "g", class_="plot")
    detailed = count <= DETAILED_CATEGORIES_MAX
    if chart.kind == "columns":
        bar_width = max(1.0, band * 0.72)
        # Without detail, each series' columns are one path ("M x,y h w v h h -w z" each).
        outlines: list[list[str]] = [[] for _ in chart.series]
        for index, category in enumerate(chart.categories):
            stacked = 0.0
            for series_index, series in enumerate(chart.series):
                value = series.values[index]
                if not value:
                    continue
                x = left + band * index + (band - bar_width) / 2
                y_top = y_of(stacked + value)
                height = max(0.5, y_of(stacked) - y_top)
                stacked += value
                if not detailed:
                    outlines[series_index].append(
                        f"M{_format(x)},{_format(y_top)}h{_format(bar_width)}v{_format(height)}"
                        f"h-{_format(bar_width)}z"
                    )
                    continue
                bar = _sub(
                    plot,
                    "rect",
                    class_="bar",
                    x=_format(x),
                    y=_format(y_top),
                    width=_format(bar_width),
                    height=_format(height),
                    fill=fills[series_index],
                    data_series=series.name,
                    data_category=category,
                    data_value=_format(value),
                )
                _sub(bar, "title", f"{category} · {series.name}: {series.labels[index]}")
        for series_index, outline in enumerate(outlines):
            if outline:
                _sub(
                    plot,
                    "path",
                    d="".join(outline),
                    fill=fills[series_index],
                    data_series=chart.series[series_index].name,
                )
    else:
        for series_index, series in enumerate(chart.series):
            colour = PALETTE[series_index % len(PALETTE)]
            group = _sub(plot, "g", class_="series", data_series=series.name)
            runs: list[list[tuple[float, float]]] = [[]]
            for index, value in enumerate(series.values):
                if value is None:
                    runs.append([])
                    continue
                runs[-1].append((left + band * (index + 0.5), y_of(value)))
            for run in runs:
                if len(run) > 1:
                    _sub(
                        group,
                        "polyline",
                        points=" ".join(f"{_format(x)},{_format(y)}" for x, y in run),
                        fill="none",
                        stroke=colour,
                        stroke_width=2,
                        stroke_dasharray=DASHES[series_index % len(DASHES)] or "none",
                    )
            for index, value in enumerate(series.values):
                if value is None:
                    continue
                if not detailed:
                    alone = all(
                        neighbour < 0 or neighbour >= count or series.values[neighbour] is None
                        for neighbour in (index - 1, index + 1)
                    )
                    if alone:  # a point no line passes through must still show
                        _marker(group, series_index, left + band * (index + 0.5), y_of(value), colour)
                    continue
                point = _marker(group, series_index, left + band * (index + 0.5), y_of(value), colour)
                point.set("data-category", chart.categories[index])
                point.set("data-value", _format(value))
                _sub(point, "title", f"{chart.categories[index]} · {series.name}: {series.labels[index]}")
    height = _legend(svg, chart, fills, below + 6)
    return _finish(svg, height + 4)


def _render_bars(chart: Chart) -> str:
    """Horizontal stacked bars, one row per category: its name above, its total at the end."""
    svg, defs = _svg_root(chart)
    if not _has_data(chart):
        return _render_empty(svg, chart)
    fills = [_pattern(defs, chart.element_id, index) for index in range(len(chart.series))]
    count = len(chart.categories)
    totals = [sum(series.values[index] or 0 for series in chart.series) for index in range(count)]
    total_texts = chart.totals or tuple(chart.tick_format(total) for total in totals)
    value_room = max(text_width(text) for text in total_texts) + 6
    plot_width = WIDTH - value_room
    peak = max(totals)
    _sub(svg, "text", chart.value_axis_label, x=0, y=FONT_SIZE, fill=INK, class_="axis-label")
    plot = _sub(svg, "g", class_="plot")
    row_height = FONT_SIZE + 22
    y = FONT_SIZE + 8
    for index, category in enumerate(chart.categories):
        _sub(plot, "text", category, x=0, y=_format(y + FONT_SIZE), fill=INK, class_="category")
        bar_top = y + FONT_SIZE + 4
        x = 0.0
        for series_index, series in enumerate(chart.series):
            value = series.values[index]
            if not value:
                continue
            width = plot_width * value / peak
            bar = _sub(
                plot,
                "rect",
                class_="bar",
                x=_format(x),
                y=_format(bar_top),
                width=_format(max(0.5, width)),
                height=14,
                fill=fills[series_index],
                data_series=series.name,
                data_category=category,
                data_value=_format(value),
            )
            _sub(bar, "title", f"{category} · {series.name}: {series.labels[index]}")
            x += width
        _sub(
            plot,
            "text",
            total_texts[index],
            x=_format(x + 4),
            y=_format(bar_top + 11),
            fill=INK,
            class_="total",
        )
        y += row_height
    height = _legend(svg, chart, fills, y)
    return _finish(svg, height + 4)


def sparse_labels(labels: Sequence[str], shown_max: int = 6) -> tuple[str, ...]:
    """Keep about ``shown_max`` evenly spaced labels (always the first), blank the rest, so
    dates under a 30-day axis do not overlap on a phone."""
    count = len(labels)
    if count <= shown_max:
        return tuple(labels)
    step = math.ceil(count / shown_max)
    return tuple(label if index % step == 0 else "" for index, label in enumerate(labels))
