"""The SVG chart builder: round ticks, escaped text, well-formed output, refusals."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from airtime.reports.charts import Chart, Series, nice_ceiling, render, sparse_labels, ticks

SVG = "{http://www.w3.org/2000/svg}"


def _chart(kind="columns", values=(3.0, 0.0, 5.0), names=("a <b> & c",)):
    return Chart(
        kind=kind,
        title="Title & <things>",
        description="Described",
        categories=("2026-03-01", "2026-03-02", "2026-03-03"),
        series=tuple(Series(name, tuple(values), tuple(str(value) for value in values)) for name in names),
        value_axis_label="Count",
    )


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 1), (0.7, 1), (1, 1), (1.2, 2), (2.1, 2.5), (3, 5), (7, 10), (120, 200)]
)
def test_nice_ceiling(value, expected):
    assert nice_ceiling(value) == expected


def test_ticks_cover_the_maximum_with_round_steps():
    assert ticks(9) == [0, 2.5, 5, 7.5, 10]
    assert ticks(0) == [0, 0.25, 0.5, 0.75, 1.0]


def test_sparse_labels_keep_about_six():
    labels = [str(day) for day in range(30)]
    shown = [label for label in sparse_labels(labels) if label]
    assert shown[0] == "0" and 5 <= len(shown) <= 6


@pytest.mark.parametrize("kind", ["columns", "lines", "bars"])
def test_each_kind_is_well_formed_with_escaped_text_and_titled_marks(kind):
    svg = render(_chart(kind, names=("a <b> & c", "second")))
    root = ET.fromstring(svg)
    assert root.find(f"{SVG}title").text == "Title & <things>"
    marks = [element for element in root.iter() if element.get("class") in ("bar", "point")]
    assert len(marks) == (6 if kind == "lines" else 4)
    assert all(mark.find(f"{SVG}title").text.startswith("2026-03-0") for mark in marks)
    # Two series: a legend names both, and their fills differ by pattern as well as colour.
    assert "second" in "".join(root.itertext())
    assert len(root.findall(f".//{SVG}pattern")) == 2


def test_nothing_to_show_says_so():
    root = ET.fromstring(render(_chart(values=(0.0, 0.0, 0.0))))
    assert [element.text for element in root.iter(f"{SVG}text")] == ["No data"]


def test_lines_leave_gaps_where_there_is_no_figure():
    root = ET.fromstring(render(_chart("lines", values=(1.0, None, 2.0))))
    assert len([point for point in root.iter() if point.get("class") == "point"]) == 2
    assert root.find(f".//{SVG}polyline") is None


def test_mismatched_or_negative_series_are_refused():
    with pytest.raises(ValueError):
        render(_chart(values=(1.0, 2.0)))
    with pytest.raises(ValueError):
        render(_chart(values=(1.0, -2.0, 3.0)))


@pytest.mark.parametrize("kind", ["columns", "lines"])
def test_a_year_of_days_draws_shapes_only_and_stays_light(kind):
    """365 days of 7 series: no title per mark (the table under the chart has the figures),
    so the chart stays small enough for a phone; a lone point between gaps still shows."""
    days = tuple(f"day {index}" for index in range(365))
    series = []
    for number in range(7):
        values = [float(index % 40 + number) for index in range(365)]
        values[100] = values[102] = None  # day 101 has no neighbour with a figure
        series.append(Series(f"series {number}", tuple(values), tuple(str(value) for value in values)))
    chart = Chart(
        kind=kind, title="Year", description="d", categories=days, series=tuple(series), value_axis_label="n"
    )
    svg = render(chart)
    root = ET.fromstring(svg)
    assert len(svg) < 150_000, len(svg)
    assert not root.findall(f".//{SVG}g[@class='plot']//{SVG}title")
    if kind == "columns":
        paths = root.findall(f".//{SVG}g[@class='plot']/{SVG}path")
        drawn = [sum(1 for value in item.values if value) for item in series]
        assert [path.get("d").count("z") for path in paths] == drawn
    else:
        marks = [element for element in root.iter() if element.get("data-value")]
        assert not marks and svg.count("<polyline") >= 7
        lone = root.findall(f".//{SVG}g[@class='series']/*")
        assert len([element for element in lone if not element.tag.endswith("polyline")]) == 7
