"""line lifecycle: transitions, released numbers, low-balance alerts, reactivation fee

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "line_transitions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("line_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=False),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=30), nullable=False),
        sa.Column("validity_date", sa.Date(), nullable=True),
        sa.Column("actor", sa.String(length=254), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["line_id"], ["lines.id"], name=op.f("fk_line_transitions_line_id_lines")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_line_transitions")),
    )
    with op.batch_alter_table("line_transitions", schema=None) as batch_op:
        batch_op.create_index("ix_line_transitions_line_id_id", ["line_id", "id"], unique=False)

    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("number_released_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("low_balance_threshold_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("low_balance_alerted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index(batch_op.f("ix_lines_state"))
        batch_op.drop_index(batch_op.f("ix_lines_validity_date"))
        batch_op.drop_constraint(batch_op.f("uq_lines_msisdn"), type_="unique")
        batch_op.create_index(batch_op.f("ix_lines_msisdn"), ["msisdn"], unique=False)
        batch_op.create_index("ix_lines_state_validity_date", ["state", "validity_date"], unique=False)
        batch_op.create_index("ix_lines_state_state_changed_at", ["state", "state_changed_at"], unique=False)
        batch_op.create_index(
            "uq_lines_msisdn_held",
            ["msisdn"],
            unique=True,
            sqlite_where=sa.text("number_released_at IS NULL"),
            postgresql_where=sa.text("number_released_at IS NULL"),
        )

    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reactivation_fee_minor", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_column("reactivation_fee_minor")

    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_lines_msisdn_held",
            sqlite_where=sa.text("number_released_at IS NULL"),
            postgresql_where=sa.text("number_released_at IS NULL"),
        )
        batch_op.drop_index("ix_lines_state_state_changed_at")
        batch_op.drop_index("ix_lines_state_validity_date")
        batch_op.drop_index(batch_op.f("ix_lines_msisdn"))
        batch_op.create_unique_constraint(batch_op.f("uq_lines_msisdn"), ["msisdn"])
        batch_op.create_index(batch_op.f("ix_lines_validity_date"), ["validity_date"], unique=False)
        batch_op.create_index(batch_op.f("ix_lines_state"), ["state"], unique=False)
        batch_op.drop_column("low_balance_alerted_at")
        batch_op.drop_column("low_balance_threshold_minor")
        batch_op.drop_column("number_released_at")

    with op.batch_alter_table("line_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_line_transitions_line_id_id")

    op.drop_table("line_transitions")
