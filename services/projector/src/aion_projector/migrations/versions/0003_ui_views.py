"""ui views: dead letters, the refusals feed, open runs by version, id-prefix search

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Prefix search compares ids in code point order; PostgreSQL's own collation may be a
# locale's, so it gets an index of its own in "C" order (SQLite's BINARY already is).
_ID_C_INDEX = 'CREATE INDEX ix_workflows_id_c ON workflows (workflow_id COLLATE "C")'


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "dead_letters",
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=True),
        sa.Column("source_topic", sa.String(length=255), nullable=True),
        sa.Column("source_partition", sa.Integer(), nullable=True),
        sa.Column("source_offset", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("value_size", sa.Integer(), nullable=False),
        sa.Column("preview", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", "offset"),
    )
    op.create_index(
        "ix_dead_letters_at",
        "dead_letters",
        ["dead_lettered_at", "partition", "offset"],
        unique=False,
    )
    op.create_index(
        "ix_command_refusals_refused",
        "command_refusals",
        ["refused_at", "workflow_id", "command_id"],
        unique=False,
    )
    op.create_index(
        "ix_registry_status_type",
        "registry",
        ["status", "workflow_type", "package_version"],
        unique=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_ID_C_INDEX)


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_workflows_id_c")
    op.drop_index("ix_registry_status_type", table_name="registry")
    op.drop_index("ix_command_refusals_refused", table_name="command_refusals")
    op.drop_index("ix_dead_letters_at", table_name="dead_letters")
    op.drop_table("dead_letters")
