"""Events: a workflow's history. Frozen, slotted, keyword-only; named in the past tense.

Every event carries the envelope ``workflow_id``, ``run_id``, ``seq`` (1, 2, 3 … per workflow,
across all its runs), ``recorded_at`` and the ``command_id`` of the command that caused it.
All events one command produced travel together as one :class:`EventBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aion_common.domain.activities import ActivityOptions, TimeoutKind
from aion_common.domain.errors import InvalidInput
from aion_common.domain.outcomes import ParentClosePolicy, ParentLink
from aion_common.domain.payload import Payload, WorkflowError

__all__ = [
    "ACTIVITY_RESOLUTION_TYPES",
    "EVENT_TYPES",
    "TERMINAL_EVENT_TYPES",
    "ActivityAttemptFailed",
    "ActivityAttemptScheduled",
    "ActivityCancelRequested",
    "ActivityCancelled",
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityHeartbeatRecorded",
    "ActivityScheduled",
    "ActivityStarted",
    "ActivityTimedOut",
    "CancelRequested",
    "CarriedChild",
    "ChildWorkflowCompleted",
    "ChildWorkflowFailed",
    "ChildWorkflowScheduled",
    "Event",
    "EventBase",
    "EventBatch",
    "PublishHeader",
    "RecordPublished",
    "SignalReceived",
    "TimerFired",
    "TimerScheduled",
    "WorkflowBlocked",
    "WorkflowCancelled",
    "WorkflowCompleted",
    "WorkflowContinuedAsNew",
    "WorkflowFailed",
    "WorkflowMoved",
    "WorkflowPurged",
    "WorkflowStarted",
    "WorkflowTimedOut",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class EventBase:
    """The envelope every event carries."""

    workflow_id: str
    run_id: str
    seq: int
    recorded_at: datetime
    command_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CarriedChild:
    """A child still open when its parent continued-as-new: it stays attached to the chain,
    and its terminal is recorded in (and awaitable from) the run that carries it now.
    ``origin_run_id`` is the run that scheduled it (the run its own start names as parent)."""

    child_workflow_id: str
    child_workflow_type: str
    parent_close_policy: ParentClosePolicy
    origin_run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowStarted(EventBase):
    """A run began. ``first_run_id`` anchors the continue-as-new chain (temporal#364)."""

    workflow_type: str
    input: Payload
    first_run_id: str
    previous_run_id: str | None = None
    parent: ParentLink | None = None
    package_version: str = ""
    execution_timeout_ms: int | None = None
    attempt: int = 1
    pinned: bool = False
    """The start named its version (a new route does not move the run)."""
    carried_children: tuple[CarriedChild, ...] = ()
    """Children of the previous run still open at its continue-as-new, attached to this run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowCompleted(EventBase):
    """The run returned a result."""

    result: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowFailed(EventBase):
    """The run raised, hit non-determinism, or was terminated (message ``terminated:<reason>``)."""

    error: WorkflowError


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowCancelled(EventBase):
    """The run ended by accepting a cancellation."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTimedOut(EventBase):
    """The run exceeded its execution timeout."""

    timeout: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowContinuedAsNew(EventBase):
    """The run closed; the next run (``next_run_id``) starts with ``input``."""

    input: Payload
    workflow_type: str | None
    next_run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildWorkflowScheduled(EventBase):
    """The run started a child; its ``StartWorkflow`` went out with ``start_command_id``."""

    child_workflow_id: str
    child_workflow_type: str
    input: Payload
    parent_close_policy: ParentClosePolicy
    start_command_id: str
    execution_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildWorkflowCompleted(EventBase):
    """A child's final run completed; recorded once per child per parent run."""

    child_workflow_id: str
    result: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildWorkflowFailed(EventBase):
    """A child failed, was cancelled (``cancelled:…``) or timed out (``timed_out:…``)."""

    child_workflow_id: str
    error: WorkflowError


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalReceived(EventBase):
    """A signal was delivered to the run."""

    name: str
    payload: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerScheduled(EventBase):
    """A durable timer was set (a sleep, a signal wait's timeout, or the execution timeout)."""

    timer_id: str
    fire_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(EventBase):
    """A durable timer fired."""

    timer_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested(EventBase):
    """Someone asked the run to cancel; the workflow's own code decides the outcome."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityScheduled(EventBase):
    """The run scheduled an activity; its first attempt's task went to the queue's topic in
    the same transaction. ``activity_id`` is derived from the run and the step, and is the
    idempotency key every attempt sees."""

    activity_id: str
    activity_type: str
    input: Payload
    options: ActivityOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityStarted(EventBase):
    """A worker (``worker``) began attempt ``attempt``; its start-to-close clock runs from here."""

    activity_id: str
    attempt: int
    worker: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityHeartbeatRecorded(EventBase):
    """The running attempt heartbeated; ``details`` is what the next attempt sees."""

    activity_id: str
    attempt: int
    details: Payload | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityAttemptFailed(EventBase):
    """An attempt failed (raised, or timed out: ``timeout``) and will be retried at
    ``next_attempt_at`` (a durable timer)."""

    activity_id: str
    attempt: int
    error: WorkflowError
    next_attempt_at: datetime
    timeout: TimeoutKind | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityAttemptScheduled(EventBase):
    """The retry timer fired: attempt ``attempt``'s task went to the queue's topic."""

    activity_id: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCompleted(EventBase):
    """Attempt ``attempt`` returned ``result``: the activity is done."""

    activity_id: str
    attempt: int
    result: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityFailed(EventBase):
    """The activity failed for good: a non-retryable error, or no attempts or time left."""

    activity_id: str
    attempt: int
    error: WorkflowError
    non_retryable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityTimedOut(EventBase):
    """A timeout ended the activity (schedule-to-close, schedule-to-start, or an attempt's
    timeout with no retry left); ``last_error`` is the last attempt's failure, if any."""

    activity_id: str
    attempt: int
    timeout: TimeoutKind
    last_error: WorkflowError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCancelRequested(EventBase):
    """Cancellation of the activity was requested: by the workflow's code
    (``by_workflow_code``), or because the run itself was asked to cancel. A cancel notice
    went to the queue's topic in the same transaction."""

    activity_id: str
    reason: str
    by_workflow_code: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCancelled(EventBase):
    """The activity ended cancelled (its worker confirmed, or it was not running)."""

    activity_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowBlocked(EventBase):
    """The run's code cannot go on: its replay diverged from its history, its package failed
    to load, or it broke before its first decision (``error``). The run stays open: inputs
    still arrive and are recorded, and it resumes when moved to code that replays it."""

    reason: str
    error: WorkflowError


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowMoved(EventBase):
    """The run goes on on package version ``package_version`` (it was on
    ``previous_version``), whose code replayed its history."""

    package_version: str
    previous_version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowPurged(EventBase):
    """The closed workflow's retention ran out and it was forgotten, after its terminal: every
    reader drops what it holds of it (the views archive its history first). Its id is free
    again: the next start of it begins a new history at seq 1. ``run_id`` is its last run."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishHeader:
    """One header of a published record."""

    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordPublished(EventBase):
    """The run's code published a record to the Kafka topic ``topic`` (``ctx.publish``); the
    engine wrote it in the transaction that appended this event, so it exists exactly when
    this event does. ``value`` is the JSON value the code gave, ``value_format`` how it was
    written (``json``, ``avro/single-object``, ``avro/confluent``); ``publish_id`` (also the
    record's ``aion.publish.id`` header) is derived from the run and the call's position."""

    publish_id: str
    topic: str
    key: str | None = None
    value: Payload
    value_format: str = "json"
    headers: tuple[PublishHeader, ...] = ()


Event = (
    WorkflowStarted
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowCancelled
    | WorkflowTimedOut
    | WorkflowContinuedAsNew
    | ChildWorkflowScheduled
    | ChildWorkflowCompleted
    | ChildWorkflowFailed
    | SignalReceived
    | TimerScheduled
    | TimerFired
    | CancelRequested
    | ActivityScheduled
    | ActivityStarted
    | ActivityHeartbeatRecorded
    | ActivityAttemptFailed
    | ActivityAttemptScheduled
    | ActivityCompleted
    | ActivityFailed
    | ActivityTimedOut
    | ActivityCancelRequested
    | ActivityCancelled
    | WorkflowBlocked
    | WorkflowMoved
    | WorkflowPurged
    | RecordPublished
)

EVENT_TYPES: tuple[type[EventBase], ...] = (
    WorkflowStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowTimedOut,
    WorkflowContinuedAsNew,
    ChildWorkflowScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    SignalReceived,
    TimerScheduled,
    TimerFired,
    CancelRequested,
    ActivityScheduled,
    ActivityStarted,
    ActivityHeartbeatRecorded,
    ActivityAttemptFailed,
    ActivityAttemptScheduled,
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    ActivityCancelRequested,
    ActivityCancelled,
    WorkflowBlocked,
    WorkflowMoved,
    WorkflowPurged,
    RecordPublished,
)

ACTIVITY_RESOLUTION_TYPES: tuple[type[EventBase], ...] = (
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    ActivityCancelled,
)
"""The events that end an activity (what its handle's ``result()`` waits for)."""

TERMINAL_EVENT_TYPES: tuple[type[EventBase], ...] = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowTimedOut,
    WorkflowContinuedAsNew,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventBatch:
    """Every event one command produced for one workflow, in seq order: one Kafka record.

    ``writer`` names the engine instance that appended it (the registry's owner column).
    """

    workflow_id: str
    command_id: str
    writer: str
    events: tuple[Event, ...]

    def __post_init__(self) -> None:
        if not self.events:
            raise InvalidInput("an event batch holds at least one event")
        for previous, event in zip(self.events, self.events[1:], strict=False):
            if event.seq != previous.seq + 1:
                raise InvalidInput(f"event batch seqs not contiguous: {previous.seq}, {event.seq}")
        if any(event.workflow_id != self.workflow_id for event in self.events):
            raise InvalidInput("an event batch holds events of one workflow only")

    @property
    def first_seq(self) -> int:
        """Seq of the batch's first event."""
        return self.events[0].seq

    @property
    def last_seq(self) -> int:
        """Seq of the batch's last event."""
        return self.events[-1].seq
