"""topups: a partial index of credited orders by line ("was this line ever credited?")

The question behind first-top-up promotions was answered by joining the line index with
the (status, created_at) index, which reads an entry for every credited order of every
line once the statistics lag behind the table: one probe of this index instead.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = "status IN ('credited', 'refunded')"


def upgrade() -> None:
    op.create_index(
        "ix_topup_orders_line_id_credited",
        "topup_orders",
        ["line_id"],
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_topup_orders_line_id_credited", table_name="topup_orders")
