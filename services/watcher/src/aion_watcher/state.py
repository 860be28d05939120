"""The watcher's state: a pure fold over ``aion.events`` (no I/O, no clock, no Kafka).

What it knows, per workflow id: the current run, whether it is still open, and the run's parent
link — taken from the run's ``WorkflowStarted``, because a terminal event does not carry it.

A *watch* is armed per (parent workflow, parent run, child workflow) when a child run's
``WorkflowStarted`` names a parent — once, however many times that start (or a continue-as-new
successor carrying the same link) is seen: the reference's ``arm_child_terminal_watch`` is
idempotent per parent and child in the same way. When the child's run ends:

- Completed / Failed / Cancelled / TimedOut: the watch gets its :class:`RecordChildTerminal`
  (to the parent's key, id ``record_child_terminal_id(parent, parent run, child)``, naming the
  final run, carrying the raw outcome — mapping Cancelled/TimedOut to failures is the engine's
  job) and :meth:`WatchState.apply` returns it to be issued. ``issued_at`` is the terminal's
  ``recorded_at``, so every re-issue of a record is the same command, byte for byte.
  With ``engine_reports`` (the default of a deployed watcher: the engine puts that record in
  the transaction that writes the terminal, decision 44) the watch is armed as issued but
  nothing is returned: the watcher is then only the sweep's safety net.
- ContinuedAsNew: nothing. The next run's ``WorkflowStarted`` carries the link forward and the
  chain is followed to its final, real terminal.

The parent's side of the same fold clears watches: a ``ChildWorkflowCompleted/Failed`` in the
parent run drops that child's watch (recorded), and a parent run that closes drops every watch
of that run, and only of that run (the reference's ``abort_watches_for_parent``). A record is not
issued at all when the parent run is already known closed or to hold the child.

Time arrives as arguments (``now``, monotonic seconds), so the sweep is testable: a watch whose
record was issued at least ``grace`` ago and whose parent has not recorded it is a sweep
candidate, re-issued at most once per ``grace``. When the parent's partition is not folded by
this instance (or its start is not folded yet) its status is *unknown*; such a record is
re-issued "blind" (the engine dedups it by command id and by its AlreadyRecorded rule) with
exponential spacing — ``grace`` after the first issue, then ``2·grace``, ``4·grace``… after each
blind re-issue — at most ``blind_limit`` times. Why spacing is enough: the first issue was
acknowledged by the broker (acks=all), so it is durable on ``aion.commands`` and the parent's
engine will apply it; a blind re-issue only covers a record lost after its acknowledgement (a
lost replica, retention, an injected drop), and the first one comes as early as before. With
several watchers roughly half the records go to parents on another watcher's partitions, and
re-sending each of those every ``grace`` was most of the commands a watcher produced.

Duplicate batches — seqs this fold already holds for a workflow — are ignored (readers treat
(workflow_id, seq) as unique). Every fact is tagged with the partition it came from, so a
revoked partition's facts can be dropped.

Memory grows with every workflow id ever seen; evicting closed workflows that head no open watch
(and snapshots, to bound the rebuild) is future work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ContinuedAsNew,
    EventBatch,
    ParentLink,
    RecordChildTerminal,
    TerminalOutcome,
    WorkflowStarted,
    outcome_of,
)
from aion_common.domain.events import Event

__all__ = ["Applied", "ParentStatus", "SweepItem", "WatchKey", "WatchState"]


@dataclass(frozen=True, slots=True)
class WatchKey:
    """One watch: a child of one parent run."""

    parent_workflow_id: str
    parent_run_id: str
    child_workflow_id: str


class ParentStatus(enum.Enum):
    """What the fold knows about a parent run."""

    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"  # its partition is not folded here, or its start is not seen yet


@dataclass(frozen=True, slots=True)
class Applied:
    """What folding one batch produced: records to issue now, and counts for metrics."""

    records: tuple[RecordChildTerminal, ...] = ()
    terminals: int = 0
    suppressed: int = 0
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class SweepItem:
    """A record the sweep re-issues, and whether the parent's status was known (a real hit)."""

    command: RecordChildTerminal
    parent_status: ParentStatus


@dataclass(slots=True)
class _Workflow:
    partition: int
    last_seq: int
    run_id: str
    parent: ParentLink | None
    open: bool
    runs: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Tally:
    records: list[RecordChildTerminal] = field(default_factory=list)
    terminals: int = 0
    suppressed: int = 0


@dataclass(slots=True)
class _Watch:
    partition: int  # the child's partition
    command: RecordChildTerminal | None = None
    issued_at: float = 0.0
    blind_reissues: int = 0


@dataclass(slots=True)
class _ParentRun:
    partition: int
    recorded: set[str] = field(default_factory=set)


class WatchState:
    """The fold; ``own``/``drop_partition`` follow the consumer's assignment."""

    def __init__(self, *, blind_limit: int = 10, engine_reports: bool = False) -> None:
        """Start empty; ``blind_limit`` caps re-issues of records to unknown-status parents.

        With ``engine_reports`` a child's terminal arms its watch as issued but returns no
        record: the engine that wrote the terminal put the same record on ``aion.commands`` in
        that transaction (decision 44), so it is as durable as the watcher's acknowledged first
        issue, and the sweep covers the rest as it covers that one.
        """
        self._blind_limit = blind_limit
        self._engine_reports = engine_reports
        self._owned: set[int] = set()
        self._workflows: dict[str, _Workflow] = {}
        self._watches: dict[WatchKey, _Watch] = {}
        self._by_parent: dict[tuple[str, str], set[WatchKey]] = {}
        self._parent_runs: dict[tuple[str, str], _ParentRun] = {}

    # -- partitions -------------------------------------------------------------------------

    def own(self, partition: int) -> None:
        """Mark ``partition`` as folded here (its facts about parents are authoritative)."""
        self._owned.add(partition)

    def drop_partition(self, partition: int) -> None:
        """Forget every fact that came from ``partition`` (it was revoked)."""
        self._owned.discard(partition)
        self._workflows = {k: w for k, w in self._workflows.items() if w.partition != partition}
        self._parent_runs = {k: r for k, r in self._parent_runs.items() if r.partition != partition}
        for key in [k for k, w in self._watches.items() if w.partition == partition]:
            self._forget(key)

    @property
    def owned(self) -> frozenset[int]:
        """Partitions this fold covers."""
        return frozenset(self._owned)

    # -- queries ----------------------------------------------------------------------------

    def current_run(self, workflow_id: str) -> str | None:
        """The newest started run of ``workflow_id`` (the reference's ``latest_run_id``)."""
        workflow = self._workflows.get(workflow_id)
        return None if workflow is None else workflow.run_id

    def parent_status(self, parent_workflow_id: str, parent_run_id: str) -> ParentStatus:
        """Whether ``parent_run_id`` is open, closed, or unknown to this fold."""
        workflow = self._workflows.get(parent_workflow_id)
        if workflow is None:
            return ParentStatus.UNKNOWN
        if workflow.run_id == parent_run_id and workflow.open:
            return ParentStatus.OPEN
        if parent_run_id in workflow.runs:
            return ParentStatus.CLOSED
        # A run the parent's history does not name: not started yet as far as we know.
        return ParentStatus.UNKNOWN

    def watch_count(self) -> int:
        """Armed watches: children started under a parent run not yet recorded nor closed."""
        return len(self._watches)

    def watches(self) -> frozenset[WatchKey]:
        """The armed watches' keys."""
        return frozenset(self._watches)

    def pending(self) -> tuple[RecordChildTerminal, ...]:
        """Records issued (or known from the rebuild) whose parent has not recorded them."""
        return tuple(w.command for w in self._watches.values() if w.command is not None)

    # -- the fold ---------------------------------------------------------------------------

    def apply(self, batch: EventBatch, *, partition: int, now: float) -> Applied:
        """Fold one batch; return the records it makes due (issue them unless rebuilding)."""
        known = self._workflows.get(batch.workflow_id)
        last = known.last_seq if known is not None else 0
        events = [e for e in batch.events if e.seq > last]
        if not events:
            return Applied(duplicate=True)
        tally = _Tally()
        for event in events:
            self._apply_event(event, partition, now, tally)
        return Applied(
            records=tuple(tally.records), terminals=tally.terminals, suppressed=tally.suppressed
        )

    def _apply_event(self, event: Event, partition: int, now: float, tally: _Tally) -> None:
        workflow = self._workflows.get(event.workflow_id)
        if isinstance(event, WorkflowStarted):
            self._start(event, workflow, partition)
            return
        if workflow is None:
            return  # a workflow whose start this fold never saw: nothing is known of it
        workflow.last_seq = event.seq
        if workflow.run_id != event.run_id:
            return
        if isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed):
            self._recorded(event, partition)
            return
        outcome = outcome_of(event)
        if outcome is None:
            return
        workflow.open = False
        self._close_parent_run(event.workflow_id, event.run_id)
        if workflow.parent is not None and not isinstance(outcome, ContinuedAsNew):
            # A child's final terminal (a ContinuedAsNew is never reported: the chain goes on).
            key = WatchKey(workflow.parent.workflow_id, workflow.parent.run_id, event.workflow_id)
            self._child_terminal(key, event, outcome, partition=partition, now=now, tally=tally)

    def _child_terminal(
        self,
        key: WatchKey,
        event: Event,
        outcome: TerminalOutcome,
        *,
        partition: int,
        now: float,
        tally: _Tally,
    ) -> None:
        tally.terminals += 1
        status = self.parent_status(key.parent_workflow_id, key.parent_run_id)
        if status is ParentStatus.CLOSED or self._is_recorded(key):
            self._forget(key)
            tally.suppressed += 1
            return
        command = RecordChildTerminal.of(
            key.parent_workflow_id,
            key.parent_run_id,
            child_workflow_id=key.child_workflow_id,
            child_run_id=event.run_id,
            outcome=outcome,
            issued_at=event.recorded_at,
        )
        watch = self._arm(key, partition)
        watch.command, watch.issued_at = command, now
        if not self._engine_reports:
            tally.records.append(command)

    def _start(self, event: WorkflowStarted, workflow: _Workflow | None, partition: int) -> None:
        if workflow is None:
            workflow = _Workflow(partition, event.seq, event.run_id, event.parent, open=True)
            self._workflows[event.workflow_id] = workflow
        else:
            workflow.last_seq, workflow.run_id = event.seq, event.run_id
            workflow.parent, workflow.open = event.parent, True
        workflow.runs.add(event.run_id)
        self._parent_runs[(event.workflow_id, event.run_id)] = _ParentRun(partition)
        if event.parent is not None:
            key = WatchKey(event.parent.workflow_id, event.parent.run_id, event.workflow_id)
            if self.parent_status(key.parent_workflow_id, key.parent_run_id) is not (
                ParentStatus.CLOSED
            ) and not self._is_recorded(key):
                self._arm(key, partition)

    def _arm(self, key: WatchKey, partition: int) -> _Watch:
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch(partition)
            self._by_parent.setdefault((key.parent_workflow_id, key.parent_run_id), set()).add(key)
        return watch

    def _recorded(
        self, event: ChildWorkflowCompleted | ChildWorkflowFailed, partition: int
    ) -> None:
        run = self._parent_runs.setdefault((event.workflow_id, event.run_id), _ParentRun(partition))
        run.recorded.add(event.child_workflow_id)
        self._forget(WatchKey(event.workflow_id, event.run_id, event.child_workflow_id))

    def _close_parent_run(self, workflow_id: str, run_id: str) -> None:
        self._parent_runs.pop((workflow_id, run_id), None)
        for key in list(self._by_parent.get((workflow_id, run_id), ())):
            self._forget(key)

    def _is_recorded(self, key: WatchKey) -> bool:
        run = self._parent_runs.get((key.parent_workflow_id, key.parent_run_id))
        return run is not None and key.child_workflow_id in run.recorded

    def _forget(self, key: WatchKey) -> None:
        if self._watches.pop(key, None) is None:
            return
        parent = (key.parent_workflow_id, key.parent_run_id)
        siblings = self._by_parent.get(parent)
        if siblings is not None:
            siblings.discard(key)
            if not siblings:
                del self._by_parent[parent]

    # -- the sweep --------------------------------------------------------------------------

    def sweep(self, *, now: float, grace: float) -> list[SweepItem]:
        """Records to re-issue now: issued ``grace`` ago or more, parent not recorded nor closed.

        Each returned record's issue time is reset to ``now``, so it comes back at most once per
        ``grace``. A record to a parent of unknown status waits ``grace · 2**n`` after its
        ``n``-th blind re-issue, and counts against the blind limit.
        """
        due: list[SweepItem] = []
        for key, watch in list(self._watches.items()):
            if watch.command is None or now - watch.issued_at < grace:
                continue
            # Spaced blind re-issues; a parent whose status became known meanwhile (its
            # partition was assigned here) is back on the once-per-grace rhythm below.
            spaced = grace * 2**watch.blind_reissues
            if (
                watch.blind_reissues
                and now - watch.issued_at < spaced
                and self.parent_status(*_parent(key)) is ParentStatus.UNKNOWN
            ):
                continue
            status = self.parent_status(key.parent_workflow_id, key.parent_run_id)
            if status is ParentStatus.CLOSED:
                self._forget(key)
                continue
            if status is ParentStatus.UNKNOWN:
                if watch.blind_reissues >= self._blind_limit:
                    continue
                watch.blind_reissues += 1
            watch.issued_at = now
            due.append(SweepItem(watch.command, status))
        return due


def _parent(key: WatchKey) -> tuple[str, str]:
    return key.parent_workflow_id, key.parent_run_id
