"""The pure history model: questions about a workflow's history, and the child-record decision.

A history is the ordered sequence of every event of one workflow id, across all its runs.
Nothing here does I/O; the engine, watcher and projector all ask these same questions.
The child-record decision follows the reference engine (``record_parent_child_terminal``):
parent run terminal → :class:`ParentTerminal`; child already recorded in that run →
:class:`AlreadyRecorded`; otherwise :class:`Recorded` with the event to append, Cancelled and
TimedOut mapped to failures ``cancelled:<reason>`` / ``timed_out:<timeout>``; ContinuedAsNew is
never recordable (:class:`RecordRefused`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from aion_common.domain.errors import InvariantViolation, SequenceError
from aion_common.domain.events import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTimedOut,
)
from aion_common.domain.outcomes import (
    Cancelled,
    Completed,
    ContinuedAsNew,
    Failed,
    TerminalOutcome,
    TimedOut,
)
from aion_common.domain.payload import WorkflowError

__all__ = [
    "AlreadyRecorded",
    "ParentTerminal",
    "RecordDecision",
    "RecordRefused",
    "Recorded",
    "check_history",
    "check_next_seq",
    "child_terminal_recorded",
    "current_run_segment",
    "decide_child_terminal_record",
    "is_child_terminal_for",
    "last_seq",
    "latest_run_id",
    "outcome_of",
    "run_is_terminal",
    "started_event",
    "terminal_outcome",
]

NOT_RECORDABLE = (
    "continue-as-new is not a recordable child terminal; "
    "the run chain must be followed to a real terminal"
)


def last_seq(history: Sequence[Event]) -> int:
    """Seq of the newest event, 0 for an empty history."""
    return history[-1].seq if history else 0


def check_next_seq(workflow_id: str, last: int, event: Event) -> None:
    """Raise :class:`SequenceError` unless ``event`` is the one after seq ``last``."""
    if event.seq != last + 1:
        raise SequenceError(workflow_id, last + 1, event.seq)


def latest_run_id(history: Sequence[Event]) -> str | None:
    """The run id of the newest ``WorkflowStarted``, or None for an empty history."""
    for event in reversed(history):
        if isinstance(event, WorkflowStarted):
            return event.run_id
    return None


def started_event(history: Sequence[Event], run_id: str) -> WorkflowStarted | None:
    """The ``WorkflowStarted`` that opened ``run_id``, if the history holds it."""
    for event in history:
        if isinstance(event, WorkflowStarted) and event.run_id == run_id:
            return event
    return None


def current_run_segment(history: Sequence[Event], run_id: str) -> Sequence[Event]:
    """The events of ``run_id``: from its ``WorkflowStarted`` up to the next run's start."""
    start = next(
        (
            index
            for index, event in enumerate(history)
            if isinstance(event, WorkflowStarted) and event.run_id == run_id
        ),
        None,
    )
    if start is None:
        raise InvariantViolation(f"run {run_id!r} does not appear in the history")
    end = next(
        (
            index
            for index in range(start + 1, len(history))
            if isinstance(history[index], WorkflowStarted)
        ),
        len(history),
    )
    return history[start:end]


def outcome_of(event: Event) -> TerminalOutcome | None:
    """The terminal outcome an event records, or None if it is not a run terminal."""
    match event:
        case WorkflowCompleted(result=result):
            return Completed(result=result)
        case WorkflowFailed(error=error):
            return Failed(error=error)
        case WorkflowCancelled(reason=reason):
            return Cancelled(reason=reason)
        case WorkflowTimedOut(timeout=timeout):
            return TimedOut(timeout=timeout)
        case WorkflowContinuedAsNew(input=payload, workflow_type=wtype, next_run_id=next_run):
            return ContinuedAsNew(input=payload, workflow_type=wtype, next_run_id=next_run)
        case _:
            return None


def terminal_outcome(history: Sequence[Event], run_id: str) -> TerminalOutcome | None:
    """How ``run_id`` ended, or None while it is open (or unknown)."""
    for event in history:
        if event.run_id == run_id:
            outcome = outcome_of(event)
            if outcome is not None:
                return outcome
    return None


def run_is_terminal(history: Sequence[Event], run_id: str) -> bool:
    """Whether ``run_id`` has a terminal event in the history."""
    return terminal_outcome(history, run_id) is not None


def is_child_terminal_for(event: Event, child_workflow_id: str) -> bool:
    """Whether ``event`` records the terminal of ``child_workflow_id``."""
    return (
        isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed)
        and event.child_workflow_id == child_workflow_id
    )


def child_terminal_recorded(segment: Sequence[Event], child_workflow_id: str) -> bool:
    """Whether a run segment already holds the terminal of ``child_workflow_id``."""
    return any(is_child_terminal_for(event, child_workflow_id) for event in segment)


@dataclass(frozen=True, slots=True)
class Recorded:
    """Append ``event`` to the parent's history, then resume the parent."""

    event: ChildWorkflowCompleted | ChildWorkflowFailed


@dataclass(frozen=True, slots=True)
class AlreadyRecorded:
    """The parent run already holds this child's terminal: append nothing."""


@dataclass(frozen=True, slots=True)
class ParentTerminal:
    """The parent run has closed: append nothing."""


@dataclass(frozen=True, slots=True)
class RecordRefused:
    """The record must never be applied (an invariant violation); report it, append nothing."""

    reason: str


RecordDecision = Recorded | AlreadyRecorded | ParentTerminal | RecordRefused


def decide_child_terminal_record(
    history: Sequence[Event],
    *,
    parent_run_id: str,
    child_workflow_id: str,
    outcome: TerminalOutcome,
    command_id: str,
    recorded_at: datetime,
) -> RecordDecision:
    """Decide what recording ``outcome`` of ``child_workflow_id`` in ``parent_run_id`` does."""
    if started_event(history, parent_run_id) is None:
        return RecordRefused(f"parent run {parent_run_id!r} does not exist")
    if run_is_terminal(history, parent_run_id):
        return ParentTerminal()
    if child_terminal_recorded(current_run_segment(history, parent_run_id), child_workflow_id):
        return AlreadyRecorded()
    error: WorkflowError
    match outcome:
        case Completed(result=result):
            return Recorded(
                ChildWorkflowCompleted(
                    workflow_id=history[0].workflow_id,
                    run_id=parent_run_id,
                    seq=last_seq(history) + 1,
                    recorded_at=recorded_at,
                    command_id=command_id,
                    child_workflow_id=child_workflow_id,
                    result=result,
                )
            )
        case Failed(error=error):
            pass
        case Cancelled(reason=reason):
            error = WorkflowError(message=f"cancelled:{reason}")
        case TimedOut(timeout=timeout):
            error = WorkflowError(message=f"timed_out:{timeout}")
        case ContinuedAsNew():
            return RecordRefused(NOT_RECORDABLE)
        case _:
            assert_never(outcome)
    return Recorded(
        ChildWorkflowFailed(
            workflow_id=history[0].workflow_id,
            run_id=parent_run_id,
            seq=last_seq(history) + 1,
            recorded_at=recorded_at,
            command_id=command_id,
            child_workflow_id=child_workflow_id,
            error=error,
        )
    )


def check_history(history: Sequence[Event]) -> None:
    """Raise :class:`InvariantViolation` unless ``history`` is well formed.

    Seqs run 1, 2, 3 …; the first event starts a run; each run has at most one terminal and
    nothing follows it but the next ``WorkflowStarted``; every ``WorkflowContinuedAsNew`` is
    followed by the ``WorkflowStarted`` it names, which names the previous run and keeps the
    parent link and the chain's first run id.
    """
    current: WorkflowStarted | None = None
    closed: Event | None = None
    for index, event in enumerate(history, start=1):
        where = f"seq {event.seq}"
        if event.seq != index:
            raise InvariantViolation(f"{where}: expected seq {index}")
        if isinstance(event, WorkflowStarted):
            _check_run_start(event, current, closed, where)
            current, closed = event, None
        elif current is None:
            raise InvariantViolation(f"{where}: event before any WorkflowStarted")
        elif closed is not None:
            raise InvariantViolation(f"{where}: event after run {current.run_id!r} closed")
        elif event.run_id != current.run_id:
            raise InvariantViolation(f"{where}: run id {event.run_id!r} is not the current run")
        elif outcome_of(event) is not None:
            closed = event


def _check_run_start(
    event: WorkflowStarted,
    current: WorkflowStarted | None,
    closed: Event | None,
    where: str,
) -> None:
    if current is None:
        if event.previous_run_id is not None or event.first_run_id != event.run_id:
            raise InvariantViolation(f"{where}: the first run must start its own chain")
        return
    if closed is None:
        raise InvariantViolation(f"{where}: run {current.run_id!r} started again while open")
    if isinstance(closed, WorkflowContinuedAsNew):
        if closed.next_run_id != event.run_id:
            raise InvariantViolation(f"{where}: continue-as-new named run {closed.next_run_id!r}")
        if event.previous_run_id != current.run_id:
            raise InvariantViolation(f"{where}: new run does not name the previous run")
        if event.parent != current.parent or event.first_run_id != current.first_run_id:
            raise InvariantViolation(f"{where}: new run lost the parent link or first run id")
