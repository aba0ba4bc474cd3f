"""The reports: each one or more sections, and each section one table of figures from which
both its chart and its CSV download are made, so the two can never disagree."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from babel.numbers import format_decimal
from sqlalchemy.orm import Session

from airtime.accounts.models import LineState
from airtime.clock import today
from airtime.errors import NotFound, ValidationFailed
from airtime.i18n import N_, translations
from airtime.money import format_money, minor_unit_exponent, validate_currency
from airtime.reports import queries
from airtime.reports.charts import SERIES_MAX, Chart, ChartKind, Series, sparse_labels
from airtime.reports.queries import Period
from airtime.topups.models import Channel
from airtime.vouchers.models import VoucherState

DEFAULT_DAYS = 30
PERIOD_DAYS_MAX = 366
# A horizontal bar chart shows this many categories; the CSV has them all.
CHART_CATEGORIES_MAX = 20
EXPIRY_HORIZONS_DAYS = (7, 30)
# The agents report draws this many agents by name and the rest as one "others" series: with
# it, one series per chart colour and pattern.
AGENT_SERIES_MAX = SERIES_MAX - 1
# The value of the "others" group in the table and CSV: never an agent code (codes start
# with a letter or digit).
OTHER_AGENTS = "(others)"
# Who may open which report: care gets the operational ones (crediting speed, vouchers,
# lines), money figures stay with supervisors and admins.
MANAGER_ROLES = ("supervisor", "admin")
OPERATIONS_ROLES = ("care", "supervisor", "admin")
_BABEL_LOCALES = {"en": "en", "zh_Hans": "zh_Hans_CN"}
LINE_STATE_NAMES = {
    LineState.PENDING_ACTIVATION: N_("Not yet active"),
    LineState.ACTIVE: N_("Active"),
    LineState.GRACE: N_("Grace period"),
    LineState.SUSPENDED: N_("Suspended"),
    LineState.TERMINATED: N_("Terminated"),
}
VOUCHER_STATE_NAMES = {
    VoucherState.GENERATED: N_("Generated, not yet sold"),
    VoucherState.ACTIVE: N_("Sold, redeemable"),
    VoucherState.REDEEMED: N_("Redeemed"),
    VoucherState.EXPIRED: N_("Expired"),
    VoucherState.BLOCKED: N_("Blocked"),
}


@dataclass(frozen=True)
class Column:
    key: str  # the CSV header: stable, English, machine-readable
    heading: str  # shown on the page, translated
    numeric: bool = False


@dataclass
class Section:
    key: str
    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[object, ...]]
    chart: Chart


@dataclass
class Figure:
    label: str
    value: str


@dataclass
class Report:
    slug: str
    title: str
    sections: list[Section]
    figures: list[Figure] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class ReportRequest:
    period: Period
    currency: str
    language: str


@dataclass(frozen=True)
class ReportSpec:
    slug: str
    title: str  # N_-marked; translated where shown
    summary: str
    roles: tuple[str, ...]
    uses_period: bool
    uses_currency: bool
    build: Callable[[Session, ReportRequest], Report]


def parse_request(
    *, start: str, end: str, currency: str, default_currency: str, language: str
) -> ReportRequest:
    """Read the date range (default: the last 30 days to today) and currency; refuse bad ones."""
    try:
        last_day = date.fromisoformat(end) if end else today()
        first_day = date.fromisoformat(start) if start else last_day - timedelta(days=DEFAULT_DAYS - 1)
    except ValueError as error:
        raise ValidationFailed("Dates are written YYYY-MM-DD.", field="start") from error
    if first_day > last_day:
        raise ValidationFailed("The first day comes after the last day.", field="start")
    if (last_day - first_day).days + 1 > PERIOD_DAYS_MAX:
        raise ValidationFailed("Choose at most %(days)s days.", days=PERIOD_DAYS_MAX, field="start")
    return ReportRequest(
        period=Period(first_day, last_day),
        currency=validate_currency(currency or default_currency),
        language=language,
    )


class _Text:
    """Translation and number formatting for one report in one language."""

    def __init__(self, language: str, currency: str) -> None:
        self.language = language
        self.currency = currency
        self.gettext = translations(language).gettext
        self.locale = _BABEL_LOCALES.get(language, "en")
        self.exponent = minor_unit_exponent(currency)

    def name(self, names: dict[str, str], key: str) -> str:
        """The translated name of a state (marked with N_ where the names are listed)."""
        translate = self.gettext
        return translate(names.get(key, key))

    def count(self, value: float) -> str:
        return str(format_decimal(value, locale=self.locale))

    def money(self, amount_minor: int) -> str:
        return format_money(amount_minor, self.currency, self.language)

    def major(self, amount_minor: int) -> Decimal:
        """Minor units as a decimal amount of the currency (the CSV's and the chart's unit)."""
        return Decimal(amount_minor).scaleb(-self.exponent)

    def money_tick(self, value: float) -> str:
        return format_money(round(value * 10**self.exponent), self.currency, self.language).replace(".00", "")

    def seconds(self, value: float) -> str:
        if value >= 120:
            return self.gettext("%(minutes)s min") % {
                "minutes": format_decimal(round(value / 60, 1), locale=self.locale)
            }
        return self.gettext("%(seconds)s s") % {
            "seconds": format_decimal(round(value, 1), locale=self.locale)
        }

    def percent(self, value: float) -> str:
        return f"{value:g}%"


def _day_axis(days: Sequence[date]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    categories = tuple(day.isoformat() for day in days)
    return categories, sparse_labels([day.strftime("%m-%d") for day in days])


def _chart(
    kind: ChartKind,
    element_id: str,
    title: str,
    categories: tuple[str, ...],
    series: list[Series],
    text: _Text,
    *,
    value_axis_label: str,
    tick_format: Callable[[float], str],
    axis_labels: tuple[str, ...] = (),
    category_axis_label: str = "",
    totals: tuple[str, ...] = (),
) -> Chart:
    names = ", ".join(item.name for item in series)
    description = text.gettext("%(title)s: %(series)s. The figures are also in the table below.") % {
        "title": title,
        "series": names,
    }
    return Chart(
        kind=kind,
        title=title,
        description=description,
        categories=categories,
        series=tuple(series),
        value_axis_label=value_axis_label,
        category_axis_label=category_axis_label,
        axis_labels=axis_labels,
        tick_format=tick_format,
        totals=totals,
        empty_text=text.gettext("Nothing in this period."),
        element_id=element_id,
    )


def _pivot(
    rows: Sequence[tuple[str, str, float]], categories: Sequence[str], names: Sequence[str]
) -> dict[str, list[float]]:
    """(category, series, value) rows to one value list per series, zero where absent."""
    position = {category: index for index, category in enumerate(categories)}
    values = {name: [0.0] * len(categories) for name in names}
    for category, name, value in rows:
        values[name][position[category]] += value
    return values


def _top_series(totals: dict[str, float], limit: int) -> list[str]:
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    return ranked[:limit]


def topups_report(session: Session, request: ReportRequest) -> Report:
    text = _Text(request.language, request.currency)
    _ = text.gettext
    rows = queries.topups_by_day(session, period=request.period, currency=request.currency)
    days = request.period.days()
    categories, axis_labels = _day_axis(days)
    by_channel: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    by_provider: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    outcomes: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        day = row.day.isoformat()
        for totals in (by_channel[(day, row.channel)], by_provider[(day, row.provider)]):
            totals[0] += row.credited_count
            totals[1] += row.credited_amount_minor
        outcome = outcomes[day]
        outcome[0] += row.credited_count
        outcome[1] += row.failed_count
        outcome[2] += row.cancelled_count

    sections = []
    for key, grouped, group_heading, title, value_is_money in (
        ("by-channel", by_channel, _("Channel"), _("Credited top-ups per day by channel"), False),
        ("by-provider", by_provider, _("Provider"), _("Credited amount per day by payment provider"), True),
    ):
        figures_by_group = [
            (day, group, count, amount_minor)
            for (day, group), (count, amount_minor) in sorted(grouped.items())
            if count
        ]
        table_rows: list[tuple[object, ...]] = [
            (day, group, count, text.major(amount_minor))
            for day, group, count, amount_minor in figures_by_group
        ]
        plotted = [
            (day, group, float(text.major(amount_minor)) if value_is_money else float(count))
            for day, group, count, amount_minor in figures_by_group
        ]
        group_totals: dict[str, float] = defaultdict(float)
        for _day, group, value in plotted:
            group_totals[group] += value
        names = _top_series(group_totals, len(Channel.ALL))
        pivot = _pivot(plotted, categories, names)
        label = text.money_tick if value_is_money else text.count
        series = [
            Series(
                name,
                tuple(pivot[name]),
                tuple(
                    text.money(round(value * 10**text.exponent)) if value_is_money else text.count(value)
                    for value in pivot[name]
                ),
            )
            for name in names
        ]
        sections.append(
            Section(
                key=key,
                title=title,
                columns=(
                    Column("day", _("Day (UTC)")),
                    Column(key.removeprefix("by-"), group_heading),
                    Column("credited_count", _("Credited"), numeric=True),
                    Column(
                        "credited_amount",
                        _("Amount (%(currency)s)") % {"currency": request.currency},
                        numeric=True,
                    ),
                ),
                rows=table_rows,
                chart=_chart(
                    "columns",
                    f"chart-{key}",
                    title,
                    categories,
                    series,
                    text,
                    value_axis_label=(_("Amount (%(currency)s)") % {"currency": request.currency})
                    if value_is_money
                    else _("Top-ups"),
                    tick_format=label,
                    axis_labels=axis_labels,
                    category_axis_label=_("Day (UTC)"),
                ),
            )
        )
    rate_rows: list[tuple[object, ...]] = []
    rate_values: list[float | None] = []
    for day in categories:
        credited, failed, cancelled = outcomes.get(day, [0, 0, 0])
        finished = credited + failed + cancelled
        rate = round(100 * credited / finished, 1) if finished else None
        rate_values.append(rate)
        if finished:
            rate_rows.append((day, credited, failed, cancelled, rate))
    title = _("Success rate per day")
    sections.append(
        Section(
            key="success-rate",
            title=title,
            columns=(
                Column("day", _("Day (UTC)")),
                Column("credited", _("Credited"), numeric=True),
                Column("failed", _("Failed"), numeric=True),
                Column("cancelled", _("Cancelled"), numeric=True),
                Column("success_rate_percent", _("Success rate (%)"), numeric=True),
            ),
            rows=rate_rows,
            chart=_chart(
                "lines",
                "chart-success-rate",
                title,
                categories,
                [
                    Series(
                        _("Success rate"),
                        tuple(rate_values),
                        tuple("" if value is None else text.percent(value) for value in rate_values),
                    )
                ],
                text,
                value_axis_label=_("Credited / finished (%)"),
                tick_format=text.percent,
                axis_labels=axis_labels,
                category_axis_label=_("Day (UTC)"),
            ),
        )
    )
    total_credited = sum(outcome[0] for outcome in outcomes.values())
    total_finished = sum(sum(outcome) for outcome in outcomes.values())
    total_amount = sum(amount for (_day, _group), (_count, amount) in by_channel.items())
    figures = [
        Figure(_("Credited top-ups"), text.count(total_credited)),
        Figure(_("Credited amount"), text.money(total_amount)),
        Figure(
            _("Success rate"),
            text.percent(round(100 * total_credited / total_finished, 1)) if total_finished else "—",
        ),
    ]
    return Report(
        slug="topups",
        title=_("Top-ups"),
        sections=sections,
        figures=figures,
        note=_(
            "By the day the order was made. Success rate: credited ÷ (credited + failed + cancelled); "
            "orders still under way are not counted. Refunded orders count as credited."
        ),
    )


def credit_time_report(session: Session, request: ReportRequest) -> Report:
    text = _Text(request.language, request.currency)
    _ = text.gettext
    rows = {row.day.isoformat(): row for row in queries.credit_times(session, period=request.period)}
    categories, axis_labels = _day_axis(request.period.days())
    p50 = [round(rows[day].p50_seconds, 1) if day in rows else None for day in categories]
    p95 = [round(rows[day].p95_seconds, 1) if day in rows else None for day in categories]
    title = _("Time from payment to credit")
    table_rows: list[tuple[object, ...]] = [
        (day, rows[day].credited_count, p50[index], p95[index])
        for index, day in enumerate(categories)
        if day in rows
    ]
    chart = _chart(
        "lines",
        "chart-credit-time",
        title,
        categories,
        [
            Series(
                _("Median (p50)"),
                tuple(p50),
                tuple("" if value is None else text.seconds(value) for value in p50),
            ),
            Series(
                _("95th percentile (p95)"),
                tuple(p95),
                tuple("" if value is None else text.seconds(value) for value in p95),
            ),
        ],
        text,
        value_axis_label=_("Seconds"),
        tick_format=lambda value: f"{value:g}",
        axis_labels=axis_labels,
        category_axis_label=_("Day (UTC)"),
    )
    section = Section(
        key="credit-time",
        title=title,
        columns=(
            Column("day", _("Day (UTC)")),
            Column("credited_count", _("Credited"), numeric=True),
            Column("p50_seconds", _("Median (s)"), numeric=True),
            Column("p95_seconds", _("95th percentile (s)"), numeric=True),
        ),
        rows=table_rows,
        chart=chart,
    )
    return Report(
        slug="credit-time",
        title=title,
        sections=[section],
        note=_(
            "By the day of crediting, every channel and currency; vouchers are paid and credited at once."
        ),
    )


def vouchers_report(session: Session, request: ReportRequest) -> Report:
    text = _Text(request.language, request.currency)
    _ = text.gettext
    rows = queries.voucher_stock(session, currency=request.currency)
    no_outlet = _("(operator stock)")
    states = list(VoucherState.ALL)
    state_totals: dict[str, list[int]] = {state: [0, 0] for state in states}
    outlet_totals: dict[str, float] = defaultdict(float)
    for row in rows:
        state_totals.setdefault(row.state, [0, 0])
        state_totals[row.state][0] += row.count
        state_totals[row.state][1] += row.face_value_minor
        outlet_totals[row.outlet or no_outlet] += row.count
    state_rows: list[tuple[object, ...]] = [
        (state, count, text.major(value)) for state, (count, value) in state_totals.items()
    ]
    state_title = _("Vouchers by state")
    state_names = tuple(text.name(VOUCHER_STATE_NAMES, state) for state in state_totals)
    counts = tuple(float(count) for count, _value in state_totals.values())
    by_state = Section(
        key="by-state",
        title=state_title,
        columns=(
            Column("state", _("State")),
            Column("count", _("Vouchers"), numeric=True),
            Column(
                "face_value", _("Face value (%(currency)s)") % {"currency": request.currency}, numeric=True
            ),
        ),
        rows=state_rows,
        chart=_chart(
            "bars",
            "chart-vouchers-by-state",
            state_title,
            state_names,
            [Series(_("Vouchers"), counts, tuple(text.count(value) for value in counts))],
            text,
            value_axis_label=_("Vouchers"),
            tick_format=text.count,
            totals=tuple(
                f"{text.count(count)} · {text.money(value)}" for count, value in state_totals.values()
            ),
        ),
    )
    outlets = _top_series(outlet_totals, CHART_CATEGORIES_MAX)
    pivot = _pivot(
        [
            (row.outlet or no_outlet, row.state, float(row.count))
            for row in rows
            if (row.outlet or no_outlet) in outlets
        ],
        outlets,
        list(state_totals),
    )
    outlet_title = _("Vouchers by outlet and state")
    by_outlet = Section(
        key="by-outlet",
        title=outlet_title,
        columns=(
            Column("outlet", _("Outlet")),
            Column("state", _("State")),
            Column("count", _("Vouchers"), numeric=True),
            Column(
                "face_value", _("Face value (%(currency)s)") % {"currency": request.currency}, numeric=True
            ),
        ),
        rows=[(row.outlet, row.state, row.count, text.major(row.face_value_minor)) for row in rows],
        chart=_chart(
            "bars",
            "chart-vouchers-by-outlet",
            outlet_title,
            tuple(outlets),
            [
                Series(
                    text.name(VOUCHER_STATE_NAMES, state),
                    tuple(pivot[state]),
                    tuple(text.count(value) for value in pivot[state]),
                )
                for state in state_totals
                if any(pivot[state])
            ],
            text,
            value_axis_label=_("Vouchers"),
            tick_format=text.count,
        ),
    )
    return Report(
        slug="vouchers",
        title=_("Voucher inventory"),
        sections=[by_state, by_outlet],
        note=_(
            "Now, in the chosen currency. The chart shows the %(count)s outlets holding the most "
            "vouchers; the CSV has all."
        )
        % {"count": CHART_CATEGORIES_MAX},
    )


def lines_report(session: Session, request: ReportRequest) -> Report:
    text = _Text(request.language, request.currency)
    _ = text.gettext
    counts = queries.lines_by_state(session)
    state_title = _("Lines by lifecycle state")
    values = tuple(float(counts[state]) for state in counts)
    by_state = Section(
        key="by-state",
        title=state_title,
        columns=(Column("state", _("State")), Column("lines", _("Lines"), numeric=True)),
        rows=[(state, count) for state, count in counts.items()],
        chart=_chart(
            "bars",
            "chart-lines-by-state",
            state_title,
            tuple(text.name(LINE_STATE_NAMES, state) for state in counts),
            [Series(_("Lines"), values, tuple(text.count(value) for value in values))],
            text,
            value_axis_label=_("Lines"),
            tick_format=text.count,
        ),
    )
    first_day = today()
    horizon = max(EXPIRY_HORIZONS_DAYS)
    days = [first_day + timedelta(days=offset) for offset in range(horizon + 1)]
    expiring = queries.lines_expiring(session, first_day=first_day, last_day=days[-1])
    categories, axis_labels = _day_axis(days)
    per_day = tuple(float(expiring.get(day, 0)) for day in days)
    running = 0
    table_rows: list[tuple[object, ...]] = []
    for day in days:
        running += expiring.get(day, 0)
        table_rows.append((day.isoformat(), expiring.get(day, 0), running))
    expiring_title = _("Active lines whose validity ends in the next 30 days")
    by_day = Section(
        key="expiring",
        title=expiring_title,
        columns=(
            Column("validity_date", _("Validity date")),
            Column("lines", _("Lines"), numeric=True),
            Column("cumulative_lines", _("From today (cumulative)"), numeric=True),
        ),
        rows=table_rows,
        chart=_chart(
            "columns",
            "chart-lines-expiring",
            expiring_title,
            categories,
            [Series(_("Lines"), per_day, tuple(text.count(value) for value in per_day))],
            text,
            value_axis_label=_("Lines"),
            tick_format=text.count,
            axis_labels=axis_labels,
            category_axis_label=_("Validity date"),
        ),
    )
    figures = [
        Figure(
            _("Expiring in the next %(days)s days") % {"days": horizon_days},
            text.count(
                sum(expiring.get(first_day + timedelta(days=offset), 0) for offset in range(horizon_days + 1))
            ),
        )
        for horizon_days in EXPIRY_HORIZONS_DAYS
    ]
    figures.insert(0, Figure(_("Active lines"), text.count(counts[LineState.ACTIVE])))
    return Report(
        slug="lines",
        title=_("Lines"),
        sections=[by_state, by_day],
        figures=figures,
        note=_("Now. Expiring: active lines whose validity date is today or within the next days (UTC)."),
    )


def breakage_report(session: Session, request: ReportRequest) -> Report:
    text = _Text(request.language, request.currency)
    _ = text.gettext
    rows = queries.breakage_by_day(session, period=request.period, currency=request.currency)
    categories, axis_labels = _day_axis(request.period.days())
    sources = {"lines": _("Balances forfeited at termination"), "vouchers": _("Vouchers expired unused")}
    pivot = _pivot(
        [(row.day.isoformat(), row.source, float(text.major(row.amount_minor))) for row in rows],
        categories,
        list(sources),
    )
    title = _("Breakage per day")
    section = Section(
        key="breakage",
        title=title,
        columns=(
            Column("day", _("Day (UTC)")),
            Column("source", _("Source")),
            Column("amount", _("Amount (%(currency)s)") % {"currency": request.currency}, numeric=True),
        ),
        rows=[(row.day.isoformat(), row.source, text.major(row.amount_minor)) for row in rows],
        chart=_chart(
            "columns",
            "chart-breakage",
            title,
            categories,
            [
                Series(
                    label,
                    tuple(pivot[source]),
                    tuple(text.money(round(value * 10**text.exponent)) for value in pivot[source]),
                )
                for source, label in sources.items()
            ],
            text,
            value_axis_label=_("Amount (%(currency)s)") % {"currency": request.currency},
            tick_format=text.money_tick,
            axis_labels=axis_labels,
            category_axis_label=_("Day (UTC)"),
        ),
    )
    total = sum(row.amount_minor for row in rows)
    return Report(
        slug="breakage",
        title=_("Breakage"),
        sections=[section],
        figures=[Figure(_("Breakage in the period"), text.money(total))],
        note=_("Entries on the breakage accounts in the ledger, by day of posting."),
    )


def promotions_report(session: Session, request: ReportRequest) -> Report:
    text = _Text(request.language, request.currency)
    _ = text.gettext
    rows = {
        row.day.isoformat(): row
        for row in queries.promotion_cost_by_day(session, period=request.period, currency=request.currency)
    }
    categories, axis_labels = _day_axis(request.period.days())
    net = tuple(
        float(text.major(rows[day].granted_minor - rows[day].clawed_back_minor)) if day in rows else 0.0
        for day in categories
    )
    net = tuple(max(0.0, value) for value in net)
    title = _("Promotion cost per day")
    cost = Section(
        key="cost",
        title=title,
        columns=(
            Column("day", _("Day (UTC)")),
            Column(
                "bonus_granted",
                _("Bonus granted (%(currency)s)") % {"currency": request.currency},
                numeric=True,
            ),
            Column(
                "clawed_back",
                _("Clawed back by refunds (%(currency)s)") % {"currency": request.currency},
                numeric=True,
            ),
            Column("net_cost", _("Net cost (%(currency)s)") % {"currency": request.currency}, numeric=True),
        ),
        rows=[
            (
                day,
                text.major(row.granted_minor),
                text.major(row.clawed_back_minor),
                text.major(row.granted_minor - row.clawed_back_minor),
            )
            for day, row in sorted(rows.items())
        ],
        chart=_chart(
            "columns",
            "chart-promotion-cost",
            title,
            categories,
            [
                Series(
                    _("Net cost"), net, tuple(text.money(round(value * 10**text.exponent)) for value in net)
                )
            ],
            text,
            value_axis_label=_("Amount (%(currency)s)") % {"currency": request.currency},
            tick_format=text.money_tick,
            axis_labels=axis_labels,
            category_axis_label=_("Day (UTC)"),
        ),
    )
    promotions = queries.bonus_by_promotion(session, period=request.period, currency=request.currency)
    shown = promotions[:CHART_CATEGORIES_MAX]
    bonus = tuple(float(text.major(row.bonus_minor)) for row in shown)
    by_title = _("Bonus by promotion")
    by_promotion = Section(
        key="by-promotion",
        title=by_title,
        columns=(
            Column("promotion", _("Promotion")),
            Column("name", _("Name")),
            Column("orders", _("Top-ups"), numeric=True),
            Column("bonus", _("Bonus (%(currency)s)") % {"currency": request.currency}, numeric=True),
        ),
        rows=[(row.code, row.name, row.orders, text.major(row.bonus_minor)) for row in promotions],
        chart=_chart(
            "bars",
            "chart-by-promotion",
            by_title,
            tuple(row.code for row in shown),
            [Series(_("Bonus"), bonus, tuple(text.money(row.bonus_minor) for row in shown))],
            text,
            value_axis_label=_("Bonus (%(currency)s)") % {"currency": request.currency},
            tick_format=text.money_tick,
            totals=tuple(text.money(row.bonus_minor) for row in shown),
        ),
    )
    granted = sum(row.granted_minor for row in rows.values())
    clawed = sum(row.clawed_back_minor for row in rows.values())
    return Report(
        slug="promotions",
        title=_("Promotion cost"),
        sections=[cost, by_promotion],
        figures=[
            Figure(_("Bonus granted"), text.money(granted)),
            Figure(_("Clawed back by refunds"), text.money(clawed)),
            Figure(_("Net cost"), text.money(granted - clawed)),
        ],
        note=_(
            "Cost per day from the promotion expense account in the ledger; by promotion from "
            "the bonus of the top-ups credited in the period."
        ),
    )


def agents_report(session: Session, request: ReportRequest) -> Report:
    text = _Text(request.language, request.currency)
    _ = text.gettext
    currency = {"currency": request.currency}
    agents = queries.agent_sales_by_agent(session, period=request.period, currency=request.currency)
    named = agents[:AGENT_SERIES_MAX]
    codes: dict[int | None, str] = {row.agent_id: row.code for row in named}
    codes[None] = OTHER_AGENTS
    days = (
        queries.agent_sales_by_day(
            session,
            period=request.period,
            currency=request.currency,
            agent_ids=[row.agent_id for row in named],
        )
        if agents
        else []
    )
    categories, axis_labels = _day_axis(request.period.days())

    # Sales per day: the agents that sold most in the period by name, the rest as one group.
    series_keys = [row.code for row in named] + ([OTHER_AGENTS] if len(agents) > len(named) else [])
    pivot = _pivot(
        [(row.day.isoformat(), codes[row.agent_id], float(text.major(row.amount_minor))) for row in days],
        categories,
        series_keys,
    )
    sales_title = _("Amount sold per day by agent")
    sales = Section(
        key="sales",
        title=sales_title,
        columns=(
            Column("day", _("Day (UTC)")),
            Column("agent", _("Agent")),
            Column("sales", _("Sales"), numeric=True),
            Column("amount", _("Amount (%(currency)s)") % currency, numeric=True),
        ),
        rows=[
            (row.day.isoformat(), codes[row.agent_id], row.sales, text.major(row.amount_minor))
            for row in sorted(days, key=lambda row: (row.day, row.agent_id is None, codes[row.agent_id]))
        ],
        chart=_chart(
            "columns",
            "chart-agent-sales",
            sales_title,
            categories,
            [
                Series(
                    _("Other agents") if key == OTHER_AGENTS else key,
                    tuple(pivot[key]),
                    tuple(text.money(round(value * 10**text.exponent)) for value in pivot[key]),
                )
                for key in series_keys
            ],
            text,
            value_axis_label=_("Amount (%(currency)s)") % currency,
            tick_format=text.money_tick,
            axis_labels=axis_labels,
            category_axis_label=_("Day (UTC)"),
        ),
    )

    # Commission booked per day: what the selling agents kept and what their parents earned.
    per_day: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in days:
        totals = per_day[row.day.isoformat()]
        totals[0] += row.sales
        totals[1] += row.amount_minor
        totals[2] += row.commission_minor
        totals[3] += row.commission_total_minor
    seller_values = tuple(float(text.major(per_day[day][2])) if day in per_day else 0.0 for day in categories)
    parent_values = tuple(
        float(text.major(per_day[day][3] - per_day[day][2])) if day in per_day else 0.0 for day in categories
    )
    commission_title = _("Commission booked per day")
    commission = Section(
        key="commission",
        title=commission_title,
        columns=(
            Column("day", _("Day (UTC)")),
            Column("sales", _("Sales"), numeric=True),
            Column("amount", _("Amount (%(currency)s)") % currency, numeric=True),
            Column("seller_commission", _("Selling agents (%(currency)s)") % currency, numeric=True),
            Column("parent_commission", _("Parent agents (%(currency)s)") % currency, numeric=True),
            Column("commission_total", _("Commission in total (%(currency)s)") % currency, numeric=True),
        ),
        rows=[
            (
                day,
                count,
                text.major(amount_minor),
                text.major(seller_minor),
                text.major(total_minor - seller_minor),
                text.major(total_minor),
            )
            for day, (count, amount_minor, seller_minor, total_minor) in sorted(per_day.items())
        ],
        chart=_chart(
            "columns",
            "chart-agent-commission",
            commission_title,
            categories,
            [
                Series(
                    _("Selling agents"),
                    seller_values,
                    tuple(text.money(round(value * 10**text.exponent)) for value in seller_values),
                ),
                Series(
                    _("Parent agents"),
                    parent_values,
                    tuple(text.money(round(value * 10**text.exponent)) for value in parent_values),
                ),
            ],
            text,
            value_axis_label=_("Commission (%(currency)s)") % currency,
            tick_format=text.money_tick,
            axis_labels=axis_labels,
            category_axis_label=_("Day (UTC)"),
        ),
    )

    # Each agent over the whole period: all of them in the table, the top ones in the chart.
    shown = agents[:CHART_CATEGORIES_MAX]
    amounts = tuple(float(text.major(row.amount_minor)) for row in shown)
    by_agent_title = _("Sales and commission by agent")
    by_agent = Section(
        key="by-agent",
        title=by_agent_title,
        columns=(
            Column("agent", _("Agent")),
            Column("name", _("Name")),
            Column("parent", _("Parent agent")),
            Column("sales", _("Sales"), numeric=True),
            Column("amount", _("Amount (%(currency)s)") % currency, numeric=True),
            Column("seller_commission", _("Own commission (%(currency)s)") % currency, numeric=True),
            Column("commission_total", _("Commission in total (%(currency)s)") % currency, numeric=True),
        ),
        rows=[
            (
                row.code,
                row.name,
                row.parent_code,
                row.sales,
                text.major(row.amount_minor),
                text.major(row.commission_minor),
                text.major(row.commission_total_minor),
            )
            for row in agents
        ],
        chart=_chart(
            "bars",
            "chart-by-agent",
            by_agent_title,
            tuple(row.code for row in shown),
            [Series(_("Amount sold"), amounts, tuple(text.money(row.amount_minor) for row in shown))],
            text,
            value_axis_label=_("Amount (%(currency)s)") % currency,
            tick_format=text.money_tick,
            totals=tuple(f"{text.count(row.sales)} · {text.money(row.amount_minor)}" for row in shown),
        ),
    )
    sold = sum(row.amount_minor for row in agents)
    seller_total = sum(row.commission_minor for row in agents)
    commission_total = sum(row.commission_total_minor for row in agents)
    return Report(
        slug="agents",
        title=_("Agent sales and commission"),
        sections=[sales, commission, by_agent],
        figures=[
            Figure(_("Agent sales"), text.count(sum(row.sales for row in agents))),
            Figure(_("Amount sold"), text.money(sold)),
            Figure(_("Commission to selling agents"), text.money(seller_total)),
            Figure(_("Commission to parent agents"), text.money(commission_total - seller_total)),
            Figure(_("Commission in total"), text.money(commission_total)),
        ],
        note=_(
            "Sales made by agents, by the day of the sale (UTC), in the chosen currency. Per day, "
            "the %(count)s agents that sold most in the period are shown by code and the others "
            "together; the agent table has all. A parent agent earns the difference between its "
            "commission and its sub-agent's; the total is the operator's commission cost."
        )
        % {"count": AGENT_SERIES_MAX},
    )


REPORTS: dict[str, ReportSpec] = {
    spec.slug: spec
    for spec in (
        ReportSpec(
            "topups",
            N_("Top-ups"),
            N_("Per day by channel and provider, success rate"),
            MANAGER_ROLES,
            True,
            True,
            topups_report,
        ),
        ReportSpec(
            "credit-time",
            N_("Time from payment to credit"),
            N_("Median and 95th percentile per day"),
            OPERATIONS_ROLES,
            True,
            False,
            credit_time_report,
        ),
        ReportSpec(
            "vouchers",
            N_("Voucher inventory"),
            N_("By state and outlet"),
            OPERATIONS_ROLES,
            False,
            True,
            vouchers_report,
        ),
        ReportSpec(
            "lines",
            N_("Lines"),
            N_("By lifecycle state, expiring in the next 7 and 30 days"),
            OPERATIONS_ROLES,
            False,
            False,
            lines_report,
        ),
        ReportSpec(
            "breakage",
            N_("Breakage"),
            N_("Forfeited balances and expired vouchers per day"),
            MANAGER_ROLES,
            True,
            True,
            breakage_report,
        ),
        ReportSpec(
            "promotions",
            N_("Promotion cost"),
            N_("Bonus granted, clawed back, by promotion"),
            MANAGER_ROLES,
            True,
            True,
            promotions_report,
        ),
        ReportSpec(
            "agents",
            N_("Agent sales and commission"),
            N_("Sales per day by agent, commission to sellers and their parents"),
            MANAGER_ROLES,
            True,
            True,
            agents_report,
        ),
    )
}


def spec_for(slug: str) -> ReportSpec:
    spec = REPORTS.get(slug)
    if spec is None:
        raise NotFound("There is no report %(slug)s.", slug=slug[:40])
    return spec


def section_for(report: Report, key: str) -> Section:
    for section in report.sections:
        if section.key == key:
            return section
    raise NotFound("There is no report %(slug)s.", slug=f"{report.slug}/{key}"[:60])


def section_csv(section: Section) -> str:
    """The section's table as CSV: a header of column keys, then plain values (decimal
    amounts in the currency named by the report, dates as YYYY-MM-DD)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([column.key for column in section.columns])
    for row in section.rows:
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


__all__ = ["REPORTS", "Report", "ReportRequest", "Section", "parse_request", "section_csv", "spec_for"]
