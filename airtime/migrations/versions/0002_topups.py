"""top-up orders, bundles, promotions, payment events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bundles",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_zh", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("data_mb", sa.Integer(), nullable=False),
        sa.Column("voice_minutes", sa.Integer(), nullable=False),
        sa.Column("sms_count", sa.Integer(), nullable=False),
        sa.Column("validity_days", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=40), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bundles")),
        sa.UniqueConstraint("code", name=op.f("uq_bundles_code")),
    )
    op.create_table(
        "promotions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_zh", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_min_minor", sa.BigInteger(), nullable=False),
        sa.Column("bonus_max_minor", sa.BigInteger(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_topup_only", sa.Boolean(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotions")),
        sa.UniqueConstraint("code", name=op.f("uq_promotions_code")),
    )
    op.create_table(
        "sandbox_payments",
        sa.Column("reference", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("return_url", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reference", name=op.f("pk_sandbox_payments")),
    )
    op.create_table(
        "topup_amount_rules",
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("denominations", sa.JSON(), nullable=False),
        sa.Column("amount_min_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_max_minor", sa.BigInteger(), nullable=False),
        sa.Column("custom_allowed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("currency", name=op.f("pk_topup_amount_rules")),
    )
    op.create_table(
        "line_allowances",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("line_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("bundle_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("data_mb_remaining", sa.Integer(), nullable=False),
        sa.Column("voice_minutes_remaining", sa.Integer(), nullable=False),
        sa.Column("sms_remaining", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=40), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["bundle_id"], ["bundles.id"], name=op.f("fk_line_allowances_bundle_id_bundles")
        ),
        sa.ForeignKeyConstraint(["line_id"], ["lines.id"], name=op.f("fk_line_allowances_line_id_lines")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_line_allowances")),
        sa.UniqueConstraint("source", name=op.f("uq_line_allowances_source")),
    )
    with op.batch_alter_table("line_allowances", schema=None) as batch_op:
        batch_op.create_index(
            "ix_line_allowances_line_id_expires_at", ["line_id", "expires_at"], unique=False
        )

    op.create_table(
        "topup_orders",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("idempotency_scope", sa.String(length=80), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("line_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("msisdn", sa.String(length=16), nullable=False),
        sa.Column("customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("bundle_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("bonus_minor", sa.BigInteger(), nullable=False),
        sa.Column("promotion_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("payment_provider", sa.String(length=20), nullable=False),
        sa.Column("payment_reference", sa.String(length=120), nullable=True),
        sa.Column("payment_redirect_url", sa.String(length=500), nullable=True),
        sa.Column("payment_method", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_code", sa.String(length=40), nullable=False),
        sa.Column("receipt_number", sa.String(length=30), nullable=True),
        sa.Column("receipt_email", sa.String(length=254), nullable=False),
        sa.Column("language", sa.String(length=10), nullable=False),
        sa.Column("balance_after_minor", sa.BigInteger(), nullable=True),
        sa.Column("validity_after", sa.String(length=10), nullable=True),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("refund_shortfall_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("awaiting_payment_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["bundle_id"], ["bundles.id"], name=op.f("fk_topup_orders_bundle_id_bundles")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_topup_orders_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(["line_id"], ["lines.id"], name=op.f("fk_topup_orders_line_id_lines")),
        sa.ForeignKeyConstraint(
            ["promotion_id"], ["promotions.id"], name=op.f("fk_topup_orders_promotion_id_promotions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topup_orders")),
        sa.UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_topup_orders_idempotency"),
        sa.UniqueConstraint(
            "payment_provider", "payment_reference", name="uq_topup_orders_payment_reference"
        ),
        sa.UniqueConstraint("public_id", name=op.f("uq_topup_orders_public_id")),
        sa.UniqueConstraint("receipt_number", name=op.f("uq_topup_orders_receipt_number")),
    )
    with op.batch_alter_table("topup_orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_topup_orders_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index("ix_topup_orders_line_id_id", ["line_id", "id"], unique=False)
        batch_op.create_index("ix_topup_orders_status_created_at", ["status", "created_at"], unique=False)

    op.create_table(
        "payment_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=120), nullable=False),
        sa.Column("event_type", sa.String(length=80), nullable=False),
        sa.Column("payment_reference", sa.String(length=120), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["topup_orders.id"], name=op.f("fk_payment_events_order_id_topup_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_events")),
        sa.UniqueConstraint("provider", "event_id", name="uq_payment_events_provider_event_id"),
    )
    with op.batch_alter_table("payment_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_events_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_payment_events_payment_reference"), ["payment_reference"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_events_payment_reference"))
        batch_op.drop_index(batch_op.f("ix_payment_events_order_id"))

    op.drop_table("payment_events")
    with op.batch_alter_table("topup_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_topup_orders_status_created_at")
        batch_op.drop_index("ix_topup_orders_line_id_id")
        batch_op.drop_index(batch_op.f("ix_topup_orders_customer_id"))

    op.drop_table("topup_orders")
    with op.batch_alter_table("line_allowances", schema=None) as batch_op:
        batch_op.drop_index("ix_line_allowances_line_id_expires_at")

    op.drop_table("line_allowances")
    op.drop_table("topup_amount_rules")
    op.drop_table("sandbox_payments")
    op.drop_table("promotions")
    op.drop_table("bundles")
