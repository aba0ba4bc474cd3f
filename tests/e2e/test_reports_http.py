"""Report pages over HTTP: charts and CSV for each role allowed, refusals for the others."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from airtime.db.session import unit_of_work
from airtime.reports.service import REPORTS
from tests import report_helpers, staff_helpers
from tests.e2e.test_web import register

QUERY = "start=2026-03-01&end=2026-03-03&currency=GBP"


def _login(client, session_factory, settings, role):
    with unit_of_work(session_factory) as session:
        staff = staff_helpers.staff_user(session, email=f"{role}@example.com", role=role)
    staff_helpers.open_staff_session(client, session_factory, settings, staff.id)


def test_admin_sees_every_report_with_charts_and_matching_csv(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        report_helpers.seed(session, settings)
    _login(client, session_factory, settings, "admin")
    index = client.get("/admin/reports")
    assert index.status_code == 200
    for slug in REPORTS:
        assert f"/admin/reports/{slug}" in index.text
        page = client.get(f"/admin/reports/{slug}?{QUERY}")
        assert page.status_code == 200, (slug, page.text[:500])
        assert page.text.count("<svg") >= 1
        assert "Download CSV" in page.text
    page = client.get(f"/admin/reports/topups?{QUERY}")
    start = page.text.index("<svg")
    svg = ET.fromstring(page.text[start : page.text.index("</svg>", start) + len("</svg>")])
    bars = [element for element in svg.iter() if element.get("class") == "bar"]
    assert len(bars) == len(report_helpers.TOPUPS_BY_CHANNEL)
    download = client.get(f"/admin/reports/topups/by-channel.csv?{QUERY}")
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert (
        'filename="topups-by-channel-2026-03-01-2026-03-03-GBP.csv"'
        in download.headers["content-disposition"]
    )
    assert list(csv.reader(io.StringIO(download.text)))[1:] == report_helpers.TOPUPS_BY_CHANNEL
    credit = client.get(f"/admin/reports/credit-time/credit-time.csv?{QUERY}")
    assert list(csv.reader(io.StringIO(credit.text)))[1:] == report_helpers.CREDIT_TIME


def test_supervisor_sees_agent_sales_chart_table_and_the_same_csv(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        report_helpers.seed_agent_sales(session, settings)
    _login(client, session_factory, settings, "supervisor")
    page = client.get(f"/admin/reports/agents?{QUERY}")
    assert page.status_code == 200 and page.text.count("<svg") == 3
    start = page.text.index("<svg")
    svg = ET.fromstring(page.text[start : page.text.index("</svg>", start) + len("</svg>")])
    bars = [element for element in svg.iter() if element.get("class") == "bar"]
    assert len(bars) == len(report_helpers.AGENT_SALES)
    for key, expected in (
        ("sales", report_helpers.AGENT_SALES),
        ("commission", report_helpers.AGENT_COMMISSION),
        ("by-agent", report_helpers.AGENT_TOTALS),
    ):
        download = client.get(f"/admin/reports/agents/{key}.csv?{QUERY}")
        assert download.status_code == 200
        assert (
            f'filename="agents-{key}-2026-03-01-2026-03-03-GBP.csv"'
            in download.headers["content-disposition"]
        )
        assert list(csv.reader(io.StringIO(download.text)))[1:] == expected
        # The page's table holds the same figures as the download.
        for row in expected:
            assert "".join(f'<td class="num">{value}</td>' for value in row[-2:]) in page.text
    chinese = client.get(f"/admin/reports/agents?{QUERY}", headers={"Accept-Language": "zh-CN"})
    assert "代理商销售与佣金" in chinese.text and "其他代理商" not in chinese.text


def test_default_range_is_the_last_30_days_and_the_page_speaks_chinese(client, session_factory, settings):
    _login(client, session_factory, settings, "supervisor")
    page = client.get("/admin/reports/topups", headers={"Accept-Language": "zh-CN"})
    assert page.status_code == 200
    first_day = (date.today() - timedelta(days=29)).isoformat()
    assert f'name="start" value="{first_day}"' in page.text and "下载 CSV" in page.text


def test_bad_range_is_refused_on_the_page_and_in_the_csv(client, session_factory, settings):
    _login(client, session_factory, settings, "admin")
    page = client.get("/admin/reports/topups?start=2026-03-05&end=2026-03-01")
    assert page.status_code == 422 and "first day comes after the last day" in page.text
    assert client.get("/admin/reports/topups/by-channel.csv?start=nonsense").status_code == 422
    assert client.get("/admin/reports/nothing").status_code == 404
    assert client.get(f"/admin/reports/topups/nothing.csv?{QUERY}").status_code == 404


FIRST_SECTION = {
    "topups": "by-channel",
    "credit-time": "credit-time",
    "vouchers": "by-state",
    "lines": "by-state",
    "breakage": "breakage",
    "promotions": "cost",
    "agents": "sales",
}
CARE_ALLOWED = {slug for slug, spec in REPORTS.items() if "care" in spec.roles}


@pytest.mark.parametrize("slug", sorted(REPORTS))
def test_care_sees_only_operational_reports(client, session_factory, settings, slug):
    _login(client, session_factory, settings, "care")
    first_section = FIRST_SECTION[slug]
    page = client.get(f"/admin/reports/{slug}")
    download = client.get(f"/admin/reports/{slug}/{first_section}.csv")
    if slug in CARE_ALLOWED:
        assert page.status_code == 200 and download.status_code == 200
    else:
        assert page.status_code == 403 and download.status_code == 403


def test_outlet_staff_customers_and_strangers_never_reach_reports(client, session_factory, settings):
    assert client.get("/admin/reports/lines", follow_redirects=False).headers["location"] == "/admin/login"
    assert client.get("/admin/reports/lines/by-state.csv", follow_redirects=False).status_code == 303
    register(client, "someone@example.com")
    assert client.get("/admin/reports", follow_redirects=False).status_code == 303
    _login(client, session_factory, settings, "outlet")
    for path in ("/admin/reports", "/admin/reports/lines", "/admin/reports/lines/by-state.csv"):
        assert client.get(path, follow_redirects=False).status_code == 403
