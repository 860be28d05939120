"""The API's request and response bodies (pydantic), and their mapping from the query views."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from aion_common.domain import IdReusePolicy, QueryAnswer
from aion_projector.queries import (
    ActivityView,
    ChildView,
    HistoryEntry,
    Refusal,
    RegistryEntry,
    RunView,
    TreeNode,
    WorkflowDescription,
    WorkflowSummary,
)

__all__ = [
    "Accepted",
    "ActivityOut",
    "ChildOut",
    "CommandStatusOut",
    "Description",
    "Health",
    "HistoryEventOut",
    "HistoryPage",
    "QueryOut",
    "QueryRequest",
    "ReasonRequest",
    "RefusalList",
    "RefusalOut",
    "RegistryOut",
    "RegistryPage",
    "ResultOut",
    "RunOut",
    "SignalRequest",
    "StartRequest",
    "SummaryOut",
    "TreeOut",
    "WaitItemOut",
    "WaitingOut",
    "WorkflowList",
    "json_value",
]

_REQUEST_ID = Field(
    default=None,
    min_length=1,
    max_length=255,
    description="Idempotency key: a retried request with the same id becomes the same command.",
)


def json_value(text: str | None) -> Any:
    """The JSON value stored as ``text`` (None stays None)."""
    return None if text is None else orjson.loads(text)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class SummaryOut(_Out):
    """A workflow as lists show it."""

    workflow_id: str
    workflow_type: str
    status: str
    current_run_id: str
    first_run_id: str
    parent_workflow_id: str | None
    parent_run_id: str | None
    started_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    last_seq: int

    @classmethod
    def of(cls, s: WorkflowSummary) -> SummaryOut:
        """From the query view."""
        return cls.model_validate(s, from_attributes=True)


class WorkflowList(_Out):
    """A page of workflows; pass ``next_cursor`` as ``cursor`` for the next page, or
    ``prev_cursor`` as ``before`` for the previous one."""

    items: list[SummaryOut]
    next_cursor: str | None
    prev_cursor: str | None = None


class RunOut(_Out):
    """One run of the chain; ``result`` and ``error_details`` are the JSON values."""

    run_id: str
    first_run_id: str = Field(description="The run that began this run's chain.")
    workflow_type: str
    status: str
    previous_run_id: str | None
    next_run_id: str | None
    package_version: str
    started_at: datetime
    closed_at: datetime | None
    result: JsonValue = None
    error_message: str | None
    error_details: JsonValue = None
    error_type: str | None = None
    error_traceback: str | None = None

    @classmethod
    def of(cls, r: RunView) -> RunOut:
        """From the query view."""
        return cls(
            run_id=r.run_id,
            first_run_id=r.first_run_id,
            workflow_type=r.workflow_type,
            status=r.status,
            previous_run_id=r.previous_run_id,
            next_run_id=r.next_run_id,
            package_version=r.package_version,
            started_at=r.started_at,
            closed_at=r.closed_at,
            result=json_value(r.result),
            error_message=r.error_message,
            error_details=json_value(r.error_details),
            error_type=r.error_type,
            error_traceback=r.error_traceback,
        )


class ChildOut(_Out):
    """A child a run scheduled, with its outcome once the parent recorded it."""

    parent_run_id: str
    child_workflow_id: str
    child_workflow_type: str
    state: str
    scheduled_at: datetime
    closed_at: datetime | None
    result: JsonValue = None
    error_message: str | None

    @classmethod
    def of(cls, c: ChildView) -> ChildOut:
        """From the query view."""
        return cls(
            parent_run_id=c.parent_run_id,
            child_workflow_id=c.child_workflow_id,
            child_workflow_type=c.child_workflow_type,
            state=c.state,
            scheduled_at=c.scheduled_at,
            closed_at=c.closed_at,
            result=json_value(c.result),
            error_message=c.error_message,
        )


class ActivityOut(_Out):
    """An open activity: its attempt, last failure, next retry and last heartbeat."""

    activity_id: str
    activity_type: str
    task_queue: str
    state: str = Field(description="SCHEDULED, STARTED or BACKING_OFF.")
    attempt: int
    scheduled_at: datetime
    started_at: datetime | None
    worker: str | None
    last_heartbeat_at: datetime | None
    heartbeat_details: JsonValue = None
    last_error_type: str | None
    last_error_message: str | None
    next_attempt_at: datetime | None
    timeout: str | None = Field(description="The clock that failed the last attempt, if any.")
    cancel_requested: bool

    @classmethod
    def of(cls, a: ActivityView) -> ActivityOut:
        """From the query view."""
        fields = {name: getattr(a, name) for name in cls.model_fields}
        return cls(**{**fields, "heartbeat_details": json_value(a.heartbeat_details)})


class Description(_Out):
    """``describe``: the summary, its current run, the run chain oldest first, children, and
    the current run's open activities."""

    workflow: SummaryOut
    current_run: RunOut
    runs: list[RunOut]
    children: list[ChildOut]
    held_events: int = Field(description="Events received ahead of a gap, not yet applied.")
    pending_activities: list[ActivityOut] = Field(
        default_factory=list, description="The current run's open activities, oldest first."
    )

    @classmethod
    def of(cls, d: WorkflowDescription) -> Description:
        """From the query view."""
        return cls(
            workflow=SummaryOut.of(d.summary),
            current_run=RunOut.of(d.current_run),
            runs=[RunOut.of(r) for r in d.runs],
            children=[ChildOut.of(c) for c in d.children],
            held_events=d.held_events,
            pending_activities=[ActivityOut.of(a) for a in d.pending_activities],
        )


class HistoryEventOut(_Out):
    """One event: its envelope and its own fields."""

    seq: int
    run_id: str
    event_type: str
    recorded_at: datetime
    command_id: str
    fields: JsonValue

    @classmethod
    def of(cls, e: HistoryEntry) -> HistoryEventOut:
        """From the query view."""
        return cls(
            seq=e.seq,
            run_id=e.run_id,
            event_type=e.event_type,
            recorded_at=e.recorded_at,
            command_id=e.command_id,
            fields=e.fields(),
        )


class HistoryPage(_Out):
    """Events in seq order; ``next_from_seq`` is set when more may follow."""

    workflow_id: str
    events: list[HistoryEventOut]
    next_from_seq: int | None


class ArchivedIncarnationOut(_Out):
    """One purged incarnation of a workflow id: when it was purged, and its whole history."""

    purged_at: datetime
    location: str
    events: list[HistoryEventOut]


class ArchivedHistoryOut(_Out):
    """Every archived (purged) incarnation of a workflow id, oldest purge first."""

    workflow_id: str
    incarnations: list[ArchivedIncarnationOut]


class TreeOut(_Out):
    """A workflow and its descendants (``workflow_type``/``status`` null if not yet seen)."""

    workflow_id: str
    workflow_type: str | None
    status: str | None
    children: list[TreeOut]

    @classmethod
    def of(cls, node: TreeNode) -> TreeOut:
        """From the query view."""
        return cls(
            workflow_id=node.workflow_id,
            workflow_type=node.workflow_type,
            status=node.status,
            children=[cls.of(child) for child in node.children],
        )


class RegistryOut(_Out):
    """Which engine instance owns a run, on which partition, with which package version."""

    workflow_id: str
    run_id: str
    workflow_type: str
    package_version: str
    status: str
    partition: int
    owner: str
    updated_at: datetime

    @classmethod
    def of(cls, r: RegistryEntry) -> RegistryOut:
        """From the query view."""
        return cls.model_validate(r, from_attributes=True)


class RegistryPage(_Out):
    """Registry rows by workflow id and run id."""

    items: list[RegistryOut]


class RefusalOut(_Out):
    """A command the engine refused: ``code`` is stable (``RefusalCode``), ``reason`` for
    people."""

    workflow_id: str
    command_id: str
    command_type: str
    code: str
    reason: str
    refused_at: datetime

    @classmethod
    def of(cls, r: Refusal) -> RefusalOut:
        """From the query view."""
        return cls.model_validate(r, from_attributes=True)


class RefusalList(_Out):
    """Refusals of commands sent to one workflow id, newest first."""

    workflow_id: str
    items: list[RefusalOut]


class ResultOut(_Out):
    """Where a workflow stands: closed (with result or error) or still running."""

    workflow_id: str
    run_id: str | None
    status: str
    closed: bool
    result: JsonValue = None
    error_message: str | None = None
    error_details: JsonValue = None
    error_type: str | None = None
    error_traceback: str | None = None
    pending_reason: str | None = Field(
        default=None,
        description="While PENDING: why the command may not be taken soon (no engine is "
        "running for the workflow's partition), if known.",
    )


class Accepted(_Out):
    """A command was queued for the engine; it is applied asynchronously."""

    workflow_id: str
    command_id: str
    run_id: str | None = Field(
        default=None,
        description="For a start: the run it opens once the engine admits it (pass it to "
        "``/result`` to wait for exactly this run).",
    )


class CommandStatusOut(_Out):
    """What became of one command: the engine applied it, refused it, or has not yet."""

    workflow_id: str
    command_id: str
    state: str = Field(description="APPLIED, REFUSED or PENDING.")
    run_id: str | None = Field(
        default=None, description="APPLIED: the run the command's first event belongs to."
    )
    refusal: RefusalOut | None = Field(default=None, description="REFUSED: code and reason.")
    pending_reason: str | None = Field(
        default=None,
        description="PENDING: why it may not be taken soon (no engine is running for the "
        "workflow's partition), if known.",
    )


class Health(_Out):
    """The API and its database answer."""

    status: str


class StartRequest(BaseModel):
    """Start a workflow of ``type`` with ``input``."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=128, description="The workflow type name.")
    input: JsonValue = Field(default=None, description="Any JSON value.")
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Workflow id; generated (derived from request_id when given) if absent.",
    )
    request_id: str | None = _REQUEST_ID
    execution_timeout_ms: int | None = Field(default=None, ge=1, le=2**53)
    package_version: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="Pin the run to this package version (default: the type's route).",
    )
    id_reuse_policy: IdReusePolicy = Field(
        default=IdReusePolicy.ALLOW_DUPLICATE,
        description="When the id was used before. ALLOW_DUPLICATE (the default, as "
        "Temporal's): a closed id may be started again, a running one is refused "
        "ALREADY_RUNNING. ALLOW_DUPLICATE_FAILED_ONLY: only if its last run did not complete. "
        "REJECT_DUPLICATE: never (ID_REUSE_REJECTED). TERMINATE_IF_RUNNING: a running run is "
        "terminated and the new one started in its place; a closed id is started again.",
    )


class StartIfAbsent(BaseModel):
    """Start a run of ``type`` with ``input`` when the workflow has no open run."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=128, description="The workflow type name.")
    input: JsonValue = Field(default=None, description="Any JSON value.")
    execution_timeout_ms: int | None = Field(default=None, ge=1, le=2**53)
    id_reuse_policy: Literal[
        "ALLOW_DUPLICATE", "ALLOW_DUPLICATE_FAILED_ONLY", "REJECT_DUPLICATE"
    ] = Field(default="ALLOW_DUPLICATE", description="Whether a closed id may start again.")
    package_version: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="Pin a run it starts to this package version (default: the type's route).",
    )


class SignalRequest(BaseModel):
    """Deliver a signal with ``payload``; with ``start``, start the workflow first if it has
    no open run (signal-with-start: the signal reaches the new run's first step)."""

    model_config = ConfigDict(extra="forbid")

    payload: JsonValue = Field(default=None, description="Any JSON value.")
    request_id: str | None = _REQUEST_ID
    start: StartIfAbsent | None = Field(
        default=None, description="Signal-with-start: the run to start when none is open."
    )


class ReasonRequest(BaseModel):
    """Cancel or terminate, saying why."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=4096)
    request_id: str | None = _REQUEST_ID


class QueryRequest(BaseModel):
    """Ask a query: ``args`` are the handler's positional arguments."""

    model_config = ConfigDict(extra="forbid")

    args: list[JsonValue] = Field(
        default_factory=list, description="The handler's positional arguments (JSON)."
    )
    run_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Ask this run (a closed one is replayed); default: the current run.",
    )
    timeout: float | None = Field(
        default=None, gt=0, le=60, description="Seconds to wait for the engine (default 5)."
    )


class QueryOut(_Out):
    """A query's answer: the handler's JSON ``result``, from run ``run_id``'s state."""

    workflow_id: str
    run_id: str | None
    name: str
    result: JsonValue
    replayed: bool = Field(description="The run is closed: its code was replayed to answer.")
    last_seq: int = Field(description="The newest event the state that answered held.")
    answered_at: datetime

    @classmethod
    def of(cls, answer: QueryAnswer) -> QueryOut:
        """From the engine's answer (ANSWERED: it holds a result)."""
        assert answer.result is not None
        return cls(
            workflow_id=answer.workflow_id,
            run_id=answer.run_id,
            name=answer.name,
            result=cast("JsonValue", answer.result.to_json()),
            replayed=answer.replayed,
            last_seq=answer.last_seq,
            answered_at=answer.answered_at,
        )


class WaitItemOut(_Out):
    """One thing an open run waits on; which fields are set depends on ``kind``."""

    kind: str = Field(description="child, timer, signal or activity.")
    awaited: bool = Field(description="The run's code is suspended awaiting this one now.")
    workflow_id: str | None = Field(default=None, description="child: its workflow id.")
    workflow_type: str | None = Field(default=None, description="child: its type.")
    timer_id: str | None = Field(default=None, description="timer: its id.")
    purpose: str | None = Field(
        default=None, description="timer: sleep, execution timeout (or timer when blocked)."
    )
    fire_at: datetime | None = Field(default=None, description="timer: when it fires.")
    name: str | None = Field(default=None, description="signal: its name.")
    deadline: datetime | None = Field(
        default=None, description="signal: when the wait times out (null: never)."
    )
    activity_id: str | None = Field(default=None, description="activity: its id.")
    activity_type: str | None = Field(default=None, description="activity: its type.")
    attempt: int | None = Field(default=None, description="activity: the current attempt.")
    state: str | None = Field(default=None, description="activity: queued, started, backing-off.")
    next_retry_at: datetime | None = Field(
        default=None, description="activity: when the next attempt is due (backing off)."
    )
    last_error: str | None = Field(default=None, description="activity: the last failure.")
    last_heartbeat_at: datetime | None = Field(default=None, description="activity.")
    since: datetime | None = Field(
        default=None, description="child, activity: when it was scheduled."
    )


class WaitingOut(_Out):
    """What a workflow's current run waits on now, and where its code is suspended."""

    workflow_id: str
    run_id: str | None
    status: str = Field(description="RUNNING, BLOCKED, or the closed run's status.")
    blocked_reason: str | None = None
    waiting_on: list[WaitItemOut]
    stack: list[str] = Field(
        description="``file:line in function: source`` of each frame of the run's code that "
        "is suspended, outermost first."
    )
    last_seq: int | None = Field(
        default=None, description="The newest event the engine's state held when it answered."
    )

    @classmethod
    def of(cls, workflow_id: str, answer: QueryAnswer) -> WaitingOut:
        """From the engine's answer to ``__waiting_on``."""
        assert answer.result is not None
        found = cast("dict[str, Any]", answer.result.to_json())
        return cls(
            workflow_id=workflow_id,
            run_id=found.get("run_id"),
            status=found.get("status", "RUNNING"),
            blocked_reason=found.get("blocked_reason"),
            waiting_on=[WaitItemOut.model_validate(item) for item in found.get("waiting_on", ())],
            stack=list(found.get("stack", ())),
            last_seq=answer.last_seq,
        )

    @classmethod
    def closed(cls, workflow_id: str, run_id: str, status: str) -> WaitingOut:
        """A closed run waits on nothing."""
        return cls(workflow_id=workflow_id, run_id=run_id, status=status, waiting_on=[], stack=[])
