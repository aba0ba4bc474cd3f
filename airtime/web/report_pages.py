"""Staff report pages: a chart per section (server-side SVG) with its figures as a table and
as a CSV download, for a date range (default the last 30 days) and a currency.

Supervisors and admins see every report; care agents the operational ones (crediting
speed, voucher inventory, lines); outlet and agent staff none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError
from airtime.i18n import translations
from airtime.reports import charts, queries
from airtime.reports.service import (
    OPERATIONS_ROLES,
    REPORTS,
    ReportSpec,
    parse_request,
    section_csv,
    section_for,
)
from airtime.web.context import render, visitor
from airtime.web.permissions import StaffMember, StaffRole

router = APIRouter(include_in_schema=False)
ReportStaff = Annotated[StaffMember, Depends(StaffRole(*OPERATIONS_ROLES))]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _allowed(staff: StaffMember, language: str) -> list[dict[str, str]]:
    """The reports this staff member may open: slug, title and summary in their language."""
    catalogue = translations(language)
    return [
        {
            "slug": spec.slug,
            "title": catalogue.gettext(spec.title),
            "summary": catalogue.gettext(spec.summary),
        }
        for spec in REPORTS.values()
        if staff.role in spec.roles
    ]


@router.get("/admin/reports", response_class=HTMLResponse)
def reports_index(request: Request, staff: ReportStaff) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        return render(
            request, who, "reports.html", {"staff": staff, "reports": _allowed(staff, who.language)}
        )


def _report_page(spec: ReportSpec) -> Callable[..., Response]:
    # A default, not an annotation: annotations are strings here and cannot see ``spec``.
    guard = Depends(StaffRole(*spec.roles))

    def report_page(
        request: Request,
        start: str = "",
        end: str = "",
        currency: str = "",
        staff: StaffMember = guard,
    ) -> Response:
        """One report: its headline figures, then each section's chart, table and CSV link."""
        settings = _settings(request)
        with unit_of_work(request.app.state.session_factory) as session:
            who = visitor(request, session)
            context: dict[str, object] = {
                "staff": staff,
                "spec": spec,
                "reports": _allowed(staff, who.language),
                "title": translations(who.language).gettext(spec.title),
                "start": start[:10],
                "end": end[:10],
                "currency": currency[:3].upper(),
                "currencies": queries.currencies_in_use(session),
                "report": None,
                "charts": {},
                "query": "",
                "error": None,
            }
            try:
                report_request = parse_request(
                    start=start[:20],
                    end=end[:20],
                    currency=currency[:10],
                    default_currency=settings.default_currency,
                    language=who.language,
                )
            except AppError as error:
                context["error"] = error
                return render(request, who, "report.html", context, status_code=error.status_code)
            report = spec.build(session, report_request)
            period = report_request.period
            context.update(
                report=report,
                # Built with ElementTree, every text escaped: safe to put into the page as is.
                charts={section.key: Markup(charts.render(section.chart)) for section in report.sections},  # noqa: S704
                start=period.first_day.isoformat(),
                end=period.last_day.isoformat(),
                currency=report_request.currency,
                query=f"start={period.first_day.isoformat()}&end={period.last_day.isoformat()}"
                f"&currency={report_request.currency}",
            )
            return render(request, who, "report.html", context)

    return report_page


def _report_csv(spec: ReportSpec) -> Callable[..., Response]:
    guard = Depends(StaffRole(*spec.roles))

    def report_csv(
        request: Request,
        section: str,
        start: str = "",
        end: str = "",
        currency: str = "",
        staff: StaffMember = guard,
    ) -> Response:
        """The figures of one section as CSV: exactly the table the chart was drawn from."""
        settings = _settings(request)
        with unit_of_work(request.app.state.session_factory) as session:
            who = visitor(request, session)
            try:
                report_request = parse_request(
                    start=start[:20],
                    end=end[:20],
                    currency=currency[:10],
                    default_currency=settings.default_currency,
                    language=who.language,
                )
            except AppError as error:
                return Response(
                    error.localized(who.language),
                    status_code=error.status_code,
                    media_type="text/plain; charset=utf-8",
                )
            chosen = section_for(spec.build(session, report_request), section)
        period = report_request.period
        filename = f"{spec.slug}-{chosen.key}-{period.first_day.isoformat()}-{period.last_day.isoformat()}"
        if spec.uses_currency:
            filename += f"-{report_request.currency}"
        return Response(
            section_csv(chosen),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}.csv"',
                "Cache-Control": "no-store",
            },
        )

    return report_csv


# One route per report, so each declares exactly the roles it admits (the permission table
# test reads them from the routes).
for _spec in REPORTS.values():
    router.add_api_route(
        f"/admin/reports/{_spec.slug}", _report_page(_spec), methods=["GET"], response_class=HTMLResponse
    )
    router.add_api_route(f"/admin/reports/{_spec.slug}/{{section}}.csv", _report_csv(_spec), methods=["GET"])
