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

A workflow that continues-as-new forever (a polling loop) must not grow the fold by a run each
time. Its facts keep the latest :data:`~aion_watcher.changelog.RUNS_KEPT` run ids, in the order
they started (the changelog writes the same ones), and, of the runs its chain continued from,
only those the current run's start lists as the origin of a carried child: the others are
closed as a final terminal closes a run (see :meth:`WatchState._release_continued` for why
that is safe).

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

Changelog (issue 21): given a codec, the fold records every change of its facts as
:class:`~aion_common.kafka.changelog.Change` records for ``<prefix>.watcher-state`` (see
:mod:`aion_watcher.changelog`), taken with :meth:`WatchState.take_changes`; a partition being
rebuilt from the event log is folded silently (:meth:`WatchState.silence`) and written whole at
the end (:meth:`WatchState.dump`). Closed workflows leave memory once their records are stored
(:meth:`WatchState.release_closed`) and are read back through ``closed`` when asked about
(a bounded cache keeps the most recent), so memory holds open work.

A closed workflow's record goes to ``watcher-closed`` (``Change.closed_log``); its record in
``watcher-state`` is tombstoned only once that one is acknowledged
(:meth:`WatchState.take_deferred`, :meth:`WatchState.still_closed`), so no crash leaves a
workflow in neither. While a partition's closed workflows load in the background
(:meth:`WatchState.loading`), :meth:`WatchState.waits_for` names a batch that would need the
facts of a workflow not in memory on such a partition: the service folds it after the load.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aion_common.codecs import Codec
from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ContinuedAsNew,
    EventBatch,
    ParentLink,
    RecordChildTerminal,
    TerminalOutcome,
    WorkflowPurged,
    WorkflowStarted,
    outcome_of,
)
from aion_common.domain.events import Event
from aion_common.kafka.changelog import Change
from aion_common.kafka.topics import partition_for
from aion_watcher.changelog import (
    RECORDED,
    RUNS_KEPT,
    WATCH,
    WORKFLOW,
    ChangelogUnreadable,
    WorkflowFacts,
    decode_watch,
    decode_workflow,
    encode_watch,
    encode_workflow,
    pair_key,
    split_pair_key,
    workflow_key,
)

__all__ = ["Applied", "ClosedLoader", "ParentStatus", "SweepItem", "WatchKey", "WatchState"]

ClosedLoader = Callable[[str], tuple[int, WorkflowFacts] | None]
"""Reads a closed workflow's facts back from the local store of its partition: (partition,
facts), or None when no owned partition's store has it."""


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
    runs: dict[str, None] = field(default_factory=dict)
    """The latest :data:`RUNS_KEPT` runs started or let go from ``continued``, oldest first (a
    dict as an ordered set): the runs known closed, apart from the current one."""
    continued: set[str] = field(default_factory=set)
    """Runs of the current chain that continued-as-new and still hold an open child: it was
    carried to the chain's newest run, which records its terminal (the engine redirects the
    record). A run leaves once the newest run's start carries none of its children."""


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

    def __init__(
        self,
        *,
        blind_limit: int = 10,
        engine_reports: bool = False,
        codec: Codec | None = None,
        closed: ClosedLoader | None = None,
        closed_cache: int = 10_000,
        partitions: int = 1,
    ) -> None:
        """Start empty; ``blind_limit`` caps re-issues of records to unknown-status parents.

        With ``engine_reports`` a child's terminal arms its watch as issued but returns no
        record: the engine that wrote the terminal put the same record on ``aion.commands`` in
        that transaction (decision 44), so it is as durable as the watcher's acknowledged first
        issue, and the sweep covers the rest as it covers that one.

        With ``codec`` the fold records its changes for the changelog; with ``closed`` closed
        workflows are read back from the store on demand (``partitions``: how many the events
        topic has, to tell a workflow's partition from its id).
        """
        self._blind_limit = blind_limit
        self._engine_reports = engine_reports
        self._owned: set[int] = set()
        self._workflows: dict[str, _Workflow] = {}
        self._watches: dict[WatchKey, _Watch] = {}
        self._by_parent: dict[tuple[str, str], set[WatchKey]] = {}
        self._parent_runs: dict[tuple[str, str], _ParentRun] = {}
        self._codec = codec
        self._changes: list[tuple[int, Change]] = []
        self._silent: set[int] = set()
        self._load_closed = closed
        self._cache: OrderedDict[str, _Workflow] = OrderedDict()
        self._cache_size = closed_cache
        self._forgotten: set[str] = set()
        """Purged, their tombstones not stored yet: not read back from the store meanwhile."""
        self._partitions = partitions
        self._loading: set[int] = set()
        self._dirty: dict[str, _Workflow] = {}
        self._closing: dict[str, tuple[int, int]] = {}
        """Closed workflows whose ``watcher-state`` record awaits its tombstone: (partition,
        token of the close)."""
        self._deferred: list[tuple[int, str, int]] = []
        self._tokens = 0

    # -- partitions -------------------------------------------------------------------------

    def own(self, partition: int) -> None:
        """Mark ``partition`` as folded here (its facts about parents are authoritative)."""
        self._owned.add(partition)

    def drop_partition(self, partition: int) -> None:
        """Forget every fact that came from ``partition`` (it was revoked)."""
        self._owned.discard(partition)
        self._silent.discard(partition)
        self._loading.discard(partition)
        self._changes = [(p, c) for p, c in self._changes if p != partition]
        self._deferred = [d for d in self._deferred if d[0] != partition]
        self._closing = {k: c for k, c in self._closing.items() if c[0] != partition}
        self._workflows = {k: w for k, w in self._workflows.items() if w.partition != partition}
        self._cache = OrderedDict(
            (k, w) for k, w in self._cache.items() if w.partition != partition
        )
        self._parent_runs = {k: r for k, r in self._parent_runs.items() if r.partition != partition}
        for key in [k for k, w in self._watches.items() if w.partition == partition]:
            self._forget(key, record=False)

    @property
    def owned(self) -> frozenset[int]:
        """Partitions this fold covers."""
        return frozenset(self._owned)

    # -- queries ----------------------------------------------------------------------------

    def current_run(self, workflow_id: str) -> str | None:
        """The newest started run of ``workflow_id`` (the reference's ``latest_run_id``)."""
        workflow = self._find(workflow_id)
        return None if workflow is None else workflow.run_id

    def parent_status(self, parent_workflow_id: str, parent_run_id: str) -> ParentStatus:
        """Whether ``parent_run_id`` is open, closed, or unknown to this fold."""
        workflow = self._find(parent_workflow_id)
        if workflow is None:
            return ParentStatus.UNKNOWN
        if workflow.run_id == parent_run_id and workflow.open:
            return ParentStatus.OPEN
        if parent_run_id in workflow.continued:
            return ParentStatus.OPEN  # its children live on in the chain's newest run
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
        known = self._find(batch.workflow_id)
        last = known.last_seq if known is not None else 0
        events = [e for e in batch.events if e.seq > last]
        if not events:
            return Applied(duplicate=True)
        if known is not None and self._cache.pop(batch.workflow_id, None) is not None:
            self._workflows[batch.workflow_id] = known  # held in memory while it changes
        # Every event is the batch's workflow's: the fold reads it from memory from here on (a
        # workflow found nowhere is looked up once per batch, not once per event).
        tally = _Tally()
        for event in events:
            self._apply_event(event, partition, now, tally)
        self._note_dirty()
        return Applied(
            records=tuple(tally.records), terminals=tally.terminals, suppressed=tally.suppressed
        )

    def _apply_event(self, event: Event, partition: int, now: float, tally: _Tally) -> None:
        workflow = self._workflows.get(event.workflow_id)
        if isinstance(event, WorkflowPurged):
            self._purge(event.workflow_id)
            return
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
        if isinstance(outcome, ContinuedAsNew):
            workflow.continued.add(event.run_id)  # its watches go on: the chain holds them
        else:
            for run_id in (*workflow.continued, event.run_id):
                self._close_parent_run(event.workflow_id, run_id)
            workflow.continued.clear()
        self._note_workflow(event.workflow_id, workflow)
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
        self._note_watch(key, watch)
        if not self._engine_reports:
            tally.records.append(command)

    def _purge(self, workflow_id: str) -> None:
        """Retention ran out: forget the workflow (its id's next event is a new seq 1). Watches
        it heads are gone already (its runs closed); a watch of it as a child stays with its
        parent until recorded."""
        workflow = self._workflows.pop(workflow_id, None)
        cached = self._cache.pop(workflow_id, None)
        workflow = workflow or cached
        if workflow is None:
            return
        for run_id in {*workflow.runs, *workflow.continued}:
            self._parent_runs.pop((workflow_id, run_id), None)
        self._dirty.pop(workflow_id, None)
        self._closing.pop(workflow_id, None)
        key = workflow_key(workflow_id)
        self._note(workflow.partition, Change(key, None, closed_log=True))
        self._note(workflow.partition, Change(key, None))
        self._forgotten.add(workflow_id)

    def _start(self, event: WorkflowStarted, workflow: _Workflow | None, partition: int) -> None:
        if workflow is None:
            workflow = _Workflow(partition, event.seq, event.run_id, event.parent, open=True)
            self._workflows[event.workflow_id] = workflow
        else:
            workflow.last_seq, workflow.run_id = event.seq, event.run_id
            workflow.parent, workflow.open = event.parent, True
        if workflow.continued:
            self._release_continued(event.workflow_id, workflow, event)
        _add_run(workflow, event.run_id)
        self._note_workflow(event.workflow_id, workflow)
        self._parent_runs[(event.workflow_id, event.run_id)] = _ParentRun(partition)
        if event.parent is not None:
            key = WatchKey(event.parent.workflow_id, event.parent.run_id, event.workflow_id)
            if (
                self.parent_status(key.parent_workflow_id, key.parent_run_id)
                is not (ParentStatus.CLOSED)
                and not self._is_recorded(key)
                and key not in self._watches
            ):
                self._note_watch(key, self._arm(key, partition))

    def _release_continued(
        self, workflow_id: str, workflow: _Workflow, started: WorkflowStarted
    ) -> None:
        """Close each run the chain continued from whose children the new run ``started`` no
        longer carries, as a final terminal closes a run: its watches and recorded children go.

        Why that is safe: the engine carries every child of the previous run still open in its
        state (not yet recorded; a child scheduled but not started yet too), each naming the run
        that scheduled it, so a run no carried child names holds nothing a record could still
        be recorded in: the engine would answer a record to it ``ParentTerminal`` or
        ``AlreadyRecorded``. The fold now answers the same, CLOSED: the run goes to the end of
        ``runs`` (after :data:`RUNS_KEPT` more runs it reads UNKNOWN, as any older run does; a
        late record to it is then issued blind and dropped by the engine). A late event for it
        — a child's start or terminal read behind the parent's partition — is suppressed, as the
        engine would drop its record. The carried list, not the watches this fold holds,
        decides: a child's start may still be unread here while its parent's chain moves on,
        and its watch must then still arm.
        """
        holding = {c.origin_run_id for c in started.carried_children}
        for run_id in sorted(workflow.continued - holding):
            workflow.continued.discard(run_id)
            self._close_parent_run(workflow_id, run_id)
            _add_run(workflow, run_id)

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
        if event.child_workflow_id not in run.recorded:
            run.recorded.add(event.child_workflow_id)
            key = pair_key(RECORDED, event.workflow_id, event.run_id, event.child_workflow_id)
            self._note(run.partition, Change(key, b"1", open=True))
        self._forget(WatchKey(event.workflow_id, event.run_id, event.child_workflow_id))
        workflow = self._workflows.get(event.workflow_id)
        for run_id in () if workflow is None else workflow.continued:
            # a child carried over from an earlier run of the chain, recorded here
            self._forget(WatchKey(event.workflow_id, run_id, event.child_workflow_id))

    def _close_parent_run(self, workflow_id: str, run_id: str) -> None:
        closed = self._parent_runs.pop((workflow_id, run_id), None)
        if closed is not None:
            for child in closed.recorded:
                marker = pair_key(RECORDED, workflow_id, run_id, child)
                self._note(closed.partition, Change(marker, None))
        for key in list(self._by_parent.get((workflow_id, run_id), ())):
            self._forget(key)

    def _is_recorded(self, key: WatchKey) -> bool:
        run = self._parent_runs.get((key.parent_workflow_id, key.parent_run_id))
        if run is not None and key.child_workflow_id in run.recorded:
            return True
        workflow = self._workflows.get(key.parent_workflow_id)
        if workflow is None or key.parent_run_id not in workflow.continued:
            return False
        holder = self._parent_runs.get((key.parent_workflow_id, workflow.run_id))
        return holder is not None and key.child_workflow_id in holder.recorded

    def _forget(self, key: WatchKey, *, record: bool = True) -> None:
        watch = self._watches.pop(key, None)
        if watch is None:
            return
        if record:
            self._note(watch.partition, Change(_watch_key(key), None))
        parent = (key.parent_workflow_id, key.parent_run_id)
        siblings = self._by_parent.get(parent)
        if siblings is not None:
            siblings.discard(key)
            if not siblings:
                del self._by_parent[parent]

    # -- the changelog ----------------------------------------------------------------------

    def silence(self, partition: int, silent: bool = True) -> None:
        """Record no changes of ``partition`` (it is being rebuilt from the event log), or
        record them again."""
        if silent:
            self._silent.add(partition)
        else:
            self._silent.discard(partition)

    def take_changes(self) -> list[tuple[int, Change]]:
        """The changes recorded since the last call, with their partitions, in order."""
        changes, self._changes = self._changes, []
        return changes

    def take_deferred(self) -> list[tuple[int, str, int]]:
        """(partition, workflow id, token) of the workflows closed since the last call: their
        ``watcher-state`` records are to be tombstoned once the changes taken with them (their
        ``watcher-closed`` records) are acknowledged, if :meth:`still_closed` then."""
        deferred, self._deferred = self._deferred, []
        return deferred

    def still_closed(self, workflow_id: str, token: int) -> bool:
        """Whether the close ``token`` names is still the workflow's latest change: then its
        ``watcher-state`` record is tombstoned now (and this returns False after). Not if it
        was started again (its open record, written after, must stay) or closed again (that
        close tombstones it), or purged (tombstoned then)."""
        if self._closing.get(workflow_id, (0, 0))[1] != token:
            return False
        del self._closing[workflow_id]
        return True

    def loading(self, partition: int, *, active: bool = True) -> None:
        """``partition``'s closed workflows are being loaded into its store (``active``), or
        are loaded: until then the store is not read, and :meth:`waits_for` holds back what
        needs it."""
        if active:
            self._loading.add(partition)
        else:
            self._loading.discard(partition)

    @property
    def loading_partitions(self) -> frozenset[int]:
        """Partitions whose closed workflows are still loading."""
        return frozenset(self._loading)

    def waits_for(self, batch: EventBatch) -> str | None:
        """The id of a workflow whose facts folding ``batch`` may need while they are not in
        memory and its partition's closed workflows are still loading; None: fold it now.

        What the fold reads: the batch's own workflow (not for a new one: a first event of
        seq 1 is a new id or one purged), and, for a start or a terminal, its parent's."""
        if not self._loading:
            return None
        workflow_id = batch.workflow_id
        workflow = self._workflows.get(workflow_id) or self._cache.get(workflow_id)
        if (
            workflow is None
            and batch.events
            and batch.events[0].seq > 1
            and self._unavailable(workflow_id)
        ):
            return workflow_id
        parents = set()
        if workflow is not None and workflow.parent is not None:
            parents.add(workflow.parent.workflow_id)
        for event in batch.events:
            if isinstance(event, WorkflowStarted) and event.parent is not None:
                parents.add(event.parent.workflow_id)
        if parents and any(
            isinstance(e, WorkflowStarted) or outcome_of(e) is not None for e in batch.events
        ):
            for parent in sorted(parents):
                if self._unavailable(parent):
                    return parent
        return None

    def _unavailable(self, workflow_id: str) -> bool:
        """Not in memory, and its partition's store is still loading."""
        return (
            workflow_id not in self._workflows
            and workflow_id not in self._cache
            and workflow_id not in self._forgotten
            and partition_for(workflow_id, self._partitions) in self._loading
        )

    def dump(self, partition: int) -> list[Change]:
        """Every fact of ``partition`` as changelog records (a rebuilt partition, written whole)."""
        out = [
            self._workflow_change(workflow_id, workflow)
            for workflow_id, workflow in self._workflows.items()
            if workflow.partition == partition
        ]
        out.extend(
            self._watch_change(key, watch)
            for key, watch in self._watches.items()
            if watch.partition == partition
        )
        for (workflow_id, run_id), run in self._parent_runs.items():
            if run.partition != partition:
                continue
            out.extend(
                Change(pair_key(RECORDED, workflow_id, run_id, child), b"1", open=True)
                for child in run.recorded
            )
        return out

    def release_closed(self, workflow_ids: Iterable[str]) -> None:
        """Move these workflows out of memory if they are closed (their records are stored:
        they are read back through the loader when asked about)."""
        if self._load_closed is None:
            return
        for workflow_id in workflow_ids:
            self._forgotten.discard(workflow_id)  # its latest record (a tombstone?) is stored
            workflow = self._workflows.get(workflow_id)
            if workflow is None or workflow.open:
                continue
            del self._workflows[workflow_id]
            self._cache[workflow_id] = workflow
            self._cache.move_to_end(workflow_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def restore(
        self, partition: int, entries: Iterable[tuple[bytes, bytes, int]], now: float
    ) -> int:
        """Load ``partition``'s open facts from its store's open entries (key, value, offset;
        key order); returns how many workflows are open. Watches restored with a record are
        due for the sweep a grace period from ``now``. Raises
        :class:`~aion_watcher.changelog.ChangelogUnreadable` naming the offset."""
        opened = 0
        for key, value, offset in entries:
            try:
                opened += self._restore_entry(partition, key, value, now)
            except ChangelogUnreadable as err:
                raise ChangelogUnreadable(f"offset {offset} (key {key!r}): {err}") from err
        return opened

    def _restore_entry(self, partition: int, key: bytes, value: bytes, now: float) -> int:
        codec = self._codec
        assert codec is not None, "restoring needs the codec"
        opened = 0
        kind = key[:1]
        if kind == WORKFLOW:
            facts = decode_workflow(key[1:].decode(), value)
            workflow = _workflow_of(partition, facts)
            self._workflows[facts.workflow_id] = workflow
            if facts.open:
                opened += 1
                self._parent_runs.setdefault(
                    (facts.workflow_id, facts.run_id), _ParentRun(partition)
                )
        elif kind == WATCH:
            watch_key = WatchKey(*split_pair_key(key))
            command, blind = decode_watch(codec, value)
            watch = self._arm(watch_key, partition)
            watch.command, watch.issued_at, watch.blind_reissues = command, now, blind
        elif kind == RECORDED:
            parent, run_id, child = split_pair_key(key)
            self._parent_runs.setdefault((parent, run_id), _ParentRun(partition)).recorded.add(
                child
            )
        return opened

    def _find(self, workflow_id: str) -> _Workflow | None:
        workflow = self._workflows.get(workflow_id)
        if workflow is not None:
            return workflow
        workflow = self._cache.get(workflow_id)
        if (
            workflow is None
            and self._load_closed is not None
            and workflow_id not in self._forgotten
            and not (self._loading and self._unavailable(workflow_id))  # never mid-load
        ):
            found = self._load_closed(workflow_id)
            if found is not None:
                partition, facts = found
                workflow = _workflow_of(partition, facts)
                self._cache[workflow_id] = workflow
        return workflow

    def _note(self, partition: int, change: Change) -> None:
        if self._codec is not None and partition not in self._silent:
            self._changes.append((partition, change))

    def _note_workflow(self, workflow_id: str, workflow: _Workflow) -> None:
        # Written once per batch, as the batch leaves it (a continue-as-new's close and its
        # next run's start are one batch: one open record, not a closed one and an open one).
        if self._codec is not None and workflow.partition not in self._silent:
            self._dirty[workflow_id] = workflow

    def _note_dirty(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for workflow_id, workflow in dirty.items():
            if self._workflows.get(workflow_id) is not workflow:
                continue  # purged within the batch
            self._changes.append((workflow.partition, self._workflow_change(workflow_id, workflow)))
            if workflow.open:
                self._closing.pop(workflow_id, None)  # reopened: its open record stays
                continue
            self._tokens += 1
            self._closing[workflow_id] = (workflow.partition, self._tokens)
            self._deferred.append((workflow.partition, workflow_id, self._tokens))

    def _note_watch(self, key: WatchKey, watch: _Watch) -> None:
        if self._codec is not None and watch.partition not in self._silent:
            self._changes.append((watch.partition, self._watch_change(key, watch)))

    @staticmethod
    def _workflow_change(workflow_id: str, workflow: _Workflow) -> Change:
        return Change(
            workflow_key(workflow_id),
            encode_workflow(_facts(workflow_id, workflow)),
            open=workflow.open,
            closed_log=not workflow.open,
        )

    def _watch_change(self, key: WatchKey, watch: _Watch) -> Change:
        assert self._codec is not None
        value = encode_watch(self._codec, watch.command, watch.blind_reissues)
        return Change(_watch_key(key), value, open=True)

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
                self._note_watch(key, watch)
            watch.issued_at = now
            due.append(SweepItem(watch.command, status))
        return due


def _add_run(workflow: _Workflow, run_id: str) -> None:
    """Note a run started (or let go), keeping the latest :data:`RUNS_KEPT`: an older run then
    reads UNKNOWN, not CLOSED, as after a restore; a late record to it is issued blind and the
    engine drops it (``ParentTerminal``)."""
    workflow.runs.pop(run_id, None)
    workflow.runs[run_id] = None
    if len(workflow.runs) > RUNS_KEPT:
        del workflow.runs[next(iter(workflow.runs))]


def _workflow_of(partition: int, facts: WorkflowFacts) -> _Workflow:
    """A workflow's facts as read back from its changelog record."""
    return _Workflow(
        partition,
        facts.last_seq,
        facts.run_id,
        facts.parent,
        facts.open,
        dict.fromkeys(facts.runs[-RUNS_KEPT:]),
        set(facts.continued),
    )


def _parent(key: WatchKey) -> tuple[str, str]:
    return key.parent_workflow_id, key.parent_run_id


def _watch_key(key: WatchKey) -> bytes:
    return pair_key(WATCH, key.parent_workflow_id, key.parent_run_id, key.child_workflow_id)


def _facts(workflow_id: str, workflow: _Workflow) -> WorkflowFacts:
    return WorkflowFacts(
        workflow_id=workflow_id,
        last_seq=workflow.last_seq,
        run_id=workflow.run_id,
        parent=workflow.parent,
        open=workflow.open,
        runs=tuple(workflow.runs),
        continued=tuple(sorted(workflow.continued)),
    )
