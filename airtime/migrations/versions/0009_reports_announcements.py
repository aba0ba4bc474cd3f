"""reports: indexes for date-range reads of orders and operator entries; announcements

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_topup_orders_created_at", "topup_orders", ["created_at"])
    op.create_index("ix_topup_orders_credited_at", "topup_orders", ["credited_at"])
    op.create_index("ix_ledger_entries_account_id_created_at", "ledger_entries", ["account_id", "created_at"])
    op.create_table(
        "announcements",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("title_en", sa.String(length=120), nullable=False),
        sa.Column("body_en", sa.Text(), nullable=False),
        sa.Column("title_zh", sa.String(length=120), nullable=False),
        sa.Column("body_zh", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=254), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_announcements")),
    )
    op.create_index("ix_announcements_ends_at_starts_at", "announcements", ["ends_at", "starts_at"])


def downgrade() -> None:
    op.drop_index("ix_announcements_ends_at_starts_at", table_name="announcements")
    op.drop_table("announcements")
    op.drop_index("ix_ledger_entries_account_id_created_at", table_name="ledger_entries")
    op.drop_index("ix_topup_orders_credited_at", table_name="topup_orders")
    op.drop_index("ix_topup_orders_created_at", table_name="topup_orders")
