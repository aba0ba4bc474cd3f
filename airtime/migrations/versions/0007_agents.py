"""agents (resellers): floats, credentials, daily usage, seen signatures, sales; agent staff

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("parent_id", BIG_ID, nullable=True),
        sa.Column("float_account_id", BIG_ID, nullable=False),
        sa.Column("commission_basis_points", sa.Integer(), nullable=False),
        sa.Column("commission_amounts", sa.JSON(), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=False),
        sa.Column("daily_limit_minor", sa.BigInteger(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["float_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_agents_float_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["agents.id"], name=op.f("fk_agents_parent_id_agents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("code", name=op.f("uq_agents_code")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agents_parent_id"), ["parent_id"], unique=False)
    op.create_table(
        "agent_credentials",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", BIG_ID, nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_agent_credentials_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_agent_credentials")),
    )
    with op.batch_alter_table("agent_credentials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_credentials_agent_id"), ["agent_id"], unique=False)
    op.create_table(
        "agent_daily_usage",
        sa.Column("agent_id", BIG_ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("sales", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_agent_daily_usage_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("agent_id", "day", name=op.f("pk_agent_daily_usage")),
    )
    op.create_table(
        "agent_signatures",
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("agent_id", BIG_ID, nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_agent_signatures_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("signature", name=op.f("pk_agent_signatures")),
    )
    with op.batch_alter_table("agent_signatures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_signatures_seen_at"), ["seen_at"], unique=False)
    op.create_table(
        "agent_sales",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("agent_id", BIG_ID, nullable=False),
        sa.Column("order_id", BIG_ID, nullable=False),
        sa.Column("transfer_id", sa.String(length=100), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("msisdn", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("commission_minor", sa.BigInteger(), nullable=False),
        sa.Column("commission_total_minor", sa.BigInteger(), nullable=False),
        sa.Column("float_debit_minor", sa.BigInteger(), nullable=False),
        sa.Column("staff_user_id", BIG_ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_agent_sales_agent_id_agents")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["topup_orders.id"], name=op.f("fk_agent_sales_order_id_topup_orders")
        ),
        sa.ForeignKeyConstraint(
            ["staff_user_id"], ["staff_users.id"], name=op.f("fk_agent_sales_staff_user_id_staff_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_sales")),
        sa.UniqueConstraint("order_id", name=op.f("uq_agent_sales_order_id")),
        sa.UniqueConstraint("transfer_id", name=op.f("uq_agent_sales_transfer_id")),
    )
    with op.batch_alter_table("agent_sales", schema=None) as batch_op:
        batch_op.create_index("ix_agent_sales_agent_id_id", ["agent_id", "id"], unique=False)
        batch_op.create_index(
            "uq_agent_sales_agent_id_idempotency_key", ["agent_id", "idempotency_key"], unique=True
        )
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_id", BIG_ID, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_staff_users_agent_id_agents"), "agents", ["agent_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_staff_users_agent_id_agents"), type_="foreignkey")
        batch_op.drop_column("agent_id")
    with op.batch_alter_table("agent_sales", schema=None) as batch_op:
        batch_op.drop_index("uq_agent_sales_agent_id_idempotency_key")
        batch_op.drop_index("ix_agent_sales_agent_id_id")
    op.drop_table("agent_sales")
    with op.batch_alter_table("agent_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_signatures_seen_at"))
    op.drop_table("agent_signatures")
    op.drop_table("agent_daily_usage")
    with op.batch_alter_table("agent_credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_credentials_agent_id"))
    op.drop_table("agent_credentials")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_parent_id"))
    op.drop_table("agents")
