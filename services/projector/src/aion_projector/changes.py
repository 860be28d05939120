"""What a run of event batches does to the views, worked out in memory with no I/O.

:class:`ViewChanges` is given the ``workflows`` rows and held events of the workflows a call
touches, is offered every event in consume order, and ends up holding the rows to insert and
update in each table. The store (:mod:`aion_projector.projection`) then writes them with one
``executemany`` per table and statement kind, which is what makes projection fast.

Sequence rule, per workflow (the same one every reader of ``aion.events`` follows):

- ``seq <= last_seq``: a duplicate (re-delivered record, a zombie writer's copy) — skipped;
  the first event seen with a seq wins.
- ``seq == last_seq + 1``: applied; then any held events that now follow are applied too.
- an event that breaks the views' invariants (a start of a run already stored or started in
  this apply, a child scheduled twice by one run, an event for a run that is not the
  workflow's current one) raises :class:`~aion_common.domain.InvariantViolation`; so does
  the database's own constraint. The consumer then dead-letters that one record (a poison
  pill) and goes on: see :mod:`aion_projector.service`.
- ``seq > last_seq + 1``: a gap. The event is **held** in ``held_events`` (same transaction),
  not applied and not dropped. Raising would wedge the partition forever on a record that will
  be re-delivered after every restart; skipping would lose the event for good and every later
  one would gap as well. Holding keeps the consumer moving, loses nothing if the missing seq
  turns up later (a non-idempotent producer can reorder retries), is durable across crashes
  and deterministic on rebuild, and leaves the stuck workflow visible (``describe`` reports
  held events). An event for a workflow that has not started yet is held the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from aion_common.codecs.event_json import decode_event, encode_body, payload_text
from aion_common.domain import (
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    Event,
    InvariantViolation,
    WorkflowBlocked,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowMoved,
    WorkflowStarted,
    WorkflowTimedOut,
)
from aion_projector.activity_view import (
    ACTIVITY_EVENTS,
    activity_key,
    activity_update,
    new_activity,
)
from aion_projector.schema import ChildState, RunStatus

__all__ = [
    "ApplyStats",
    "ClosingEvent",
    "Row",
    "RunClosing",
    "ViewChanges",
    "history_row",
    "run_closing",
]

_log = logging.getLogger(__name__)

Row = dict[str, Any]
Key = tuple[str, str]
ChildKey = tuple[str, str, str]
K = TypeVar("K")


@dataclass(slots=True)
class ApplyStats:
    """What one apply did: events applied, duplicates skipped, events held at a gap,
    refusals stored (re-delivered ones included), and workflows purged."""

    applied: int = 0
    duplicates: int = 0
    held: int = 0
    refusals: int = 0
    purged: int = 0

    def add(self, other: ApplyStats) -> None:
        """Count ``other`` in too."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.held += other.held
        self.refusals += other.refusals
        self.purged += other.purged


ClosingEvent = (
    WorkflowCompleted
    | WorkflowFailed
    | WorkflowCancelled
    | WorkflowTimedOut
    | WorkflowContinuedAsNew
)
"""The events that close a run: :data:`~aion_common.domain.TERMINAL_EVENT_TYPES`, typed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunClosing:
    """What an event that closes a run writes to its ``workflow_runs`` row (JSON text for
    ``result`` and ``error_details``, as the views store them). The projector folds it into
    the views; the API answers a result long-poll from it when it reads the same event on the
    log first (decision 64): one mapping, so both say the same."""

    workflow_id: str
    run_id: str
    status: str
    closed_at: datetime
    result: str | None = None
    error_message: str | None = None
    error_details: str | None = None
    error_type: str | None = None
    error_traceback: str | None = None
    next_run_id: str | None = None

    def columns(self) -> Row:
        """The row's columns this closing sets."""
        return {
            "status": self.status,
            "closed_at": self.closed_at,
            "result": self.result,
            "error_message": self.error_message,
            "error_details": self.error_details,
            "error_type": self.error_type,
            "error_traceback": self.error_traceback,
            "next_run_id": self.next_run_id,
        }


def run_closing(event: ClosingEvent) -> RunClosing:
    """How ``event`` closes its run (CONTINUED_AS_NEW included: closed, not ended)."""
    error: WorkflowError | None = None
    result: str | None = None
    next_run_id: str | None = None
    match event:
        case WorkflowCompleted():
            status, result = RunStatus.COMPLETED, payload_text(event.result)
        case WorkflowFailed():
            status, error = _failed_status(event.error), event.error
        case WorkflowCancelled():
            status, error = RunStatus.CANCELLED, WorkflowError(message=event.reason)
        case WorkflowTimedOut():
            status, error = RunStatus.TIMED_OUT, WorkflowError(message=event.timeout)
        case WorkflowContinuedAsNew():
            status, next_run_id = RunStatus.CONTINUED_AS_NEW, event.next_run_id
    return RunClosing(
        workflow_id=event.workflow_id,
        run_id=event.run_id,
        status=status.value,
        closed_at=event.recorded_at,
        result=result,
        next_run_id=next_run_id,
        **_error_columns(error),
    )


@dataclass(slots=True)
class _Where:
    partition: int
    offset: int
    writer: str


@dataclass(slots=True)
class ViewChanges:
    """Rows to write, accumulated from the events offered, folded per key."""

    summaries: dict[str, Row]
    held: dict[str, dict[int, Row]]
    new_summaries: set[str] = field(default_factory=set)
    dirty_summaries: set[str] = field(default_factory=set)
    history: list[Row] = field(default_factory=list)
    new_runs: dict[Key, Row] = field(default_factory=dict)
    run_updates: dict[Key, Row] = field(default_factory=dict)
    new_registry: dict[Key, Row] = field(default_factory=dict)
    registry_updates: dict[Key, Row] = field(default_factory=dict)
    new_children: dict[ChildKey, Row] = field(default_factory=dict)
    child_updates: dict[ChildKey, Row] = field(default_factory=dict)
    new_activities: dict[ChildKey, Row] = field(default_factory=dict)
    activity_updates: dict[ChildKey, Row] = field(default_factory=dict)
    new_held: dict[tuple[str, int], Row] = field(default_factory=dict)
    released_held: list[tuple[str, int]] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    stats: ApplyStats = field(default_factory=ApplyStats)

    @classmethod
    def start(cls, summaries: Mapping[str, Row], held_rows: list[Row]) -> ViewChanges:
        """Begin from the stored summaries and held events of the workflows in play."""
        held: dict[str, dict[int, Row]] = {}
        for row in held_rows:
            held.setdefault(row["workflow_id"], {})[row["seq"]] = row
        return cls(summaries=dict(summaries), held=held)

    def offer(self, partition: int, offset: int, writer: str, events: tuple[Event, ...]) -> None:
        """Take the events of the batch at ``partition``/``offset`` written by ``writer``."""
        where = _Where(partition, offset, writer)
        for event in events:
            self._offer_event(event, where)
        self.offsets[partition] = max(self.offsets.get(partition, 0), offset + 1)

    def _last_seq(self, workflow_id: str) -> int:
        summary = self.summaries.get(workflow_id)
        return 0 if summary is None else int(summary["last_seq"])

    def _offer_event(self, event: Event, where: _Where) -> None:
        workflow_id = event.workflow_id
        last = self._last_seq(workflow_id)
        held = self.held.get(workflow_id, {})
        if event.seq <= last or event.seq in held:
            self.stats.duplicates += 1
            return
        startable = workflow_id in self.summaries or isinstance(event, WorkflowStarted)
        if event.seq != last + 1 or not startable:
            self._hold(event, where, expected=last + 1)
            return
        self._apply(event, where)
        self._release_held(workflow_id)

    def _hold(self, event: Event, where: _Where, *, expected: int) -> None:
        _log.warning(
            "holding %s seq %d of workflow %r from %d@%d: expected seq %d%s",
            type(event).__name__,
            event.seq,
            event.workflow_id,
            where.partition,
            where.offset,
            expected,
            "" if event.workflow_id in self.summaries else " (workflow not started)",
        )
        row = history_row(event)
        row.update(partition=where.partition, offset=where.offset, writer=where.writer)
        self.held.setdefault(event.workflow_id, {})[event.seq] = row
        self.new_held[(event.workflow_id, event.seq)] = row
        self.stats.held += 1

    def _release_held(self, workflow_id: str) -> None:
        waiting = self.held.get(workflow_id)
        while waiting:
            row = waiting.pop(self._last_seq(workflow_id) + 1, None)
            if row is None:
                return
            key = (workflow_id, row["seq"])
            if self.new_held.pop(key, None) is None:
                self.released_held.append(key)
            else:
                self.stats.held -= 1
            event = decode_event(
                row["event_type"],
                workflow_id=workflow_id,
                run_id=row["run_id"],
                seq=row["seq"],
                recorded_at=row["recorded_at"],
                command_id=row["command_id"],
                body=row["body"],
            )
            self._apply(event, _Where(row["partition"], row["offset"], row["writer"]))

    # -- applying one in-sequence event ---------------------------------------------------------

    def _apply(self, event: Event, where: _Where) -> None:
        if event.workflow_id in self.summaries:
            self._check_run(event)
        self.stats.applied += 1
        self.history.append(history_row(event))
        match event:
            case WorkflowStarted():
                self._started(event, where)
            case (
                WorkflowCompleted()
                | WorkflowFailed()
                | WorkflowCancelled()
                | WorkflowTimedOut()
                | WorkflowContinuedAsNew()
            ):
                self._closed(run_closing(event))
            case WorkflowBlocked():
                self._blocked(event)
            case WorkflowMoved():
                self._moved(event)
            case ChildWorkflowScheduled():
                self._child_scheduled(event)
            case ChildWorkflowCompleted(result=result):
                self._child_closed(event, ChildState.COMPLETED, result=payload_text(result))
            case ChildWorkflowFailed(error=error):
                self._child_closed(event, ChildState.FAILED, error=error)
            case _ if isinstance(event, ACTIVITY_EVENTS):
                self._activity(event)
            case _:
                pass
        summary = self.summaries[event.workflow_id]
        summary["last_seq"] = event.seq
        summary["updated_at"] = event.recorded_at
        self.dirty_summaries.add(event.workflow_id)
        self._touch_registry(event, where, summary["status"])

    def _activity(self, event: Event) -> None:
        key = activity_key(event)
        if isinstance(event, ActivityScheduled):
            self.new_activities[key] = new_activity(event)
        else:
            _fold(self.new_activities, self.activity_updates, key, activity_update(event))

    def _check_run(self, event: Event) -> None:
        summary = self.summaries[event.workflow_id]
        if isinstance(event, WorkflowStarted):
            if (event.workflow_id, event.run_id) in self.new_runs or event.run_id in (
                summary.get("current_run_id"),
                summary.get("first_run_id"),
            ):
                raise InvariantViolation(
                    f"workflow {event.workflow_id!r} seq {event.seq} starts run "
                    f"{event.run_id!r}, which already exists"
                )
        elif event.run_id != summary.get("current_run_id"):
            raise InvariantViolation(
                f"{type(event).__name__} seq {event.seq} of workflow {event.workflow_id!r} is "
                f"for run {event.run_id!r}, but the current run is "
                f"{summary.get('current_run_id')!r}"
            )

    def _started(self, event: WorkflowStarted, where: _Where) -> None:
        parent = event.parent
        parent_id = None if parent is None else parent.workflow_id
        parent_run = None if parent is None else parent.run_id
        key = (event.workflow_id, event.run_id)
        self.new_runs[key] = {
            "workflow_id": event.workflow_id,
            "run_id": event.run_id,
            "first_run_id": event.first_run_id,
            "workflow_type": event.workflow_type,
            "status": RunStatus.RUNNING.value,
            "parent_workflow_id": parent_id,
            "parent_run_id": parent_run,
            "previous_run_id": event.previous_run_id,
            "next_run_id": None,
            "package_version": event.package_version,
            "start_seq": event.seq,
            "started_at": event.recorded_at,
            "closed_at": None,
            "input": payload_text(event.input),
            "result": None,
            **_error_columns(None),
        }
        self.new_registry[key] = {
            "workflow_id": event.workflow_id,
            "run_id": event.run_id,
            "workflow_type": event.workflow_type,
            "package_version": event.package_version,
            "status": RunStatus.RUNNING.value,
            "partition": where.partition,
            "owner": where.writer,
            "updated_at": event.recorded_at,
        }
        self._carried(event)
        summary = self.summaries.get(event.workflow_id)
        if summary is None:
            summary = {"workflow_id": event.workflow_id, "last_seq": 0}
            self.summaries[event.workflow_id] = summary
            self.new_summaries.add(event.workflow_id)
        if summary.get("started_at") is None or event.previous_run_id is None:
            # A new chain (first start, or a closed id reused) restarts the workflow's clock.
            summary["started_at"] = event.recorded_at
        summary.update(
            current_run_id=event.run_id,
            first_run_id=event.first_run_id,
            workflow_type=event.workflow_type,
            status=RunStatus.RUNNING.value,
            parent_workflow_id=parent_id,
            parent_run_id=parent_run,
            closed_at=None,
        )

    def _closed(self, closing: RunClosing) -> None:
        _fold(
            self.new_runs,
            self.run_updates,
            (closing.workflow_id, closing.run_id),
            closing.columns(),
        )
        summary = self.summaries[closing.workflow_id]
        summary["status"] = closing.status
        if closing.status != RunStatus.CONTINUED_AS_NEW:
            summary["closed_at"] = closing.closed_at

    def _blocked(self, event: WorkflowBlocked) -> None:
        """The run waits for code that can run it: open, with the reason as its error."""
        values: Row = {
            "status": RunStatus.BLOCKED.value,
            **_error_columns(event.error),
            "error_message": event.reason,
        }
        _fold(self.new_runs, self.run_updates, (event.workflow_id, event.run_id), values)
        self.summaries[event.workflow_id]["status"] = RunStatus.BLOCKED.value

    def _moved(self, event: WorkflowMoved) -> None:
        """The run goes on on another version: running again, its block cleared."""
        values: Row = {
            "status": RunStatus.RUNNING.value,
            "package_version": event.package_version,
            **_error_columns(None),
        }
        key = (event.workflow_id, event.run_id)
        _fold(self.new_runs, self.run_updates, key, values)
        _fold(
            self.new_registry,
            self.registry_updates,
            key,
            {"package_version": event.package_version},
        )
        self.summaries[event.workflow_id]["status"] = RunStatus.RUNNING.value

    def _child_scheduled(self, event: ChildWorkflowScheduled) -> None:
        key = (event.workflow_id, event.run_id, event.child_workflow_id)
        if key in self.new_children:
            raise InvariantViolation(
                f"run {event.run_id!r} of workflow {event.workflow_id!r} schedules child "
                f"{event.child_workflow_id!r} twice (seq {event.seq})"
            )
        self.new_children[key] = {
            "parent_workflow_id": event.workflow_id,
            "parent_run_id": event.run_id,
            "child_workflow_id": event.child_workflow_id,
            "child_workflow_type": event.child_workflow_type,
            "state": ChildState.SCHEDULED.value,
            "scheduled_seq": event.seq,
            "scheduled_at": event.recorded_at,
            "closed_at": None,
            "result": None,
            "error_message": None,
            "error_details": None,
        }

    def _carried(self, event: WorkflowStarted) -> None:
        """Children the previous run handed over at its continue-as-new: open in this run,
        carried in that one."""
        for child in event.carried_children:
            key = (event.workflow_id, event.run_id, child.child_workflow_id)
            self.new_children[key] = {
                "parent_workflow_id": event.workflow_id,
                "parent_run_id": event.run_id,
                "child_workflow_id": child.child_workflow_id,
                "child_workflow_type": child.child_workflow_type,
                "state": ChildState.SCHEDULED.value,
                "scheduled_seq": event.seq,
                "scheduled_at": event.recorded_at,
                "closed_at": None,
                "result": None,
                "error_message": None,
                "error_details": None,
            }
            if event.previous_run_id is not None:
                before = (event.workflow_id, event.previous_run_id, child.child_workflow_id)
                values: Row = {"state": ChildState.CARRIED.value}
                _fold(self.new_children, self.child_updates, before, values)

    def _child_closed(
        self,
        event: ChildWorkflowCompleted | ChildWorkflowFailed,
        state: ChildState,
        *,
        result: str | None = None,
        error: WorkflowError | None = None,
    ) -> None:
        values: Row = {
            "state": state.value,
            "closed_at": event.recorded_at,
            "result": result,
            "error_message": None if error is None else error.message,
            "error_details": None if error is None else payload_text(error.details),
        }
        key = (event.workflow_id, event.run_id, event.child_workflow_id)
        _fold(self.new_children, self.child_updates, key, values)

    def _touch_registry(self, event: Event, where: _Where, status: str) -> None:
        values: Row = {
            "status": status,
            "partition": where.partition,
            "owner": where.writer,
            "updated_at": event.recorded_at,
        }
        _fold(self.new_registry, self.registry_updates, (event.workflow_id, event.run_id), values)


def _error_columns(error: WorkflowError | None) -> Row:
    if error is None:
        return dict.fromkeys(
            ("error_message", "error_details", "error_type", "error_traceback"), None
        )
    return {
        "error_message": error.message,
        "error_details": payload_text(error.details),
        "error_type": error.error_type or None,
        "error_traceback": error.traceback or None,
    }


def _fold(new: dict[K, Row], updates: dict[K, Row], key: K, values: Row) -> None:
    """Merge ``values`` into the row being inserted, or into the update for a stored row."""
    row = new.get(key)
    if row is not None:
        row.update(values)
    else:
        updates.setdefault(key, {}).update(values)


def history_row(event: Event) -> Row:
    return {
        "workflow_id": event.workflow_id,
        "seq": event.seq,
        "run_id": event.run_id,
        "event_type": type(event).__name__,
        "recorded_at": event.recorded_at,
        "command_id": event.command_id,
        "body": encode_body(event),
    }


# What the engine records for a terminated run (aion_engine._runs.terminated_error): a
# failure, as the design's terminals go and as a parent sees it, shown as TERMINATED here.
_TERMINATED_TYPE = "Terminated"
_TERMINATED_PREFIX = "terminated:"


def _failed_status(error: WorkflowError) -> RunStatus:
    """TERMINATED for a run a ``TerminateWorkflow`` ended, FAILED for any other failure."""
    if error.error_type == _TERMINATED_TYPE and error.message.startswith(_TERMINATED_PREFIX):
        return RunStatus.TERMINATED
    return RunStatus.FAILED
