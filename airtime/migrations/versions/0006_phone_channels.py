"""phone channels: USSD and IVR sessions, the language each number chose

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "phone_sessions",
        sa.Column("key", sa.String(length=140), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("msisdn", sa.String(length=32), nullable=False),
        sa.Column("text_offset", sa.String(length=400), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_phone_sessions")),
    )
    with op.batch_alter_table("phone_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_phone_sessions_last_seen_at", ["last_seen_at"], unique=False)
    op.create_table(
        "phone_languages",
        sa.Column("msisdn", sa.String(length=32), nullable=False),
        sa.Column("language", sa.String(length=10), nullable=False),
        sa.Column("chosen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("msisdn", name=op.f("pk_phone_languages")),
    )


def downgrade() -> None:
    op.drop_table("phone_languages")
    with op.batch_alter_table("phone_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_phone_sessions_last_seen_at")
    op.drop_table("phone_sessions")
