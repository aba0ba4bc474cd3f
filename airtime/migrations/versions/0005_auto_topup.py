"""auto top-up: saved payment methods, rules, attempts; the sandbox's saved test cards

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sandbox_card_setups",
        sa.Column("reference", sa.String(length=40), nullable=False),
        sa.Column("customer_email", sa.String(length=254), nullable=False),
        sa.Column("return_url", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("card", sa.String(length=20), nullable=False),
        sa.Column("token", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reference", name=op.f("pk_sandbox_card_setups")),
        sa.UniqueConstraint("token", name=op.f("uq_sandbox_card_setups_token")),
    )
    op.create_table(
        "saved_payment_methods",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", BIG_ID, nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("setup_reference", sa.String(length=120), nullable=True),
        sa.Column("token", sa.String(length=120), nullable=False),
        sa.Column("provider_customer", sa.String(length=120), nullable=False),
        sa.Column("label", sa.String(length=60), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_saved_payment_methods_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_payment_methods")),
        sa.UniqueConstraint("provider", "setup_reference", name="uq_saved_payment_methods_setup_reference"),
        sa.UniqueConstraint("public_id", name=op.f("uq_saved_payment_methods_public_id")),
    )
    with op.batch_alter_table("saved_payment_methods", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_saved_payment_methods_customer_id"), ["customer_id"], unique=False
        )

    op.create_table(
        "auto_topup_rules",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("line_id", BIG_ID, nullable=False),
        sa.Column("customer_id", BIG_ID, nullable=False),
        sa.Column("payment_method_id", BIG_ID, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("balance_below_minor", sa.BigInteger(), nullable=True),
        sa.Column("days_before_validity", sa.Integer(), nullable=True),
        sa.Column("monthly_cap_minor", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=30), nullable=False),
        sa.Column("consecutive_declines", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("balance_round", sa.Integer(), nullable=False),
        sa.Column("balance_armed", sa.Boolean(), nullable=False),
        sa.Column("attempts_made", sa.Integer(), nullable=False),
        sa.Column("cap_reached_month", sa.String(length=7), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_auto_topup_rules_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(["line_id"], ["lines.id"], name=op.f("fk_auto_topup_rules_line_id_lines")),
        sa.ForeignKeyConstraint(
            ["payment_method_id"],
            ["saved_payment_methods.id"],
            name=op.f("fk_auto_topup_rules_payment_method_id_saved_payment_methods"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auto_topup_rules")),
        sa.UniqueConstraint("line_id", name=op.f("uq_auto_topup_rules_line_id")),
    )
    with op.batch_alter_table("auto_topup_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auto_topup_rules_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_auto_topup_rules_next_attempt_at"), ["next_attempt_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_auto_topup_rules_payment_method_id"), ["payment_method_id"], unique=False
        )

    op.create_table(
        "auto_topup_attempts",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("rule_id", BIG_ID, nullable=False),
        sa.Column("occasion", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("order_id", BIG_ID, nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("cap_month", sa.String(length=7), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_code", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["topup_orders.id"], name=op.f("fk_auto_topup_attempts_order_id_topup_orders")
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["auto_topup_rules.id"], name=op.f("fk_auto_topup_attempts_rule_id_auto_topup_rules")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auto_topup_attempts")),
        sa.UniqueConstraint("rule_id", "idempotency_key", name="uq_auto_topup_attempts_rule_id"),
    )
    with op.batch_alter_table("auto_topup_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auto_topup_attempts_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            "ix_auto_topup_attempts_rule_id_cap_month", ["rule_id", "cap_month"], unique=False
        )
        batch_op.create_index(
            "ix_auto_topup_attempts_status_created_at", ["status", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("auto_topup_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_auto_topup_attempts_status_created_at")
        batch_op.drop_index("ix_auto_topup_attempts_rule_id_cap_month")
        batch_op.drop_index(batch_op.f("ix_auto_topup_attempts_order_id"))
    op.drop_table("auto_topup_attempts")

    with op.batch_alter_table("auto_topup_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auto_topup_rules_payment_method_id"))
        batch_op.drop_index(batch_op.f("ix_auto_topup_rules_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_auto_topup_rules_customer_id"))
    op.drop_table("auto_topup_rules")

    with op.batch_alter_table("saved_payment_methods", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_saved_payment_methods_customer_id"))
    op.drop_table("saved_payment_methods")

    op.drop_table("sandbox_card_setups")
