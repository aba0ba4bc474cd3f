"""Imports every table so Alembic and tests see the whole schema."""

from airtime.accounts.models import (  # noqa: F401
    AuthSession,
    Customer,
    Line,
    PasswordResetToken,
    Plan,
    RateLimitCounter,
    StaffUser,
)
from airtime.db.base import Base
from airtime.ledger.models import Entry, LedgerAccount, Transfer  # noqa: F401
from airtime.notifications.models import Notification  # noqa: F401

metadata = Base.metadata
from airtime.agents.models import Agent, AgentCredential, AgentDailyUsage, AgentSale, AgentSignature  # noqa: E402, F401
from airtime.announcements.models import Announcement  # noqa: E402, F401
from airtime.autotopup.models import AutoTopupAttempt, AutoTopupRule, SavedPaymentMethod  # noqa: E402, F401
from airtime.care.models import AuditEntry, BalanceAdjustment, Dispute  # noqa: E402, F401
from airtime.channels.models import PhoneLanguage, PhoneSession  # noqa: E402, F401
from airtime.lifecycle.models import LineTransition  # noqa: E402, F401
from airtime.payments.models import PaymentEvent, SandboxCardSetup, SandboxPayment  # noqa: E402, F401
from airtime.staff.models import StaffTotp  # noqa: E402, F401
from airtime.topups.models import AmountRule, Bundle, LineAllowance, Promotion, TopupOrder  # noqa: E402, F401
from airtime.vouchers.models import (  # noqa: E402, F401
    Outlet,
    RedemptionAttempt,
    RedemptionLock,
    Voucher,
    VoucherBatch,
    VoucherEvent,
)
