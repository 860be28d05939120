"""initial views

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "child_links",
        sa.Column("parent_workflow_id", sa.String(length=255), nullable=False),
        sa.Column("parent_run_id", sa.String(length=255), nullable=False),
        sa.Column("child_workflow_id", sa.String(length=255), nullable=False),
        sa.Column("child_workflow_type", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("scheduled_seq", sa.BigInteger(), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_details", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("parent_workflow_id", "parent_run_id", "child_workflow_id"),
    )
    op.create_index("ix_child_links_child", "child_links", ["child_workflow_id"], unique=False)

    op.create_table(
        "held_events",
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("command_id", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("writer", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "seq"),
    )
    op.create_table(
        "history",
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("command_id", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "seq"),
    )
    op.create_table(
        "projector_offsets",
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition"),
    )
    op.create_table(
        "registry",
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("workflow_type", sa.String(length=128), nullable=False),
        sa.Column("package_version", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "run_id"),
    )
    op.create_index(
        "ix_registry_owner", "registry", ["owner", "workflow_id", "run_id"], unique=False
    )
    op.create_index(
        "ix_registry_partition", "registry", ["partition", "workflow_id", "run_id"], unique=False
    )

    op.create_table(
        "workflow_runs",
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("first_run_id", sa.String(length=255), nullable=False),
        sa.Column("workflow_type", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parent_workflow_id", sa.String(length=255), nullable=True),
        sa.Column("parent_run_id", sa.String(length=255), nullable=True),
        sa.Column("previous_run_id", sa.String(length=255), nullable=True),
        sa.Column("next_run_id", sa.String(length=255), nullable=True),
        sa.Column("package_version", sa.String(length=128), nullable=False),
        sa.Column("start_seq", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_details", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("workflow_id", "run_id"),
    )
    op.create_table(
        "workflows",
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("current_run_id", sa.String(length=255), nullable=False),
        sa.Column("first_run_id", sa.String(length=255), nullable=False),
        sa.Column("workflow_type", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parent_workflow_id", sa.String(length=255), nullable=True),
        sa.Column("parent_run_id", sa.String(length=255), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id"),
    )
    op.create_index(
        "ix_workflows_parent_started",
        "workflows",
        ["parent_workflow_id", "started_at", "workflow_id"],
        unique=False,
    )
    op.create_index(
        "ix_workflows_started", "workflows", ["started_at", "workflow_id"], unique=False
    )
    op.create_index(
        "ix_workflows_status_started",
        "workflows",
        ["status", "started_at", "workflow_id"],
        unique=False,
    )
    op.create_index(
        "ix_workflows_type_started",
        "workflows",
        ["workflow_type", "started_at", "workflow_id"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""

    op.drop_table("workflows")
    op.drop_table("workflow_runs")

    op.drop_table("registry")
    op.drop_table("projector_offsets")
    op.drop_table("history")
    op.drop_table("held_events")

    op.drop_table("child_links")
