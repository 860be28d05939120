"""The projector's tables, as typed SQLAlchemy 2 models.

The models are the reference the Alembic migrations are checked against (a contract test
compares them); the projector writes through their ``__table__`` with Core statements, because
the ORM unit of work is far too slow for thousands of events per second.

Times are stored as UTC: ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and naive UTC on SQLite,
always handed back timezone-aware (:class:`UtcDateTime`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Dialect, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "OPEN_ACTIVITY_STATES",
    "POSTGRESQL_ONLY_INDEXES",
    "ActivityRow",
    "ActivityState",
    "Base",
    "ChildLinkRow",
    "ChildState",
    "DeadLetterRow",
    "HeldEventRow",
    "HistoryRow",
    "OffsetRow",
    "RefusalRow",
    "RegistryRow",
    "RunStatus",
    "UtcDateTime",
    "WorkflowRow",
    "WorkflowRunRow",
]

ID = 255
NAME = 128

POSTGRESQL_ONLY_INDEXES = frozenset({"ix_workflows_id_c"})
"""Indexes the migrations create on PostgreSQL alone, which no model here can declare:
``workflows (workflow_id COLLATE "C")`` for id-prefix search in code point order (SQLite's
own collation already is; see migration 0003)."""


class RunStatus(enum.StrEnum):
    """Status of a run, and of a workflow (its current run's)."""

    RUNNING = "RUNNING"
    BLOCKED = "BLOCKED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TERMINATED = "TERMINATED"
    TIMED_OUT = "TIMED_OUT"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"

    @property
    def is_open(self) -> bool:
        """Whether the run has not ended (running, or blocked waiting for a fix)."""
        return self in (RunStatus.RUNNING, RunStatus.BLOCKED)


OPEN_STATUSES = (RunStatus.RUNNING.value, RunStatus.BLOCKED.value)
"""The statuses of runs that have not ended."""


class ChildState(enum.StrEnum):
    """Where a child stands as its parent run sees it."""

    SCHEDULED = "SCHEDULED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CARRIED = "CARRIED"
    """Open when the parent continued-as-new: the chain's next run holds it now."""


class ActivityState(enum.StrEnum):
    """Where an activity stands: open (scheduled, started, backing off) or how it ended."""

    SCHEDULED = "SCHEDULED"
    STARTED = "STARTED"
    BACKING_OFF = "BACKING_OFF"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"


OPEN_ACTIVITY_STATES = (
    ActivityState.SCHEDULED.value,
    ActivityState.STARTED.value,
    ActivityState.BACKING_OFF.value,
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[datetime]:
        """Native ``timestamptz`` where there is one; naive UTC text on SQLite."""
        return dialect.type_descriptor(DateTime(timezone=dialect.name == "postgresql"))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; SQLite keeps it naive so its text sorts chronologically."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: aion stores timezone-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to what SQLite hands back naive."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the projector's views."""


class WorkflowRunRow(Base):
    """One run of a workflow: the run chain is linked by previous/next run ids."""

    __tablename__ = "workflow_runs"

    workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    first_run_id: Mapped[str] = mapped_column(String(ID))
    workflow_type: Mapped[str] = mapped_column(String(NAME))
    status: Mapped[str] = mapped_column(String(16))
    parent_workflow_id: Mapped[str | None] = mapped_column(String(ID))
    parent_run_id: Mapped[str | None] = mapped_column(String(ID))
    previous_run_id: Mapped[str | None] = mapped_column(String(ID))
    next_run_id: Mapped[str | None] = mapped_column(String(ID))
    package_version: Mapped[str] = mapped_column(String(NAME))
    start_seq: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    input: Mapped[str] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(NAME))
    """The failure's exception class (``ValueError``; ``Terminated`` for a terminated run)."""
    error_traceback: Mapped[str | None] = mapped_column(Text)
    """The traceback through the user's code that raised it (empty when none)."""


class WorkflowRow(Base):
    """One row per workflow id, pointing at its current run: what lists and filters read."""

    __tablename__ = "workflows"
    __table_args__ = (
        Index("ix_workflows_started", "started_at", "workflow_id"),
        Index("ix_workflows_type_started", "workflow_type", "started_at", "workflow_id"),
        Index("ix_workflows_status_started", "status", "started_at", "workflow_id"),
        Index("ix_workflows_parent_started", "parent_workflow_id", "started_at", "workflow_id"),
    )

    workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    current_run_id: Mapped[str] = mapped_column(String(ID))
    first_run_id: Mapped[str] = mapped_column(String(ID))
    workflow_type: Mapped[str] = mapped_column(String(NAME))
    status: Mapped[str] = mapped_column(String(16))
    parent_workflow_id: Mapped[str | None] = mapped_column(String(ID))
    parent_run_id: Mapped[str | None] = mapped_column(String(ID))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_seq: Mapped[int] = mapped_column(BigInteger)


class HistoryRow(Base):
    """Every event of every workflow; ``body`` is the event's own fields as JSON."""

    __tablename__ = "history"

    workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(ID))
    event_type: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    command_id: Mapped[str] = mapped_column(String(ID))
    body: Mapped[str] = mapped_column(Text)


class ChildLinkRow(Base):
    """A child a parent run scheduled, and its outcome once the parent recorded it."""

    __tablename__ = "child_links"
    __table_args__ = (Index("ix_child_links_child", "child_workflow_id"),)

    parent_workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    parent_run_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    child_workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    child_workflow_type: Mapped[str] = mapped_column(String(NAME))
    state: Mapped[str] = mapped_column(String(16))
    scheduled_seq: Mapped[int] = mapped_column(BigInteger)
    scheduled_at: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    result: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[str | None] = mapped_column(Text)


class RegistryRow(Base):
    """Which engine instance (the batch writer) owns a run, on which partition."""

    __tablename__ = "registry"
    __table_args__ = (
        Index("ix_registry_partition", "partition", "workflow_id", "run_id"),
        Index("ix_registry_owner", "owner", "workflow_id", "run_id"),
        Index("ix_registry_status_type", "status", "workflow_type", "package_version"),
    )

    workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    workflow_type: Mapped[str] = mapped_column(String(NAME))
    package_version: Mapped[str] = mapped_column(String(NAME))
    status: Mapped[str] = mapped_column(String(16))
    partition: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(ID))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class HeldEventRow(Base):
    """An event that arrived ahead of a missing seq, stored as in history until the gap fills."""

    __tablename__ = "held_events"

    workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(ID))
    event_type: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    command_id: Mapped[str] = mapped_column(String(ID))
    body: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    writer: Mapped[str] = mapped_column(String(ID))


class OffsetRow(Base):
    """The next offset to consume per (topic, partition), written with the views it produced."""

    __tablename__ = "projector_offsets"

    topic: Mapped[str] = mapped_column(String(ID), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    next_offset: Mapped[int] = mapped_column(BigInteger)


class RefusalRow(Base):
    """A command the engine refused (``CommandRefused`` on the replies topic), kept with why.

    Keyed by (workflow id, command id): a refusal re-delivered changes nothing. A refusal may
    name a workflow the views never saw (a start of an unknown type, a signal to a missing id).
    """

    __tablename__ = "command_refusals"
    __table_args__ = (
        Index("ix_command_refusals_refused", "refused_at", "workflow_id", "command_id"),
    )

    workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    command_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    command_type: Mapped[str] = mapped_column(String(NAME))
    code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    refused_at: Mapped[datetime] = mapped_column(UtcDateTime())
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)


class DeadLetterRow(Base):
    """A record some consumer refused, as read from the dead-letter topic, with why.

    Keyed by the dead letter's own coordinates (topic, partition, offset), so a re-delivered
    record changes nothing. The ``source_*`` columns, the reason and the error class come from
    the ``aion.dlq.*`` headers; a record without valid ones (a foreign producer's) is kept with
    them null and ``reason`` saying so. ``preview`` is the start of the value, undecoded bytes
    shown as escapes: the value itself may be what failed to decode.
    """

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_at", "dead_lettered_at", "partition", "offset"),)

    topic: Mapped[str] = mapped_column(String(ID), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    dead_lettered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    workflow_id: Mapped[str | None] = mapped_column(String(ID))
    source_topic: Mapped[str | None] = mapped_column(String(ID))
    source_partition: Mapped[int | None] = mapped_column(Integer)
    source_offset: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(String(NAME))
    reason: Mapped[str] = mapped_column(Text)
    value_size: Mapped[int] = mapped_column(Integer)
    preview: Mapped[str] = mapped_column(Text)


class ActivityRow(Base):
    """An activity a run scheduled: where its current attempt stands, or how it ended.

    ``last_error_*`` is the latest failed attempt's error; ``next_attempt_at`` is set while it
    backs off; ``heartbeat_details`` (JSON) are the latest an attempt reported.
    """

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_state", "state", "workflow_id"),)

    workflow_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    activity_type: Mapped[str] = mapped_column(String(NAME))
    task_queue: Mapped[str] = mapped_column(String(NAME))
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    scheduled_seq: Mapped[int] = mapped_column(BigInteger)
    scheduled_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    worker: Mapped[str | None] = mapped_column(String(NAME))
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    heartbeat_details: Mapped[str | None] = mapped_column(Text)
    last_error_type: Mapped[str | None] = mapped_column(String(NAME))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    timeout: Mapped[str | None] = mapped_column(String(32))
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    result: Mapped[str | None] = mapped_column(Text)
