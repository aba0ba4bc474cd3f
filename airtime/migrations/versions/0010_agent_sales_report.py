"""reports: an index for date-range reads of agent sales (the agent sales and commission report)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_agent_sales_created_at", "agent_sales", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_agent_sales_created_at", table_name="agent_sales")
