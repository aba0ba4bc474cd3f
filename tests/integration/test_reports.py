"""Report figures on a small known data set, on SQLite and PostgreSQL; the CSV is the chart's data."""

from __future__ import annotations

import csv
import io
import random
import statistics
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from airtime.reports import charts, queries
from airtime.reports import service as report_service
from airtime.reports.service import REPORTS, parse_request, section_csv, section_for
from airtime.topups.models import OrderStatus
from tests import factories, report_helpers
from tests.report_helpers import (
    AGENT_COMMISSION,
    AGENT_SALES,
    AGENT_TOTALS,
    CREDIT_TIME,
    SUCCESS_RATE,
    TOPUPS_BY_CHANNEL,
)

SVG = "{http://www.w3.org/2000/svg}"


def _request(slug_currency="GBP", language="en"):
    return parse_request(
        start="2026-03-01",
        end="2026-03-03",
        currency=slug_currency,
        default_currency="GBP",
        language=language,
    )


def _csv(report, key):
    return list(csv.reader(io.StringIO(section_csv(section_for(report, key)))))


def _build(uow, settings, slug, language="en"):
    with uow() as session:
        report_helpers.seed(session, settings)
    with uow() as session:
        return REPORTS[slug].build(session, _request(language=language))


def test_topups_per_day_by_channel_provider_and_success_rate(uow, settings):
    report = _build(uow, settings, "topups")
    by_channel = _csv(report, "by-channel")
    assert by_channel[0] == ["day", "channel", "credited_count", "credited_amount"]
    assert by_channel[1:] == TOPUPS_BY_CHANNEL
    assert _csv(report, "by-provider")[1:] == [
        ["2026-03-01", "sandbox", "2", "30.00"],
        ["2026-03-01", "stripe", "1", "5.00"],
        ["2026-03-02", "voucher", "1", "10.00"],
    ]
    assert _csv(report, "success-rate")[1:] == SUCCESS_RATE
    assert [(figure.label, figure.value) for figure in report.figures] == [
        ("Credited top-ups", "4"),
        ("Credited amount", "£45.00"),
        ("Success rate", "66.7%"),
    ]


def test_payment_to_credit_percentiles(uow, settings):
    report = _build(uow, settings, "credit-time")
    assert _csv(report, "credit-time")[1:] == CREDIT_TIME


def test_voucher_inventory_by_state_and_outlet(uow, settings):
    report = _build(uow, settings, "vouchers")
    assert _csv(report, "by-state")[1:] == [
        ["generated", "2", "10.00"],
        ["active", "2", "10.00"],
        ["redeemed", "1", "5.00"],
        ["expired", "0", "0.00"],
        ["blocked", "1", "5.00"],
    ]
    assert sorted(_csv(report, "by-outlet")[1:]) == [
        ["", "blocked", "1", "5.00"],
        ["", "generated", "2", "10.00"],
        ["SHOP-1", "active", "2", "10.00"],
        ["SHOP-1", "redeemed", "1", "5.00"],
    ]


def test_lines_by_state_and_expiring(uow, settings):
    report = _build(uow, settings, "lines")
    assert _csv(report, "by-state")[1:] == [
        ["pending_activation", "0"],
        ["active", "3"],
        ["grace", "1"],
        ["suspended", "1"],
        ["terminated", "0"],
    ]
    expiring = _csv(report, "expiring")[1:]
    assert len(expiring) == 31 and expiring[-1][2] == "2"
    assert {row[0]: row[1] for row in expiring if row[1] != "0"} == {
        (date.today() + timedelta(days=3)).isoformat(): "1",
        (date.today() + timedelta(days=10)).isoformat(): "1",
    }
    assert [figure.value for figure in report.figures] == ["3", "1", "2"]


def test_breakage_and_promotion_cost(uow, settings):
    with uow() as session:
        report_helpers.seed(session, settings)
    with uow() as session:
        breakage = REPORTS["breakage"].build(session, _request())
        promotions = REPORTS["promotions"].build(session, _request())
    assert _csv(breakage, "breakage")[1:] == [
        ["2026-03-01", "lines", "2.50"],
        ["2026-03-02", "vouchers", "10.00"],
    ]
    assert breakage.figures[0].value == "£12.50"
    assert _csv(promotions, "cost")[1:] == [
        ["2026-03-01", "1.00", "0.00", "1.00"],
        ["2026-03-02", "0.00", "0.40", "-0.40"],
    ]
    assert _csv(promotions, "by-promotion")[1:] == [["SPRING", "Spring bonus", "1", "1.00"]]
    assert [figure.value for figure in promotions.figures] == ["£1.00", "£0.40", "£0.60"]


def _agents_report(uow, settings, language="en"):
    with uow() as session:
        report_helpers.seed_agent_sales(session, settings)
    with uow() as session:
        return REPORTS["agents"].build(session, _request(language=language))


def test_agent_sales_per_day_commission_and_by_agent(uow, settings):
    report = _agents_report(uow, settings)
    assert _csv(report, "sales") == [["day", "agent", "sales", "amount"], *AGENT_SALES]
    assert _csv(report, "commission") == [
        ["day", "sales", "amount", "seller_commission", "parent_commission", "commission_total"],
        *AGENT_COMMISSION,
    ]
    assert _csv(report, "by-agent")[1:] == AGENT_TOTALS
    assert [(figure.label, figure.value) for figure in report.figures] == [
        ("Agent sales", "5"),
        ("Amount sold", "£65.00"),
        ("Commission to selling agents", "£2.65"),
        ("Commission to parent agents", "£0.60"),
        ("Commission in total", "£3.25"),
    ]
    # The CSV is the table: the same rows, in the same order, as the page shows.
    for section in report.sections:
        assert _csv(report, section.key)[1:] == [[str(value) for value in row] for row in section.rows]


def test_agent_sales_chart_draws_the_table_and_groups_the_other_agents(uow, settings, monkeypatch):
    monkeypatch.setattr(report_service, "AGENT_SERIES_MAX", 1)
    report = _agents_report(uow, settings)
    # SUB-1 sold most; SOLO and HUB together are "others", still adding up to each day's sales.
    assert _csv(report, "sales")[1:] == [
        ["2026-03-01", "SUB-1", "2", "30.00"],
        ["2026-03-01", "(others)", "1", "5.00"],
        ["2026-03-02", "(others)", "2", "30.00"],
    ]
    assert _csv(report, "by-agent")[1:] == AGENT_TOTALS
    root = ET.fromstring(charts.render(section_for(report, "sales").chart))
    drawn = sorted(
        (bar.get("data-category"), bar.get("data-series"), bar.get("data-value"))
        for bar in root.iter(f"{SVG}rect")
        if bar.get("class") == "bar"
    )
    assert drawn == [
        ("2026-03-01", "Other agents", "5"),
        ("2026-03-01", "SUB-1", "30"),
        ("2026-03-02", "Other agents", "30"),
    ]
    commission = ET.fromstring(charts.render(section_for(report, "commission").chart))
    stacked = sorted(
        (bar.get("data-category"), bar.get("data-series"), bar.get("data-value"))
        for bar in commission.iter(f"{SVG}rect")
        if bar.get("class") == "bar"
    )
    assert stacked == [
        ("2026-03-01", "Parent agents", "0.6"),
        ("2026-03-01", "Selling agents", "1.15"),
        ("2026-03-02", "Selling agents", "1.5"),
    ]


def test_agent_report_in_chinese_and_in_another_currency(uow, settings):
    report = _agents_report(uow, settings, language="zh_Hans")
    assert report.title == "代理商销售与佣金"
    assert _csv(report, "sales")[1:] == AGENT_SALES
    with uow() as session:
        dollars = REPORTS["agents"].build(
            session,
            parse_request(
                start="2026-03-01", end="2026-03-03", currency="USD", default_currency="GBP", language="en"
            ),
        )
    assert _csv(dollars, "by-agent")[1:] == [["USD-1", "Dollar agent", "", "1", "10.00", "0.50", "0.50"]]


def test_every_chart_is_well_formed_svg_with_one_bar_or_point_per_figure(uow, settings):
    with uow() as session:
        report_helpers.seed(session, settings)
        report_helpers.seed_agent_sales(session, settings)
    with uow() as session:
        built = {slug: spec.build(session, _request(language="zh_Hans")) for slug, spec in REPORTS.items()}
    for report in built.values():
        for section in report.sections:
            root = ET.fromstring(charts.render(section.chart))
            assert root.tag == f"{SVG}svg" and root.get("role") == "img"
            assert root.find(f"{SVG}title").text == section.chart.title
            marks = [element for element in root.iter() if element.get("class") in ("bar", "point")]
            expected = sum(
                1 for series in section.chart.series for value in series.values if value is not None
            )
            if section.chart.kind != "lines":
                expected = sum(1 for series in section.chart.series for value in series.values if value)
            assert len(marks) == expected, (report.slug, section.key)
            for mark in marks:
                assert mark.find(f"{SVG}title").text


def test_the_chart_shows_exactly_the_csv_figures(uow, settings):
    report = _build(uow, settings, "topups")
    root = ET.fromstring(charts.render(section_for(report, "by-channel").chart))
    drawn = sorted(
        [bar.get("data-category"), bar.get("data-series"), bar.get("data-value")]
        for bar in root.iter(f"{SVG}rect")
        if bar.get("class") == "bar"
    )
    assert drawn == sorted([day, channel, count] for day, channel, count, _amount in TOPUPS_BY_CHANNEL)
    rate = ET.fromstring(charts.render(section_for(report, "success-rate").chart))
    points = [
        (point.get("data-category"), point.get("data-value"))
        for point in rate.iter()
        if point.get("class") == "point"
    ]
    assert points == [("2026-03-01", "75"), ("2026-03-02", "50")]


def test_percentiles_match_percentile_cont_on_random_durations(uow, settings):
    """Window-function percentiles (SQLite) and percentile_cont (PostgreSQL) both equal
    linear interpolation between closest ranks."""
    generator = random.Random(7)
    day = date(2026, 4, 1)
    durations = [generator.randint(0, 600) + generator.random() for _ in range(57)]
    with uow() as session:
        line = factories.line(session, settings)
        for index, seconds in enumerate(durations):
            report_helpers._order(
                session,
                line,
                created=report_helpers.at(day, 1 + index % 20),
                channel="web",
                provider="sandbox",
                status=OrderStatus.CREDITED,
                credit_after_seconds=round(seconds, 3),
            )
    with uow() as session:
        rows = queries.credit_times(session, period=queries.Period(day, day))
    expected = statistics.quantiles([round(value, 3) for value in durations], n=20, method="inclusive")
    assert len(rows) == 1 and rows[0].credited_count == 57
    assert rows[0].p50_seconds == pytest.approx(
        statistics.median([round(value, 3) for value in durations]), abs=1e-3
    )
    assert rows[0].p95_seconds == pytest.approx(expected[18], abs=1e-3)


@pytest.mark.parametrize(
    ("start", "end", "currency"),
    [
        ("2026-13-01", "", "GBP"),
        ("2026-03-05", "2026-03-01", "GBP"),
        ("2024-01-01", "2026-01-01", "GBP"),
        ("", "", "XXQ"),
    ],
)
def test_bad_ranges_and_currencies_are_refused(start, end, currency):
    from airtime.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        parse_request(start=start, end=end, currency=currency, default_currency="GBP", language="en")
