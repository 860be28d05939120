"""Per-workflow state the engine keeps, built only by applying events (live or on rebuild).

One code path (:meth:`WorkflowState.apply`) maintains the indexes a command needs in O(1):
applied command ids, the open run's events, its open children and pending timers. A closed
run keeps only its start and terminal events, which is all the child-record decision and the
id-reuse policy ever ask of it, so memory and rebuild cost stay bounded by open work.

Applied command ids are bounded the same way (docs/decisions.md, "Applied command ids"): every
id applied to the current run while it is open (as many as its events, which are held anyway);
when a run closes or continues-as-new its ids join a first-in-first-out window of the
workflow's last :data:`RECENT_COMMAND_IDS` earlier ids; and the id of every command that
started a chain of runs is kept for as long as the workflow's runs are.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from aion_common.domain import (
    CancelRequested,
    CarriedChild,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    Event,
    InvariantViolation,
    TimerFired,
    TimerScheduled,
    WorkflowBlocked,
    WorkflowMoved,
    WorkflowPurged,
    WorkflowStarted,
    check_next_seq,
    outcome_of,
)
from aion_engine._activity_state import ACTIVITY_EVENTS, ActivityState, index_activity_event

__all__ = ["CLOSED_RUNS_KEPT", "RECENT_COMMAND_IDS", "RunState", "WorkflowState"]

RECENT_COMMAND_IDS: Final = 1024
"""Ids of closed runs' commands kept per workflow. At least one batch of the service
(``service._MAX_BATCH``): a batch re-delivered after a crash in at-least-once mode is then
recognised in full even if its commands closed and reopened runs."""

CLOSED_RUNS_KEPT: Final = 64
"""Closed runs kept per workflow besides its latest run (oldest forgotten first): with the
latest run, at least the 64 run ids the watcher keeps (decision 61). A forgotten run is older
than every kept one, so it is closed; what it could still be asked is answered without it:

- a carried child's terminal, addressed to the run that scheduled it, is routed by the latest
  run's start (``carried_children`` names the child and that run), not by the old run;
- the id-reuse policy reads the latest run's outcome, a duplicate start the chain-start ids,
  a duplicate command the id window: none of them reads an older run;
- anything else addressed to a forgotten run is answered as for a run the workflow never had,
  and says the run may be a forgotten one: an activity report is refused ``UNKNOWN_ACTIVITY``
  (``STALE_ACTIVITY_REPORT`` while the run is kept), a child's terminal in a run that carried
  nothing on is dead-lettered (dropped as ``ParentTerminal`` while kept). Either way nothing
  is appended: forgetting changes how a late command is turned away, never whether."""


@dataclass(slots=True)
class RunState:
    """The latest run of a workflow: its events and the indexes commands need."""

    started: WorkflowStarted
    events: list[Event]
    open_children: dict[str, ChildWorkflowScheduled | CarriedChild] = field(default_factory=dict)
    """Children not yet recorded ended: scheduled by this run, or carried over to it by a
    continue-as-new of its chain."""
    timers: dict[str, TimerScheduled] = field(default_factory=dict)
    cancel_requested: bool = False
    terminal: Event | None = None
    activities: dict[str, ActivityState] = field(default_factory=dict)
    """Open activities (kept after the run closes, for their cancel notices)."""
    activity_timers: dict[str, str] = field(default_factory=dict)
    """Timer id -> activity id, for every activity clock running now."""
    closed_activities: set[str] = field(default_factory=set)
    """Ids of this run's activities that ended (to tell a late report from a bad one)."""
    blocked: str | None = None
    """Why the run's code cannot go on (``WorkflowBlocked``), until a move clears it."""
    moved_to: str | None = None
    """The version a ``WorkflowMoved`` put the run on (else the one it started on)."""

    @property
    def version(self) -> str:
        """The package version the run's code is of now."""
        return self.moved_to if self.moved_to is not None else self.started.package_version

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self.started.run_id

    @property
    def is_open(self) -> bool:
        """Whether the run has no terminal yet."""
        return self.terminal is None


@dataclass(slots=True)
class WorkflowState:
    """Everything the engine knows about one workflow id."""

    workflow_id: str
    last_seq: int = 0
    applied: dict[str, None] = field(default_factory=dict)
    """Ids of the commands applied to the latest run while it was open, in order (a dict, not
    a set: which ids the window keeps must not depend on the process's string hashing)."""
    recent: dict[str, None] = field(default_factory=dict)
    """Ids applied to earlier runs, oldest first, at most :data:`RECENT_COMMAND_IDS`."""
    chain_starts: set[str] = field(default_factory=set)
    """Ids of the commands that started a chain of runs (a ``StartWorkflow`` that was applied)."""
    run: RunState | None = None
    closed_runs: dict[str, tuple[WorkflowStarted, Event]] = field(default_factory=dict)
    """Start and terminal of the closed runs before the latest run, oldest first, at most
    :data:`CLOSED_RUNS_KEPT` (a dict in insertion order: run ids are never reused)."""

    def has_applied(self, command_id: str) -> bool:
        """Whether ``command_id`` is known as applied (within the bounds above)."""
        return (
            command_id in self.applied
            or command_id in self.recent
            or command_id in self.chain_starts
        )

    def _retire_applied(self) -> None:
        """The latest run closed: move its ids into the bounded window of earlier ids."""
        recent = self.recent
        recent.update(self.applied)
        self.applied = {}
        excess = len(recent) - RECENT_COMMAND_IDS
        if excess > 0:
            for command_id in list(itertools.islice(recent, excess)):
                del recent[command_id]

    @property
    def open_run(self) -> RunState | None:
        """The latest run if it is open."""
        run = self.run
        return run if run is not None and run.terminal is None else None

    def run_history(self, run_id: str) -> Sequence[Event]:
        """The events held for ``run_id`` (start and terminal only once it closed), or () for
        a run the workflow never had or one older than the closed runs it keeps."""
        run = self.run
        if run is not None and run.run_id == run_id:
            return run.events
        return self.closed_runs.get(run_id, ())

    def unknown_run_note(self) -> str:
        """What a refusal for a run id this workflow does not know adds once older runs may
        have been forgotten (the kept window is full): the id may be of one of those."""
        if len(self.closed_runs) < CLOSED_RUNS_KEPT:
            return ""
        return f" (or it is older than the {CLOSED_RUNS_KEPT} closed runs the workflow keeps)"

    def keep_closed(self, started: WorkflowStarted, terminal: Event) -> None:
        """Keep a closed run's start and terminal, forgetting the oldest beyond the bound."""
        closed = self.closed_runs
        closed[started.run_id] = (started, terminal)
        excess = len(closed) - CLOSED_RUNS_KEPT
        if excess > 0:
            for run_id in list(itertools.islice(closed, excess)):
                del closed[run_id]

    def apply(self, event: Event) -> None:
        """Apply the next event; raises SequenceError or InvariantViolation if it can't be."""
        check_next_seq(self.workflow_id, self.last_seq, event)
        run = self.run
        if isinstance(event, WorkflowPurged):
            # the last event a workflow has: whoever applies it forgets the workflow next
            if run is None or run.terminal is None:
                raise InvariantViolation(
                    f"workflow {self.workflow_id!r}: purged at seq {event.seq} while not closed"
                )
            self.last_seq = event.seq
            return
        if isinstance(event, WorkflowStarted):
            if run is not None:
                if run.terminal is None:
                    raise InvariantViolation(
                        f"workflow {self.workflow_id!r}: run {event.run_id!r} started while "
                        f"run {run.run_id!r} is open"
                    )
                self.keep_closed(run.started, run.terminal)
            if event.previous_run_id is None:
                self.chain_starts.add(event.command_id)
            self.run = RunState(
                started=event,
                events=[event],
                open_children={c.child_workflow_id: c for c in event.carried_children},
            )
        elif run is None or run.terminal is not None or event.run_id != run.run_id:
            raise InvariantViolation(
                f"workflow {self.workflow_id!r}: seq {event.seq} does not belong to an open run"
            )
        else:
            run.events.append(event)
            self._index(run, event)
        self.last_seq = event.seq
        self.applied[event.command_id] = None
        if self.run is not None and self.run.terminal is event:
            self._retire_applied()

    @staticmethod
    def _index(run: RunState, event: Event) -> None:
        if isinstance(event, ACTIVITY_EVENTS):
            index_activity_event(run.activities, run.activity_timers, run.closed_activities, event)
            return
        match event:
            case ChildWorkflowScheduled(child_workflow_id=child):
                run.open_children[child] = event
            case (
                ChildWorkflowCompleted(child_workflow_id=child)
                | ChildWorkflowFailed(child_workflow_id=child)
            ):
                run.open_children.pop(child, None)
            case TimerScheduled(timer_id=timer_id):
                run.timers[timer_id] = event
            case TimerFired(timer_id=timer_id):
                run.timers.pop(timer_id, None)
            case CancelRequested():
                run.cancel_requested = True
            case WorkflowBlocked(reason=reason):
                run.blocked = reason
            case WorkflowMoved(package_version=version):
                run.blocked = None
                run.moved_to = version
            case _:
                if outcome_of(event) is not None:
                    run.terminal = event
                    run.timers.clear()
                    run.activity_timers.clear()
                    run.closed_activities.clear()
                    # The closed run keeps only what later questions need; open children
                    # stay until the close policy has been applied by the closing command.
                    run.events = [run.started, event]
