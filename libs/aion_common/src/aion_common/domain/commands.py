"""Commands: requests to change a workflow. Frozen, slotted, keyword-only; named imperatively.

Every command carries ``command_id`` (the idempotency key: an id the engine already applied to
a workflow is a no-op), ``issued_at`` and the target ``workflow_id`` (the Kafka key).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from aion_common.domain.events import EventBatch
from aion_common.domain.ids import record_child_terminal_id
from aion_common.domain.outcomes import IdReusePolicy, ParentLink, TerminalOutcome
from aion_common.domain.payload import Payload, WorkflowError

__all__ = [
    "ACTIVITY_REPORT_TYPES",
    "COMMAND_TYPES",
    "ActivityReport",
    "CancelWorkflow",
    "Command",
    "CommandBase",
    "CommandRefused",
    "CompleteActivity",
    "FailActivityAttempt",
    "FireTimer",
    "MoveWorkflow",
    "PurgeWorkflow",
    "QueryWorkflow",
    "RecordActivityHeartbeat",
    "RecordActivityStarted",
    "RecordChildTerminal",
    "RefusalCode",
    "SignalWithStartWorkflow",
    "SignalWorkflow",
    "StartWorkflow",
    "TerminateWorkflow",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandBase:
    """The envelope every command carries."""

    command_id: str
    issued_at: datetime
    workflow_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartWorkflow(CommandBase):
    """Start a run of ``workflow_type``; a child start names its ``parent``."""

    workflow_type: str
    input: Payload
    parent: ParentLink | None = None
    execution_timeout_ms: int | None = None
    id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE
    package_version: str = ""
    """Pin the run to this package version; empty: the type's route (or the engine's own)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalWorkflow(CommandBase):
    """Deliver signal ``name`` with ``payload`` to the workflow's current run."""

    name: str
    payload: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalWithStartWorkflow(CommandBase):
    """Deliver signal ``signal_name`` to the workflow's open run; when it has none, start a
    run of ``workflow_type`` with ``input`` first (as :class:`StartWorkflow` would, under the
    same id reuse policy) and record the signal with that start, so the run's code sees it
    before its first step."""

    workflow_type: str
    input: Payload
    signal_name: str
    signal_payload: Payload
    execution_timeout_ms: int | None = None
    id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE
    package_version: str = ""
    """Pin a run it starts to this package version; empty: the type's route."""

    def start(self) -> StartWorkflow:
        """The start this command makes when the workflow has no open run (same command id)."""
        return StartWorkflow(
            command_id=self.command_id,
            issued_at=self.issued_at,
            workflow_id=self.workflow_id,
            workflow_type=self.workflow_type,
            input=self.input,
            execution_timeout_ms=self.execution_timeout_ms,
            id_reuse_policy=self.id_reuse_policy,
            package_version=self.package_version,
        )

    def signal(self) -> SignalWorkflow:
        """The signal this command delivers (same command id)."""
        return SignalWorkflow(
            command_id=self.command_id,
            issued_at=self.issued_at,
            workflow_id=self.workflow_id,
            name=self.signal_name,
            payload=self.signal_payload,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelWorkflow(CommandBase):
    """Ask the current run to cancel; its code decides the outcome."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminateWorkflow(CommandBase):
    """End the current run at once, as failed with ``terminated:<reason>``."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordChildTerminal(CommandBase):
    """Record a child's final terminal in the parent run ``parent_run_id`` (``workflow_id``)."""

    parent_run_id: str
    child_workflow_id: str
    child_run_id: str
    outcome: TerminalOutcome

    @classmethod
    def of(
        cls,
        parent_workflow_id: str,
        parent_run_id: str,
        *,
        child_workflow_id: str,
        child_run_id: str,
        outcome: TerminalOutcome,
        issued_at: datetime,
    ) -> RecordChildTerminal:
        """The record of a child's final terminal under the command id every issuer derives
        alike (:func:`~aion_common.domain.ids.record_child_terminal_id`), so the watcher's
        record, its re-issues and the engine's own (a refused child start) are one command."""
        return cls(
            command_id=record_child_terminal_id(
                parent_workflow_id, parent_run_id, child_workflow_id
            ),
            issued_at=issued_at,
            workflow_id=parent_workflow_id,
            parent_run_id=parent_run_id,
            child_workflow_id=child_workflow_id,
            child_run_id=child_run_id,
            outcome=outcome,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FireTimer(CommandBase):
    """A durable timer of run ``run_id`` is due (the engine sends this to itself)."""

    run_id: str
    timer_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordActivityStarted(CommandBase):
    """A worker began attempt ``attempt`` of activity ``activity_id`` of run ``run_id``.

    Workers send it when the attempt outlives a moment or a schedule-to-start clock runs; a
    completion or heartbeat without it implies it.
    """

    run_id: str
    activity_id: str
    attempt: int
    worker: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordActivityHeartbeat(CommandBase):
    """The running attempt is alive; ``details`` (optional) is what a later attempt sees."""

    run_id: str
    activity_id: str
    attempt: int
    details: Payload | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteActivity(CommandBase):
    """Attempt ``attempt`` returned ``result``."""

    run_id: str
    activity_id: str
    attempt: int
    result: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class FailActivityAttempt(CommandBase):
    """Attempt ``attempt`` raised ``error`` (or confirmed its cancellation: ``cancelled``);
    ``non_retryable`` ends the activity without another attempt."""

    run_id: str
    activity_id: str
    attempt: int
    error: WorkflowError
    non_retryable: bool = False
    cancelled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveWorkflow(CommandBase):
    """Go on with run ``run_id`` on package version ``package_version``, if its code replays
    the run's history (an operator's ``aion run move``, or a new route reaching a blocked run)."""

    run_id: str
    package_version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryWorkflow(CommandBase):
    """Ask query ``name`` of a run, with ``args`` (a JSON array): answered on the replies topic
    from the run's state (a :class:`~aion_common.domain.queries.QueryAnswer` under this
    command's id), never changing its history.

    ``run_id`` None asks the workflow's open run. A closed run is answered by replaying its
    code against ``history`` (every event of that run); without it the engine answers
    ``RUN_CLOSED``. Nobody waits for the answer after ``deadline``: an engine that reaches the
    query later drops it.
    """

    name: str
    args: Payload
    deadline: datetime
    run_id: str | None = None
    history: EventBatch | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeWorkflow(CommandBase):
    """Forget a closed workflow whose retention ran out (the engine's retention sweep sends
    it, with the id ``derive_id("purge", workflow id, last seq)``). Applied only if the
    workflow is closed and its last seq is still ``last_seq``: one that started again since is
    not purged."""

    last_seq: int


ActivityReport = (
    RecordActivityStarted | RecordActivityHeartbeat | CompleteActivity | FailActivityAttempt
)

ACTIVITY_REPORT_TYPES: tuple[type[CommandBase], ...] = (
    RecordActivityStarted,
    RecordActivityHeartbeat,
    CompleteActivity,
    FailActivityAttempt,
)

Command = (
    StartWorkflow
    | SignalWorkflow
    | SignalWithStartWorkflow
    | CancelWorkflow
    | TerminateWorkflow
    | RecordChildTerminal
    | FireTimer
    | RecordActivityStarted
    | RecordActivityHeartbeat
    | CompleteActivity
    | FailActivityAttempt
    | MoveWorkflow
    | QueryWorkflow
    | PurgeWorkflow
)

COMMAND_TYPES: tuple[type[CommandBase], ...] = (
    StartWorkflow,
    SignalWorkflow,
    CancelWorkflow,
    TerminateWorkflow,
    RecordChildTerminal,
    FireTimer,
    *ACTIVITY_REPORT_TYPES,
    MoveWorkflow,
    QueryWorkflow,
    PurgeWorkflow,
    SignalWithStartWorkflow,
)


class RefusalCode(enum.Enum):
    """Stable machine-readable reasons a command was refused."""

    ALREADY_RUNNING = "ALREADY_RUNNING"
    ID_REUSE_REJECTED = "ID_REUSE_REJECTED"
    UNKNOWN_WORKFLOW = "UNKNOWN_WORKFLOW"
    WORKFLOW_CLOSED = "WORKFLOW_CLOSED"
    UNKNOWN_WORKFLOW_TYPE = "UNKNOWN_WORKFLOW_TYPE"
    INVALID_COMMAND = "INVALID_COMMAND"
    INVARIANT_VIOLATION = "INVARIANT_VIOLATION"
    UNKNOWN_ACTIVITY = "UNKNOWN_ACTIVITY"
    STALE_ACTIVITY_REPORT = "STALE_ACTIVITY_REPORT"
    UNKNOWN_PACKAGE = "UNKNOWN_PACKAGE"
    MOVE_REFUSED = "MOVE_REFUSED"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRefused:
    """The engine's answer to a command it did not apply, published on the replies topic."""

    command_id: str
    workflow_id: str
    command_type: str
    code: RefusalCode
    reason: str
    refused_at: datetime
