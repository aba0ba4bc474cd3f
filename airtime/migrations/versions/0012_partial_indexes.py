"""topups, notifications: indexes that leave out the rows nobody looks up through them

Most orders and receipts have no customer (quick top-ups, vouchers, phone channels), an
order has no credit time until it is credited, and reconciliation and care look up only
open orders by age. Each of these indexes now holds only the rows it is read for, so
starting and crediting a top-up writes five index entries fewer. (The open-orders index
stays whole on SQLite, whose planner would not use it for one status.)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "status IN ('created', 'awaiting_payment', 'paid')"
# (index, table, columns, predicate on both databases, predicate on PostgreSQL only)
_INDEXES = (
    ("ix_topup_orders_customer_id", "topup_orders", ["customer_id"], "customer_id IS NOT NULL", None),
    ("ix_topup_orders_credited_at", "topup_orders", ["credited_at"], "credited_at IS NOT NULL", None),
    ("ix_topup_orders_status_created_at", "topup_orders", ["status", "created_at"], None, _OPEN),
    ("ix_notifications_customer_id", "notifications", ["customer_id"], "customer_id IS NOT NULL", None),
)


def upgrade() -> None:
    for name, table, columns, both, postgresql in _INDEXES:
        op.drop_index(name, table_name=table)
        where = both or postgresql
        op.create_index(
            name,
            table,
            columns,
            sqlite_where=sa.text(both) if both else None,
            postgresql_where=sa.text(where) if where else None,
        )


def downgrade() -> None:
    for name, table, columns, _, _ in _INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns)
