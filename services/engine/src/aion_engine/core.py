"""The engine's pure core: every workflow of one partition, turning commands into decisions.

:class:`EngineCore` holds state rebuilt from ``aion.events`` (:meth:`EngineCore.apply_batch`)
and handles one command at a time (:meth:`EngineCore.handle`), returning a
:class:`~aion_engine.decision.Decision` for the service loop to emit. It does no I/O, reads no
clock (``now`` is passed in) and derives every id with ``derive_id``, so handling the same
command against the same state yields the same output.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, assert_never

from aion_common.domain import (
    ActivityReport,
    ActivityTask,
    AlreadyRecorded,
    CancelRequested,
    CancelWorkflow,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Command,
    CommandRefused,
    CompleteActivity,
    Event,
    EventBatch,
    FailActivityAttempt,
    Failed,
    FireTimer,
    MoveWorkflow,
    NonDeterminism,
    ParentTerminal,
    Payload,
    PurgeWorkflow,
    QueryWorkflow,
    RecordActivityHeartbeat,
    RecordActivityStarted,
    RecordChildTerminal,
    Recorded,
    RecordRefused,
    RefusalCode,
    SignalReceived,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
    TerminateWorkflow,
    TimerFired,
    TimerScheduled,
    WorkflowError,
    WorkflowFailed,
    WorkflowPurged,
    WorkflowStarted,
    WorkflowTimedOut,
    decide_child_terminal_record,
)
from aion_engine import (
    _runs,
    activities,
    blocking,
    carry,
    local_steps,
    queries,
    retention,
    signal_start,
)
from aion_engine._executor import (
    Executor,
    Finish,
    RequestCancelActivity,
    execution_timeout_timer_id,
)
from aion_engine._replay import replay_run
from aion_engine._state import RunState, WorkflowState
from aion_engine._work import Work, fire_timer_command
from aion_engine.decision import Decision, TimerRequest
from aion_engine.publishing import TopicCheck
from aion_engine.registry import WorkflowRegistry
from aion_engine.versions import Missing, Versions

__all__ = [
    "DEFAULT_CLOSED_CACHE",
    "DEFAULT_MAX_RESIDENT",
    "MAX_RESIDENT",
    "ClosedLoader",
    "EngineCore",
]

DEFAULT_MAX_RESIDENT = 10_000
MAX_RESIDENT = 1_000_000
"""The most workflow coroutines a partition's core keeps suspended in memory
(``--max-resident``): a tenth of the closed cache's bound, since each also holds its frames;
the rest are replayed from their history when a command needs them."""
DEFAULT_CLOSED_CACHE = 10_000

ClosedLoader = Callable[[str], WorkflowState | None]
"""Reads a closed workflow's state from where closed workflows are kept (the local store of
the engine's changelog), or None if there is no such workflow."""
_NOOP = Decision()


class EngineCore:
    """Every workflow of one partition: rebuilt from event batches, driven by commands."""

    def __init__(
        self,
        registry: WorkflowRegistry,
        *,
        writer: str = "engine",
        max_resident: int = DEFAULT_MAX_RESIDENT,
        package_version: str = "",
        versions: Versions | None = None,
        closed: ClosedLoader | None = None,
        closed_cache: int = DEFAULT_CLOSED_CACHE,
        topics: TopicCheck | None = None,
    ) -> None:
        """``registry`` holds the engine's own workflow modules (their version:
        ``package_version``); ``versions`` (shared by the cores of one process) adds the
        package versions and routes the service reads from Kafka. ``closed`` reads closed
        workflows back on demand: with it, :meth:`release_closed` moves closed workflows out
        of the heap into a cache of at most ``closed_cache``; without it every workflow stays
        in memory."""
        if not 0 <= max_resident <= MAX_RESIDENT:
            raise ValueError(f"max_resident={max_resident}: expected 0 to {MAX_RESIDENT}")
        self._versions = (
            versions if versions is not None else Versions(registry, local_version=package_version)
        )
        self._writer = writer
        self._topics = topics
        self._max_resident = max_resident
        self._workflows: dict[str, WorkflowState] = {}
        """Open workflows, and closed ones touched since they were last released."""
        self._load_closed = closed
        self._closed: OrderedDict[str, WorkflowState] = OrderedDict()
        self._closed_cache = max(0, closed_cache)
        self._purged: set[str] = set()
        """Purged since the last release: the store still holds them until that commit."""
        self._resident: OrderedDict[str, Executor] = OrderedDict()

    # -- rebuild -------------------------------------------------------------------------

    def apply_batch(self, batch: EventBatch) -> None:
        """Apply a batch read from ``aion.events``; events whose seq is already held are skipped.

        Raises :class:`~aion_common.domain.SequenceError` on a gap (a corrupt partition).
        """
        state = self._state(batch.workflow_id)
        if state is None:
            state = self._workflows[batch.workflow_id] = WorkflowState(batch.workflow_id)
        applied = False
        for event in batch.events:
            if event.seq <= state.last_seq:
                continue
            state.apply(event)
            applied = True
            if isinstance(event, WorkflowPurged):
                self.forget(batch.workflow_id)  # the id's next event is a new seq 1
                return
        if applied:
            self._evict(batch.workflow_id)

    def adopt(self, state: WorkflowState) -> None:
        """Hold ``state`` (restored from the changelog) as the workflow's state."""
        self._closed.pop(state.workflow_id, None)
        self._workflows[state.workflow_id] = state

    def holds(self, workflow_id: str) -> bool:
        """Whether the workflow's state is in memory (a command to it reads nothing back)."""
        return workflow_id in self._workflows or workflow_id in self._closed

    def state_of(self, workflow_id: str) -> WorkflowState | None:
        """The workflow's state, wherever it is kept (read back if closed and released)."""
        return self._peek(workflow_id)

    def release_closed(self, workflow_ids: Iterable[str]) -> None:
        """Move these workflows out of the heap if they are closed: their state is in the
        store now (the caller wrote it), and is read back on demand (a bounded cache keeps the
        most recently used). Without a loader, nothing moves."""
        if self._load_closed is None:
            return
        cache = self._closed
        for workflow_id in workflow_ids:
            self._purged.discard(workflow_id)
            state = self._workflows.get(workflow_id)
            if state is None or state.open_run is not None:
                continue
            del self._workflows[workflow_id]
            cache[workflow_id] = state
            cache.move_to_end(workflow_id)
        while len(cache) > self._closed_cache:
            cache.popitem(last=False)

    def forget(self, workflow_id: str) -> None:
        """Drop everything held about ``workflow_id`` (it was purged): until it is released
        again (its tombstones are in the store), it is not read back from the store."""
        self._evict(workflow_id)
        self._workflows.pop(workflow_id, None)
        self._closed.pop(workflow_id, None)
        if self._load_closed is not None:
            self._purged.add(workflow_id)

    def workflows_in_memory(self) -> Iterable[WorkflowState]:
        """The workflows held in the heap (every open one)."""
        return self._workflows.values()

    def _state(self, workflow_id: str) -> WorkflowState | None:
        """The workflow's state, pinned in the heap until it is released again."""
        state = self._workflows.get(workflow_id)
        if state is not None or self._load_closed is None or workflow_id in self._purged:
            return state
        state = self._closed.pop(workflow_id, None)
        if state is None:
            state = self._load_closed(workflow_id)
        if state is not None:
            self._workflows[workflow_id] = state
        return state

    def _peek(self, workflow_id: str) -> WorkflowState | None:
        state = self._workflows.get(workflow_id) or self._closed.get(workflow_id)
        if state is None and self._load_closed is not None and workflow_id not in self._purged:
            state = self._load_closed(workflow_id)
        return state

    def pending_timers(self) -> list[TimerRequest]:
        """Every timer scheduled and not fired in an open run (re-arm these after a rebuild)."""
        requests: list[TimerRequest] = []
        for state in self._workflows.values():
            run = state.open_run
            if run is None:
                continue
            requests.extend(
                TimerRequest(fire_at=timer.fire_at, command=fire_timer_command(timer))
                for timer in run.timers.values()
            )
            requests.extend(activities.pending_timers(run))
        return requests

    def clear(self) -> None:
        """Drop every workflow (the partition was revoked)."""
        while self._resident:
            _, executor = self._resident.popitem()
            executor.close()
        self._workflows.clear()
        self._closed.clear()
        self._purged.clear()

    def __contains__(self, workflow_id: object) -> bool:
        return isinstance(workflow_id, str) and self._peek(workflow_id) is not None

    def __len__(self) -> int:
        """Workflows held in memory (with a closed-workflow loader, the rest are on disk)."""
        return len(self._workflows) + len(self._closed)

    @property
    def resident_count(self) -> int:
        """How many run coroutines are in memory."""
        return len(self._resident)

    def remembered_command_ids(self, workflow_id: str) -> int:
        """How many applied command ids are kept for ``workflow_id`` (see ``_state``)."""
        state = self._peek(workflow_id)
        if state is None:
            return 0
        return len(state.applied) + len(state.recent) + len(state.chain_starts)

    def local_step(self, task: ActivityTask) -> Callable[..., Any] | None:
        """The function of a local step's attempt (``ctx.run``): the resident run's own, else
        by its recorded name (:func:`aion_engine.local_steps.find`)."""
        executor = self._resident.get(task.workflow_id)
        if executor is not None and executor.started.run_id == task.run_id:
            fn = executor.local_fns.get(task.activity_id)
            if fn is not None:
                return fn
        return local_steps.find(task.activity_type)

    def last_seq(self, workflow_id: str) -> int:
        """The newest seq held for ``workflow_id`` (0 if unknown)."""
        state = self._peek(workflow_id)
        return 0 if state is None else state.last_seq

    # -- commands ------------------------------------------------------------------------

    def handle(self, command: Command, *, now: datetime) -> Decision:  # noqa: PLR0911, PLR0912 - per type
        """Apply ``command`` and return everything it produced.

        ``now`` stamps the new events: pass the consumed record's timestamp so that handling
        the same command again yields byte-identical output. Refusals and invariant
        violations come back in the decision; an exception means a bug or a broken
        partition, after which the core's state is undefined (drop it and rebuild).
        """
        state = self._state(command.workflow_id)
        if state is not None and state.has_applied(command.command_id):
            return _NOOP
        match command:
            case StartWorkflow():
                return self._start(command, state, now)
            case SignalWorkflow():
                return self._signal(command, state, now)
            case CancelWorkflow():
                return self._cancel(command, state, now)
            case TerminateWorkflow():
                return self._terminate(command, state, now)
            case RecordChildTerminal():
                return self._record_child(command, state, now)
            case FireTimer():
                return self._fire_timer(command, state, now)
            case (
                RecordActivityStarted()
                | RecordActivityHeartbeat()
                | CompleteActivity()
                | FailActivityAttempt()
            ):
                return self._activity_report(command, state, now)
            case MoveWorkflow():
                return self._move(command, state, now)
            case QueryWorkflow():
                return Decision(
                    answer=queries.answer(
                        command, state, now, live=self._live, versions=self._versions
                    )
                )
            case PurgeWorkflow():
                return self._purge(command, state, now)
            case SignalWithStartWorkflow():
                return signal_start.handle(
                    command,
                    state,
                    signal=lambda signal: self._signal(signal, state, now),
                    start=lambda start, signals: self._start(
                        start, state, now, signals=signals, asked=command
                    ),
                )
            case _:
                assert_never(command)

    def _start(
        self,
        cmd: StartWorkflow,
        state: WorkflowState | None,
        now: datetime,
        *,
        signals: Sequence[signal_start.Signal] = (),
        asked: Command | None = None,
    ) -> Decision:
        """Open a new chain for ``cmd``; ``signals`` are recorded with the start (delivered
        before the code's first step); ``asked`` is the command a refusal answers."""
        refused = _runs.start_refusal(cmd, state, self._versions)
        if refused is not None:
            code, reason = refused
            return Decision(
                refusal=_refusal(asked or cmd, code, reason, now),
                outgoing=_report_refused_child(cmd, code, reason, now),
            )
        if state is None:
            state = self._workflows[cmd.workflow_id] = WorkflowState(cmd.workflow_id)
        work = Work(state, cmd.command_id, now)
        running = state.open_run
        if running is not None:  # admitted over a running run: TERMINATE_IF_RUNNING
            reason = f"replaced by a new start (TERMINATE_IF_RUNNING, command {cmd.command_id})"
            self._terminate_run(work, running, reason)
        run_id = _runs.first_run_id(cmd)
        version = self._versions.version_for_start(cmd.workflow_type, cmd.package_version)
        assert version is not None  # start_refusal checked it
        started = _runs.first_started_event(work, run_id, cmd, version)
        return self._finish(work, self._open_run(work, started, signals))

    def _signal(self, cmd: SignalWorkflow, state: WorkflowState | None, now: datetime) -> Decision:
        target = _open_target(cmd, state, now)
        if isinstance(target, Decision):
            return target
        return self._feed(
            cmd, target, now, lambda env: SignalReceived(**env, name=cmd.name, payload=cmd.payload)
        )

    def _cancel(self, cmd: CancelWorkflow, state: WorkflowState | None, now: datetime) -> Decision:
        target = _open_target(cmd, state, now)
        if isinstance(target, Decision):
            return target
        stale = _stale_close_policy(cmd, target, now)
        if stale is not None:
            return stale
        if target.run is not None and target.run.cancel_requested:
            return _NOOP  # already asked: the code is handling (or ignoring) the first request
        return self._feed(
            cmd,
            target,
            now,
            lambda env: CancelRequested(**env, reason=cmd.reason),
            cancel_activities=f"workflow cancelled: {cmd.reason}",
        )

    def _terminate(
        self, cmd: TerminateWorkflow, state: WorkflowState | None, now: datetime
    ) -> Decision:
        target = _open_target(cmd, state, now)
        if isinstance(target, Decision):
            return target
        stale = _stale_close_policy(cmd, target, now)
        if stale is not None:
            return stale
        run = target.open_run
        assert run is not None
        work = Work(target, cmd.command_id, now)
        self._terminate_run(work, run, cmd.reason)
        return self._finish(work, None)

    def _terminate_run(self, work: Work, run: RunState, reason: str) -> None:
        """End ``run`` at once: failed with ``terminated:<reason>``, its close policy applied."""
        error = _runs.terminated_error(reason)
        work.append(WorkflowFailed(**work.envelope(run.run_id), error=error))
        self._close_run(work, run)

    def _record_child(
        self, cmd: RecordChildTerminal, state: WorkflowState | None, now: datetime
    ) -> Decision:
        run_id = carry.holder_run(state, cmd)  # a child carried over at a continue-as-new
        history = () if state is None else state.run_history(run_id)
        verdict = decide_child_terminal_record(
            history,
            parent_run_id=run_id,
            child_workflow_id=cmd.child_workflow_id,
            outcome=cmd.outcome,
            command_id=cmd.command_id,
            recorded_at=now,
        )
        match verdict:
            case Recorded(event=event):
                assert state is not None  # a Recorded verdict needs the parent's history
                return self._feed(cmd, state, now, lambda _env: event)
            case AlreadyRecorded() | ParentTerminal():
                return _NOOP
            case RecordRefused(reason=reason):
                if not history and state is not None:
                    reason += state.unknown_run_note()  # a forgotten run reads as unknown
                return Decision(dead_letter_reason=reason)
            case _:
                assert_never(verdict)

    def _fire_timer(self, cmd: FireTimer, state: WorkflowState | None, now: datetime) -> Decision:
        run = None if state is None else state.open_run
        if state is None or run is None or run.run_id != cmd.run_id:
            return _NOOP  # the run closed (or never existed): the timer is stale
        timer = run.timers.get(cmd.timer_id)
        if timer is None:
            if activities.is_activity_timer(run, cmd.timer_id):
                return self._with_executor(
                    cmd, state, now, lambda work, run: activities.fire(work, run, cmd.timer_id)
                )
            return _NOOP  # already fired, or not a timer of this run
        if cmd.timer_id != execution_timeout_timer_id(state.workflow_id, run.run_id):
            return self._feed(cmd, state, now, lambda env: TimerFired(**env, timer_id=cmd.timer_id))
        work = Work(state, cmd.command_id, now)
        work.append(TimerFired(**work.envelope(run.run_id), timer_id=cmd.timer_id))
        timeout = _runs.format_timeout(run.started.execution_timeout_ms or 0)
        work.append(WorkflowTimedOut(**work.envelope(run.run_id), timeout=timeout))
        self._close_run(work, run)
        return self._finish(work, None)

    def _purge(self, cmd: PurgeWorkflow, state: WorkflowState | None, now: datetime) -> Decision:
        work = retention.purge(cmd, state, now)
        if work is None:
            return _NOOP
        self.forget(cmd.workflow_id)
        return work.decision(self._writer)

    def _activity_report(
        self, cmd: ActivityReport, state: WorkflowState | None, now: datetime
    ) -> Decision:
        verdict = activities.report_refusal(cmd, state)
        if verdict == activities.ALREADY_STARTED:
            return _NOOP
        if isinstance(verdict, tuple):
            code, reason = verdict
            return Decision(refusal=_refusal(cmd, code, reason, now))
        assert state is not None  # report_refusal admits reports of existing workflows only
        if isinstance(cmd, RecordActivityStarted | RecordActivityHeartbeat):
            # never resolves the activity: the workflow's code need not be touched
            run = state.open_run
            assert run is not None
            work = Work(state, cmd.command_id, now)
            activities.report(work, run, cmd)
            return work.decision(self._writer)
        return self._with_executor(
            cmd, state, now, lambda work, run: activities.report(work, run, cmd)
        )

    def _move(self, cmd: MoveWorkflow, state: WorkflowState | None, now: datetime) -> Decision:
        target = _open_target(cmd, state, now)
        if isinstance(target, Decision):
            return target
        run = target.open_run
        assert run is not None
        workflow_type, version = run.started.workflow_type, cmd.package_version
        refused: tuple[RefusalCode, str] | None = None
        if run.run_id != cmd.run_id:
            refused = (RefusalCode.WORKFLOW_CLOSED, f"run {cmd.run_id!r} is not the open run")
        elif not self._versions.offers(version, workflow_type):
            refused = (
                RefusalCode.UNKNOWN_PACKAGE,
                f"package version {version[:12]} is not deployed or does not define "
                f"workflow type {workflow_type!r}",
            )
        if refused is not None:
            return Decision(refusal=_refusal(cmd, *refused, now))
        if run.blocked is None and version == run.version:
            return _NOOP  # already going on on that version
        fn = self._versions.workflow(workflow_type, version)
        executor: Executor | str
        if isinstance(fn, Missing):
            executor = fn.reason
        else:
            try:
                executor = replay_run(fn, run.events, pending_ok=True)
            except NonDeterminism as err:
                executor = f"its history does not replay there: {err.detail}"
        if isinstance(executor, str):
            stays = "blocked" if run.blocked else f"on {run.version[:12]}"
            reason = (
                f"run {run.run_id!r} cannot move to package version {version[:12]}: "
                f"{executor}; it stays {stays}"
            )
            return Decision(refusal=_refusal(cmd, RefusalCode.MOVE_REFUSED, reason, now))
        self._evict(target.workflow_id)
        work = Work(target, cmd.command_id, now)
        blocking.moved(work, run, version)
        return self._finish(work, self._drain(work, executor))

    def moves(self, workflow_type: str, version: str, *, now: datetime) -> list[MoveWorkflow]:
        """Moves for the blocked runs a new route of ``workflow_type`` to ``version`` (or the
        arrival of that version's package) may let go on: the service sends them as commands
        (the move itself checks the replay)."""
        moves = []
        for state in self._workflows.values():
            run = state.open_run
            if run is None or run.blocked is None or run.started.workflow_type != workflow_type:
                continue
            if run.started.pinned and run.version != version:
                continue  # a pinned run waits for its own version's package
            moves.append(
                MoveWorkflow(
                    command_id=blocking.move_command_id(state.workflow_id, run.run_id, version),
                    issued_at=now,
                    workflow_id=state.workflow_id,
                    run_id=run.run_id,
                    package_version=version,
                )
            )
        return moves

    @property
    def versions(self) -> Versions:
        """The versions and routes this core starts and runs workflows on."""
        return self._versions

    # -- running workflow code -----------------------------------------------------------

    def _feed(
        self,
        cmd: Command,
        state: WorkflowState,
        now: datetime,
        make_event: Callable[[dict[str, Any]], Event],
        *,
        cancel_activities: str | None = None,
    ) -> Decision:
        """Append the command's input event and let the run's code react to it; with
        ``cancel_activities``, then request cancellation of the run's open activities."""

        def append(work: Work, run: RunState) -> Event:
            event = make_event(work.envelope(run.run_id))
            work.append(event)
            return event

        return self._with_executor(cmd, state, now, append, cancel_activities=cancel_activities)

    def _with_executor(
        self,
        cmd: Command,
        state: WorkflowState,
        now: datetime,
        act: Callable[[Work, RunState], Event | None],
        *,
        cancel_activities: str | None = None,
    ) -> Decision:
        """Let ``act`` append the command's events; the event it returns (already appended)
        is delivered to the run's code, which then runs until it blocks."""
        run = state.open_run
        assert run is not None
        executor = self._executor_for(state, run)
        work = Work(state, cmd.command_id, now)
        event = act(work, run)
        if event is None:
            return self._finish(work, executor if isinstance(executor, Executor) else None)
        if not isinstance(executor, Executor):
            # the code cannot run (it is blocked, or blocks now): the input is recorded and
            # waits for a version that replays the run
            if executor is not None:
                blocking.block(work, run, executor)
            return self._finish(work, None)
        live = self._deliver(work, executor, event)
        if cancel_activities is not None and live is not None and run.is_open:
            for activity_id in activities.propagate_cancel(work, run, cancel_activities):
                resolution = activities.resolve_cancelled(work, run, activity_id)
                if resolution is not None and live is not None:
                    live = self._deliver(work, live, resolution)
        return self._finish(work, live)

    def _deliver(self, work: Work, executor: Executor, event: Event) -> Executor | None:
        executor.deliver(event)
        return self._drain(work, executor)

    def _executor_for(
        self, state: WorkflowState, run: RunState
    ) -> Executor | NonDeterminism | Missing | None:
        """The run's live code (resident, or replayed from its history); the problem when
        its code cannot run; None when the run is blocked already."""
        executor = self._resident.pop(state.workflow_id, None)
        if executor is not None:
            return executor
        if run.blocked is not None:
            return None
        fn = self._versions.workflow(run.started.workflow_type, run.version)
        if isinstance(fn, Missing):
            return fn
        try:
            return replay_run(fn, run.events)
        except NonDeterminism as err:
            return err

    def _live(
        self, state: WorkflowState, run: RunState
    ) -> Executor | NonDeterminism | Missing | None:
        """The open run's code for a query: as for a command, and kept resident after."""
        executor = self._executor_for(state, run)
        if isinstance(executor, Executor):
            self._keep_resident(state.workflow_id, executor)
        return executor

    def _open_run(
        self,
        work: Work,
        started: WorkflowStarted,
        signals: Sequence[signal_start.Signal] = (),
        child_results: Sequence[tuple[str, Payload | WorkflowError]] = (),
    ) -> Executor | None:
        """Append a run's start (its timeout timer, the signals and child results recorded
        with it), then run its code, those inputs delivered first, until it blocks."""
        work.append(started)
        if started.execution_timeout_ms:
            timer_id = execution_timeout_timer_id(started.workflow_id, started.run_id)
            fire_at = work.now + timedelta(milliseconds=started.execution_timeout_ms)
            work.schedule_timer(
                TimerScheduled(**work.envelope(started.run_id), timer_id=timer_id, fire_at=fire_at)
            )
        received: list[Event] = []
        for name, payload in signals:
            signal = SignalReceived(**work.envelope(started.run_id), name=name, payload=payload)
            work.append(signal)
            received.append(signal)
        for child, outcome in child_results:
            env = work.envelope(started.run_id)
            ended: Event = (
                ChildWorkflowFailed(**env, child_workflow_id=child, error=outcome)
                if isinstance(outcome, WorkflowError)
                else ChildWorkflowCompleted(**env, child_workflow_id=child, result=outcome)
            )
            work.append(ended)
            received.append(ended)
        fn = self._versions.workflow(started.workflow_type, started.package_version)
        if isinstance(fn, Missing):
            run = work.state.open_run
            assert run is not None
            blocking.block(work, run, fn)
            return None
        executor = Executor(fn, started)
        for leading in received:
            executor.deliver(leading)
        executor.start()
        return self._drain(work, executor)

    def _drain(self, work: Work, executor: Executor) -> Executor | None:
        """Turn the code's decisions into events; returns the live executor, if any.

        An activity the code cancels before any attempt started ends cancelled at once, but
        only after every decision already queued is recorded: a replay delivers that ending
        (an input) after those decisions too.
        """
        run = work.state.open_run
        assert run is not None
        cancelled: list[str] = []
        while True:
            decision = executor.take_decision()
            if decision is None:
                if not cancelled or executor.finished:
                    break
                resolution = activities.resolve_cancelled(work, run, cancelled.pop(0))
                if resolution is not None:
                    executor.deliver(resolution)
                continue
            if isinstance(decision, RequestCancelActivity):
                now = activities.request_cancel(
                    work, run, decision.activity_id, decision.reason, by_workflow_code=True
                )
                if now is not None:
                    cancelled.append(now)
                continue
            if (
                isinstance(decision, Finish)
                and isinstance(decision.outcome, Failed)
                and blocking.blocks_run(
                    decision.outcome.error, first_decision=executor.decisions_taken == 1
                )
            ):
                blocking.block(work, run, decision.outcome.error)
                return None
            outcome = _runs.record_decision(work, run, decision, self._versions, self._topics)
            if isinstance(outcome, _runs.Blocked):
                blocking.block(work, run, outcome.problem)
                return None
            if outcome is _runs.RunClosed:
                self._close_run(work, run)
                return None
            if isinstance(outcome, _runs.NextRun):
                self._close_run(work, run, continued=True)
                return self._open_run(work, outcome.started, outcome.signals, outcome.child_results)
        return None if executor.finished else executor

    def _close_run(self, work: Work, run: RunState, *, continued: bool = False) -> None:
        """The run closed: drop its coroutine and apply the close policy to open children —
        unless it ``continued`` as new: its children then stay attached to the chain."""
        executor = self._resident.pop(work.state.workflow_id, None)
        if executor is not None:
            executor.close()
        if not continued:
            work.outgoing.extend(_runs.close_policy_commands(work, run))
        work.outgoing.extend(_runs.child_terminal_record(work, run))  # none at a continue-as-new
        activities.close_notices(work, run)

    def _finish(self, work: Work, executor: Executor | None) -> Decision:
        if executor is not None and not executor.finished:
            self._keep_resident(work.state.workflow_id, executor)
        return work.decision(self._writer)

    # -- residency -----------------------------------------------------------------------

    def _keep_resident(self, workflow_id: str, executor: Executor) -> None:
        self._resident[workflow_id] = executor
        self._resident.move_to_end(workflow_id)
        while len(self._resident) > self._max_resident:
            _, evicted = self._resident.popitem(last=False)
            evicted.close()

    def _evict(self, workflow_id: str) -> None:
        executor = self._resident.pop(workflow_id, None)
        if executor is not None:
            executor.close()


def _refusal(cmd: Command, code: RefusalCode, reason: str, now: datetime) -> CommandRefused:
    return CommandRefused(
        command_id=cmd.command_id,
        workflow_id=cmd.workflow_id,
        command_type=type(cmd).__name__,
        code=code,
        reason=reason,
        refused_at=now,
    )


def _open_target(
    cmd: Command, state: WorkflowState | None, now: datetime
) -> WorkflowState | Decision:
    """The workflow ``cmd`` targets if its latest run is open, else the refusal."""
    if state is None:
        reason = f"workflow {cmd.workflow_id!r} does not exist"
        return Decision(refusal=_refusal(cmd, RefusalCode.UNKNOWN_WORKFLOW, reason, now))
    if state.open_run is None:
        run_id = state.run.run_id if state.run is not None else "?"
        reason = f"workflow {cmd.workflow_id!r} is closed (last run {run_id!r})"
        return Decision(refusal=_refusal(cmd, RefusalCode.WORKFLOW_CLOSED, reason, now))
    return state


def _stale_close_policy(
    cmd: CancelWorkflow | TerminateWorkflow, state: WorkflowState, now: datetime
) -> Decision | None:
    """The refusal of a parent-close command meant for another run chain of this id, or None.

    A parent's close policy addresses the child chain that parent run started. If that chain
    closed and the id was started again (by a user, or by a later run of the parent) before the
    command arrived, the command must not reach the new run: refused as WORKFLOW_CLOSED.
    """
    origin = _runs.close_policy_origin(cmd)
    if origin is None:
        return None  # an ordinary cancel or terminate
    run = state.open_run
    assert run is not None
    parent = run.started.parent
    if parent is not None and (parent.workflow_id, parent.run_id) == origin:
        return None
    reason = (
        f"close policy of parent {origin[0]!r} run {origin[1]!r} is for the run that parent "
        f"started; the current run {run.run_id!r} of workflow {cmd.workflow_id!r} is another"
    )
    return Decision(refusal=_refusal(cmd, RefusalCode.WORKFLOW_CLOSED, reason, now))


def _report_refused_child(
    cmd: StartWorkflow, code: RefusalCode, reason: str, now: datetime
) -> tuple[Command, ...]:
    """A refused child start is reported to its parent as the child's failure, so the parent's
    ``result()`` raises instead of waiting forever (the id is the watcher's, so a later real
    terminal for the same child and parent run is a duplicate).

    Its ``child_run_id`` is the run id the start would have opened had it been admitted
    (:func:`_runs.first_run_id`): deterministic, a valid id, and never the id of a run that
    exists — no event carries it (docs/decisions.md).
    """
    parent = cmd.parent
    if parent is None:
        return ()
    message = f"start_refused:{code.value}:{reason}"
    return (
        RecordChildTerminal.of(
            parent.workflow_id,
            parent.run_id,
            child_workflow_id=cmd.workflow_id,
            child_run_id=_runs.first_run_id(cmd),
            outcome=Failed(error=WorkflowError(message=message)),
            issued_at=now,
        ),
    )
