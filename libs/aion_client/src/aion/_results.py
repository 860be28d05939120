"""The client's typed results, built from the API's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "Accepted",
    "Child",
    "CommandStatus",
    "HistoryEvent",
    "HistoryPage",
    "PendingActivity",
    "Refusal",
    "Run",
    "Schedule",
    "WaitItem",
    "WaitingOn",
    "WorkflowDescription",
    "WorkflowPage",
    "WorkflowResult",
    "WorkflowSummary",
    "WorkflowTree",
]


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """A command the API queued for the engine (for a start, ``run_id`` is the run it opens
    once admitted)."""

    workflow_id: str
    command_id: str
    run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandStatus:
    """What became of a command: ``APPLIED`` (in ``run_id``), ``REFUSED`` (``refusal``), or
    ``PENDING`` — with ``pending_reason`` when no engine is running for its partition."""

    workflow_id: str
    command_id: str
    state: str
    run_id: str | None = None
    refusal: Refusal | None = None
    pending_reason: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CommandStatus:
        """From the API's JSON."""
        refusal = d.get("refusal")
        return cls(
            workflow_id=d["workflow_id"],
            command_id=d["command_id"],
            state=d["state"],
            run_id=d.get("run_id"),
            refusal=None if refusal is None else Refusal.from_json(refusal),
            pending_reason=d.get("pending_reason"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowSummary:
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
    def from_json(cls, d: dict[str, Any]) -> WorkflowSummary:
        """From the API's JSON."""
        return cls(
            **{k: d[k] for k in cls.__dataclass_fields__ if not k.endswith("_at")},
            started_at=datetime.fromisoformat(d["started_at"]),
            updated_at=datetime.fromisoformat(d["updated_at"]),
            closed_at=_time(d["closed_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowPage:
    """A page of a list; pass ``next_cursor`` back for the next one."""

    items: tuple[WorkflowSummary, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One run of a workflow's chain."""

    run_id: str
    workflow_type: str
    status: str
    previous_run_id: str | None
    next_run_id: str | None
    package_version: str
    started_at: datetime
    closed_at: datetime | None
    result: Any
    error_message: str | None
    error_details: Any
    error_type: str | None = None
    error_traceback: str | None = None
    """For a failed run, the exception's type and traceback (the user's file and line); for a
    blocked one, why its code cannot go on. ``Terminated`` is a terminated run's type."""
    first_run_id: str = ""
    """The run that began this run's chain (a continue-as-new chain shares it)."""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Run:
        """From the API's JSON (fields an older API lacks keep their defaults)."""
        return cls(
            **{k: d[k] for k in cls.__dataclass_fields__ if not k.endswith("_at") and k in d},
            started_at=datetime.fromisoformat(d["started_at"]),
            closed_at=_time(d["closed_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Child:
    """A child a run scheduled, with its outcome once recorded."""

    parent_run_id: str
    child_workflow_id: str
    child_workflow_type: str
    state: str
    scheduled_at: datetime
    closed_at: datetime | None
    result: Any
    error_message: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Child:
        """From the API's JSON."""
        return cls(
            **{k: d[k] for k in cls.__dataclass_fields__ if not k.endswith("_at")},
            scheduled_at=datetime.fromisoformat(d["scheduled_at"]),
            closed_at=_time(d["closed_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingActivity:
    """An open activity of the current run: its attempt, last failure, next retry, heartbeat."""

    activity_id: str
    activity_type: str
    task_queue: str
    state: str
    attempt: int
    scheduled_at: datetime
    started_at: datetime | None
    worker: str | None
    last_heartbeat_at: datetime | None
    heartbeat_details: Any
    last_error_type: str | None
    last_error_message: str | None
    next_attempt_at: datetime | None
    timeout: str | None
    cancel_requested: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PendingActivity:
        """From the API's JSON."""
        return cls(
            **{k: d[k] for k in cls.__dataclass_fields__ if not k.endswith("_at")},
            scheduled_at=datetime.fromisoformat(d["scheduled_at"]),
            started_at=_time(d["started_at"]),
            last_heartbeat_at=_time(d["last_heartbeat_at"]),
            next_attempt_at=_time(d["next_attempt_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowDescription:
    """A workflow, its current run, the run chain oldest first, its children, and the current
    run's open activities."""

    workflow: WorkflowSummary
    current_run: Run
    runs: tuple[Run, ...]
    children: tuple[Child, ...]
    held_events: int
    pending_activities: tuple[PendingActivity, ...] = ()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkflowDescription:
        """From the API's JSON."""
        return cls(
            workflow=WorkflowSummary.from_json(d["workflow"]),
            current_run=Run.from_json(d["current_run"]),
            runs=tuple(Run.from_json(r) for r in d["runs"]),
            children=tuple(Child.from_json(c) for c in d["children"]),
            held_events=d["held_events"],
            pending_activities=tuple(
                PendingActivity.from_json(a) for a in d.get("pending_activities", ())
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent:
    """One event of a history: envelope and own fields."""

    seq: int
    run_id: str
    event_type: str
    recorded_at: datetime
    command_id: str
    fields: Any

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HistoryEvent:
        """From the API's JSON."""
        return cls(
            seq=d["seq"],
            run_id=d["run_id"],
            event_type=d["event_type"],
            recorded_at=datetime.fromisoformat(d["recorded_at"]),
            command_id=d["command_id"],
            fields=d["fields"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPage:
    """Events in seq order; ``next_from_seq`` is set when more may follow."""

    workflow_id: str
    events: tuple[HistoryEvent, ...]
    next_from_seq: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedHistory:
    """One purged incarnation of a workflow id, read back from the archive: when its
    retention ran out, where it is kept, and its whole history (the purge last)."""

    workflow_id: str
    purged_at: datetime
    location: str
    events: tuple[HistoryEvent, ...]

    @classmethod
    def from_json(cls, workflow_id: str, d: dict[str, Any]) -> ArchivedHistory:
        """From one of the API's ``incarnations``."""
        return cls(
            workflow_id=workflow_id,
            purged_at=datetime.fromisoformat(d["purged_at"]),
            location=d["location"],
            events=tuple(HistoryEvent.from_json(e) for e in d["events"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTree:
    """A workflow and its descendants."""

    workflow_id: str
    workflow_type: str | None
    status: str | None
    children: tuple[WorkflowTree, ...] = field(default=())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkflowTree:
        """From the API's JSON."""
        return cls(
            workflow_id=d["workflow_id"],
            workflow_type=d["workflow_type"],
            status=d["status"],
            children=tuple(cls.from_json(c) for c in d["children"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowResult:
    """Where a workflow stands: ``closed`` with a result or error, or still running."""

    workflow_id: str
    run_id: str | None
    status: str
    closed: bool
    result: Any = None
    error_message: str | None = None
    error_details: Any = None
    error_type: str | None = None
    """The failure's exception class (``ValueError``; ``Terminated`` when terminated)."""
    error_traceback: str | None = None
    """Where the workflow's code raised it: the user's file, line and function."""
    pending_reason: str | None = None
    """While ``PENDING``: why the start may not be taken soon (``no engine is running for
    partition N``), when the API knows."""

    @property
    def succeeded(self) -> bool:
        """True when the workflow completed."""
        return self.status == "COMPLETED"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkflowResult:
        """From the API's JSON."""
        return cls(
            workflow_id=d["workflow_id"],
            run_id=d.get("run_id"),
            status=d["status"],
            closed=bool(d["closed"]),
            result=d.get("result"),
            error_message=d.get("error_message"),
            error_details=d.get("error_details"),
            error_type=d.get("error_type"),
            error_traceback=d.get("error_traceback"),
            pending_reason=d.get("pending_reason"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A command the engine refused: ``code`` is stable, ``reason`` is for people."""

    workflow_id: str
    command_id: str
    command_type: str
    code: str
    reason: str
    refused_at: datetime

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Refusal:
        """From the API's JSON."""
        return cls(
            workflow_id=d["workflow_id"],
            command_id=d["command_id"],
            command_type=d["command_type"],
            code=d["code"],
            reason=d["reason"],
            refused_at=datetime.fromisoformat(d["refused_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageInfo:
    """One package version: the workflow types it defines and what it holds."""

    version: str
    workflow_types: tuple[str, ...]
    top_level: tuple[str, ...]
    files: int
    size_bytes: int
    uploaded_at: datetime
    created: bool = False
    """Whether this upload stored it (False: the same files were uploaded before)."""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PackageInfo:
        """From the API's JSON."""
        return cls(
            version=d["version"],
            workflow_types=tuple(d["workflow_types"]),
            top_level=tuple(d["top_level"]),
            files=d["files"],
            size_bytes=d["size_bytes"],
            uploaded_at=datetime.fromisoformat(d["uploaded_at"]),
            created=d.get("created", False),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageEntry:
    """One workflow type of one uploaded version."""

    workflow_type: str
    version: str
    size_bytes: int
    uploaded_at: datetime
    routed: bool
    open_runs: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PackageEntry:
        """From the API's JSON."""
        return cls(
            **{k: d[k] for k in cls.__dataclass_fields__ if k != "uploaded_at"},
            uploaded_at=datetime.fromisoformat(d["uploaded_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """New runs of ``workflow_type`` start on ``version``."""

    workflow_type: str
    version: str
    routed_at: datetime

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Route:
        """From the API's JSON."""
        return cls(
            workflow_type=d["workflow_type"],
            version=d["version"],
            routed_at=datetime.fromisoformat(d["routed_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitItem:
    """One thing an open run waits on. ``kind`` is ``child`` (``workflow_id``,
    ``workflow_type``), ``timer`` (``timer_id``, ``purpose``, ``fire_at``), ``signal``
    (``name``, ``deadline``) or ``activity`` (``activity_id``, ``activity_type``, ``attempt``,
    ``state``, ``next_retry_at``, ``last_error``); ``awaited``: the code's await is on it now."""

    kind: str
    awaited: bool
    workflow_id: str | None = None
    workflow_type: str | None = None
    timer_id: str | None = None
    purpose: str | None = None
    fire_at: datetime | None = None
    name: str | None = None
    deadline: datetime | None = None
    activity_id: str | None = None
    activity_type: str | None = None
    attempt: int | None = None
    state: str | None = None
    next_retry_at: datetime | None = None
    last_error: str | None = None
    last_heartbeat_at: datetime | None = None
    since: datetime | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WaitItem:
        """From the API's JSON."""
        times = {"fire_at", "deadline", "next_retry_at", "last_heartbeat_at", "since"}
        fields = {k: d.get(k) for k in cls.__dataclass_fields__ if k not in times}
        return cls(**fields, **{k: _time(d.get(k)) for k in times})  # type: ignore[arg-type]  # JSON of the API's WaitItemOut

    def describe(self) -> str:
        """One line for people."""
        match self.kind:
            case "child":
                return f"child {self.workflow_id} ({self.workflow_type})"
            case "timer":
                return f"timer {self.purpose or ''} firing at {_shown(self.fire_at)}".replace(
                    "  ", " "
                )
            case "signal":
                deadline = f", until {_shown(self.deadline)}" if self.deadline else ""
                return f"signal {self.name!r}{deadline}"
            case "activity":
                retry = f", next retry {_shown(self.next_retry_at)}" if self.next_retry_at else ""
                error = f", last error: {self.last_error}" if self.last_error else ""
                return (
                    f"activity {self.activity_type} (attempt {self.attempt}, {self.state}"
                    f"{retry}{error})"
                )
            case _:
                return self.kind


def _shown(at: datetime | None) -> str:
    return "?" if at is None else at.isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitingOn:
    """What a workflow's current run waits on now (``waiting_on``, the awaited one first),
    and ``stack``: the source line each frame of its code is suspended at, outermost first."""

    workflow_id: str
    run_id: str | None
    status: str
    blocked_reason: str | None
    waiting_on: tuple[WaitItem, ...]
    stack: tuple[str, ...]
    last_seq: int | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WaitingOn:
        """From the API's JSON."""
        return cls(
            workflow_id=d["workflow_id"],
            run_id=d.get("run_id"),
            status=d["status"],
            blocked_reason=d.get("blocked_reason"),
            waiting_on=tuple(WaitItem.from_json(i) for i in d.get("waiting_on", ())),
            stack=tuple(d.get("stack", ())),
            last_seq=d.get("last_seq"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A schedule: its definition and what the scheduler has done with it."""

    id: str
    type: str
    input: Any
    spec: str
    overlap: str
    jitter_ms: int
    catchup_window_ms: int
    paused: bool
    note: str
    next_fire: datetime | None
    last_fire: datetime | None
    started: int
    skipped: int
    missed: int
    buffered: datetime | None
    running: tuple[str, ...]
    last_started: str | None
    pending_triggers: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Schedule:
        """From the API's JSON."""
        return cls(
            id=d["id"],
            type=d["type"],
            input=d["input"],
            spec=d["spec"],
            overlap=d["overlap"],
            jitter_ms=d["jitter_ms"],
            catchup_window_ms=d["catchup_window_ms"],
            paused=d["paused"],
            note=d["note"],
            next_fire=_time(d.get("next_fire")),
            last_fire=_time(d.get("last_fire")),
            started=d["started"],
            skipped=d["skipped"],
            missed=d["missed"],
            buffered=_time(d.get("buffered")),
            running=tuple(d.get("running", ())),
            last_started=d.get("last_started"),
            pending_triggers=d.get("pending_triggers", 0),
            raw=d,
        )
