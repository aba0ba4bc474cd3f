"""Demo data: an operator with plans, customers and lines in several states, with money."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from airtime.accounts import service as accounts
from airtime.accounts.models import Customer, LineState, Plan, ValidityRule
from airtime.accounts.phone import luhn_complete
from airtime.agents import service as agents
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, operator_account, post_transfer
from airtime.topups.models import AmountRule, Bundle, Promotion, PromotionKind

DEMO_PASSWORD = "demo-password"  # noqa: S105 - printed for the demo on purpose
DEMO_OUTLET_STAFF = "shop@example.com"
DEMO_AGENT_CODE = "AG-CORNER"
DEMO_AGENT_STAFF = "agent@example.com"
# Operators for the care console and staff pages: two people, so maker-checker can be tried.
DEMO_OPERATORS = (("carla.care@example.com", "care"), ("ada.admin@example.com", "admin"))
DEMO_AGENT_FLOAT_MINOR = 50_000
DEMO_AGENT_COMMISSION_BASIS_POINTS = 300  # 3% of each top-up sold
DEMO_AGENT_DAILY_LIMIT_MINOR = 200_000
DEMO_VOUCHER_COUNT = 5


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str
    language: str


DEMO_LOGINS = (
    DemoLogin("ana@example.com", DEMO_PASSWORD, "en"),
    DemoLogin("li.wei@example.com", DEMO_PASSWORD, "zh_Hans"),
)
# Numbers from ranges that phonenumbers accepts as valid mobile numbers.
DEMO_LINES = (
    # (owner email or None for an unowned line, msisdn, plan, state, days of validity left, balance)
    ("ana@example.com", "+447911123456", "TRAVEL-GBP", LineState.ACTIVE, 75, 1250),
    ("ana@example.com", "+447911123457", "KEEP-GBP", LineState.GRACE, -5, 0),
    ("li.wei@example.com", "+8613800138000", "KEEP-CNY", LineState.ACTIVE, 160, 5000),
    ("li.wei@example.com", "+33612345678", "TRAVEL-GBP", LineState.ACTIVE, 12, 300),
    (None, "+447400123456", "TRAVEL-GBP", LineState.ACTIVE, 30, 500),
    ("ana@example.com", "+447911123458", "TRAVEL-GBP", LineState.SUSPENDED, -75, 300),
)


def _plans() -> list[Plan]:
    now = utcnow()
    return [
        Plan(
            code="TRAVEL-GBP",
            name="Traveller",
            name_zh="旅行卡",
            currency="GBP",
            validity_rule=ValidityRule.TOPUP_EXTENDS,
            validity_tiers=[[500, 30], [1000, 90], [2000, 180]],
            validity_days_max=365,
            grace_days=30,
            suspension_days=60,
            quarantine_days=90,
            reactivation_fee_minor=200,
            created_at=now,
        ),
        Plan(
            code="KEEP-GBP",
            name="Keep my number",
            name_zh="保号套餐",
            currency="GBP",
            validity_rule=ValidityRule.ACTIVITY_RESETS,
            activity_days=180,
            validity_days_max=180,
            grace_days=30,
            suspension_days=60,
            quarantine_days=180,
            created_at=now,
        ),
        Plan(
            code="KEEP-CNY",
            name="Keep my number (CNY)",
            name_zh="保号套餐(人民币)",
            currency="CNY",
            validity_rule=ValidityRule.ACTIVITY_RESETS,
            activity_days=180,
            validity_days_max=180,
            created_at=now,
        ),
    ]


def _catalogue() -> list[object]:
    """Amounts, bundles and a promotion, so the top-up pages have something to offer."""
    now = utcnow()
    return [
        AmountRule(
            currency="GBP",
            denominations=[500, 1000, 2000, 5000],
            amount_min_minor=300,
            amount_max_minor=20000,
            custom_allowed=True,
        ),
        AmountRule(
            currency="CNY",
            denominations=[3000, 5000, 10000, 20000],
            amount_min_minor=1000,
            amount_max_minor=100000,
            custom_allowed=False,
        ),
        Bundle(
            code="DATA-5GB",
            name="5 GB data, 30 days",
            name_zh="5GB 流量，30 天",
            currency="GBP",
            price_minor=1000,
            data_mb=5120,
            validity_days=30,
        ),
        Bundle(
            code="TALK-300",
            name="300 minutes + 300 SMS, 30 days",
            name_zh="300 分钟通话 + 300 条短信，30 天",
            currency="GBP",
            price_minor=800,
            voice_minutes=300,
            sms_count=300,
            validity_days=30,
        ),
        Bundle(
            code="EU-ROAM-10GB",
            name="10 GB Europe roaming, 15 days",
            name_zh="欧洲漫游 10GB，15 天",
            currency="GBP",
            price_minor=1500,
            data_mb=10240,
            validity_days=15,
            zone="EU",
        ),
        Bundle(
            code="CN-DATA-10GB",
            name="10 GB data, 30 days",
            name_zh="10GB 流量，30 天",
            currency="CNY",
            price_minor=5000,
            data_mb=10240,
            validity_days=30,
        ),
        Promotion(
            code="WELCOME10",
            name="10% bonus on your first top-up",
            name_zh="首次充值赠送 10%",
            kind=PromotionKind.PERCENT,
            value=1000,
            currency="GBP",
            amount_min_minor=1000,
            bonus_max_minor=500,
            starts_at=now - timedelta(days=1),
            ends_at=now + timedelta(days=365),
            first_topup_only=True,
            channels=[],
        ),
    ]


def seed(session: Session, settings: Settings) -> bool:
    """Create the demo data once; returns False if it was already there."""
    if session.scalar(select(Plan.id).where(Plan.code == "TRAVEL-GBP")) is not None:
        return False
    session.add_all(_plans())
    session.add_all(_catalogue())
    session.flush()
    customers: dict[str, Customer] = {}
    for login in DEMO_LOGINS:
        customers[login.email] = accounts.register_customer(
            session, email=login.email, password=login.password, language=login.language, settings=settings
        )
    for index, (owner, msisdn, plan_code, state, days_left, balance_minor) in enumerate(DEMO_LINES):
        line = accounts.add_line(
            session,
            msisdn=msisdn,
            plan_code=plan_code,
            settings=settings,
            customer_id=customers[owner].id if owner else None,
            iccid=luhn_complete(f"894400000000000{index:03d}"),
            state=state,
            validity_date=today() + timedelta(days=days_left),
        )
        plan = session.scalar(select(Plan).where(Plan.code == plan_code))
        assert plan is not None
        # A line past its validity entered grace the day after it, and suspension when its
        # grace days were over: the dates "My numbers" shows follow from those.
        if state in (LineState.GRACE, LineState.SUSPENDED) and line.validity_date is not None:
            entered = line.validity_date + timedelta(days=1)
            if state == LineState.SUSPENDED:
                entered += timedelta(days=plan.grace_days)
            line.state_changed_at = datetime.combine(entered, time(2, 0), tzinfo=UTC)
        if balance_minor:
            clearing = operator_account(
                session, kind=AccountKind.PAYMENT_CLEARING, currency=plan.currency, qualifier="demo"
            )
            post_transfer(
                session,
                transfer_id=f"demo-opening-{msisdn}",
                kind="opening_balance",
                currency=plan.currency,
                legs=[Leg(clearing, -balance_minor), Leg(line.main_account_id, balance_minor)],
                description="Opening balance",
            )
    seed_agent(session)
    for email, role in DEMO_OPERATORS:
        accounts.create_staff(session, email=email, password=DEMO_PASSWORD, role=role)
    return True


def seed_agent(session: Session) -> None:
    """A reseller in GBP with a funded float and a staff login for the agent portal, made
    the way an operator makes one (``airtime agents create``, ``fund``, ``create-staff``)."""
    agent = agents.create_agent(
        session,
        code=DEMO_AGENT_CODE,
        name="Corner Agents",
        currency="GBP",
        commission_basis_points=DEMO_AGENT_COMMISSION_BASIS_POINTS,
        daily_limit_minor=DEMO_AGENT_DAILY_LIMIT_MINOR,
    )
    agents.fund_agent(session, agent=agent, amount_minor=DEMO_AGENT_FLOAT_MINOR, reference="demo-float")
    accounts.create_staff(
        session, email=DEMO_AGENT_STAFF, password=DEMO_PASSWORD, role="agent", agent_id=agent.id
    )


def seed_vouchers(factory: sessionmaker[Session], settings: Settings, export_path: Path) -> list[str]:
    """A demo outlet with a float and staff login, and a few released £10 vouchers whose
    PINs are written to ``export_path`` (the one place they ever appear)."""
    from airtime.vouchers import service as vouchers

    with unit_of_work(factory) as session:
        outlet = vouchers.create_outlet(session, code="DEMO-SHOP", name="Corner Shop", currency="GBP")
        vouchers.fund_outlet(session, outlet=outlet, amount_minor=50_000, reference="demo-deposit")
        accounts.create_staff(
            session, email=DEMO_OUTLET_STAFF, password=DEMO_PASSWORD, role="outlet", outlet_id=outlet.id
        )
    batch = vouchers.generate_batch(
        factory,
        settings=settings,
        currency="GBP",
        face_value_minor=1000,
        quantity=DEMO_VOUCHER_COUNT,
        expires_on=today() + timedelta(days=365),
        export_path=export_path,
        created_by="demo",
        outlet_code="DEMO-SHOP",
    )
    with unit_of_work(factory) as session:
        vouchers.activate_range(
            session, serial_first=batch.serial_first, serial_last=batch.serial_last, actor="demo"
        )
    return [row["pin"] for row in vouchers.iter_export(export_path)]
