"""A broker-free world around :class:`EngineCore` for given-events / when-command / then-events.

``World`` routes every outgoing command back into the core (all partitions in one), plays the
watcher (a child's final terminal becomes a ``RecordChildTerminal`` to its parent, with the
watcher's deterministic id) and keeps each workflow's history as the concatenated batches.
Timers are collected, never fired on their own: tests fire them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aion_common.codecs import Codec
from aion_common.domain import (
    CancelWorkflow,
    Command,
    CommandRefused,
    Event,
    EventBatch,
    Payload,
    RecordChildTerminal,
    SignalWorkflow,
    StartWorkflow,
    TaskRecord,
    TerminateWorkflow,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    outcome_of,
    record_child_terminal_id,
)
from aion_common.kafka.changelog import ChangelogStore
from aion_engine import Decision, EngineCore, TimerRequest
from aion_engine._changelog import EngineChangelog
from aion_engine._state import WorkflowState
from aion_engine.registry import WorkflowRegistry

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def payload(value: object) -> Payload:
    return Payload.from_json(value)


@dataclass
class World:
    """One core, a command queue, a watcher and a manual clock."""

    registry: WorkflowRegistry
    max_resident: int = 10_000
    watch: bool = True
    now: datetime = T0
    core: EngineCore = field(init=False)
    histories: dict[str, list[Event]] = field(default_factory=dict)
    batches: list[EventBatch] = field(default_factory=list)
    decisions: list[tuple[Command, Decision]] = field(default_factory=list)
    refusals: list[CommandRefused] = field(default_factory=list)
    timers: dict[str, TimerRequest] = field(default_factory=dict)
    tasks: list[tuple[str, TaskRecord]] = field(default_factory=list)
    held: list[Command] = field(default_factory=list)
    hold_types: tuple[type, ...] = ()
    store: ChangelogStore | None = None
    """With a store, the core keeps closed workflows there (as the service does): every
    decision's changelog records are written to it and closed workflows leave the heap."""
    closed_store: ChangelogStore | None = None
    """With it, records for ``engine-closed`` go here (as the service writes them: engine-state
    must then hold open work only, engine-closed closed heads only); else into ``store``."""
    closed_cache: int = 0
    changelog_bytes: int = 0
    _queue: deque[Command] = field(default_factory=deque)
    _counter: int = 0
    _offset: int = 0
    _changelog: EngineChangelog | None = None

    def __post_init__(self) -> None:
        self.core = self._new_core()

    def _new_core(self) -> EngineCore:
        store = self.store
        if store is None:
            return EngineCore(self.registry, writer="test", max_resident=self.max_resident)
        changelog = self._changelog = EngineChangelog(Codec(), 0, writer="test")
        closed = self.closed_store or store
        return EngineCore(
            self.registry,
            writer="test",
            max_resident=self.max_resident,
            closed=lambda workflow_id: changelog.load_closed(closed, workflow_id),
            closed_cache=self.closed_cache,
        )

    def restart(self) -> None:
        """A new core restored from the store (what a partition's next owner does)."""
        assert self.store is not None, "restart needs a changelog store"
        self.core = self._new_core()
        assert self._changelog is not None
        for state in self._changelog.restore(self.store):
            self.core.adopt(state)

    def restored(self, workflow_id: str) -> WorkflowState | None:
        """The workflow's state as a fresh restore from the store rebuilds it."""
        assert self.store is not None, "needs a changelog store"
        changelog = EngineChangelog(Codec(), 0, writer="test")
        for state in changelog.restore(self.store):
            if state.workflow_id == workflow_id:
                return state
        return changelog.load_closed(self.closed_store or self.store, workflow_id)

    # -- sending ---------------------------------------------------------------------------

    def next_id(self, prefix: str = "cmd") -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    def send(self, command: Command) -> Decision:
        """Handle ``command``, then everything it caused, to quiescence; returns its decision."""
        first = self._handle(command)
        self.drain()
        return first

    def drain(self) -> None:
        while self._queue:
            self._handle(self._queue.popleft())

    def start(
        self, workflow_id: str, workflow_type: str, value: object = None, **kw: Any
    ) -> Decision:
        return self.send(
            StartWorkflow(
                command_id=kw.pop("command_id", None) or self.next_id("start"),
                issued_at=self.now,
                workflow_id=workflow_id,
                workflow_type=workflow_type,
                input=payload(value),
                **kw,
            )
        )

    def signal(self, workflow_id: str, name: str, value: object = None) -> Decision:
        return self.send(
            SignalWorkflow(
                command_id=self.next_id("signal"),
                issued_at=self.now,
                workflow_id=workflow_id,
                name=name,
                payload=payload(value),
            )
        )

    def cancel(self, workflow_id: str, reason: str = "operator") -> Decision:
        return self.send(
            CancelWorkflow(
                command_id=self.next_id("cancel"),
                issued_at=self.now,
                workflow_id=workflow_id,
                reason=reason,
            )
        )

    def terminate(self, workflow_id: str, reason: str = "operator") -> Decision:
        return self.send(
            TerminateWorkflow(
                command_id=self.next_id("terminate"),
                issued_at=self.now,
                workflow_id=workflow_id,
                reason=reason,
            )
        )

    def fire(self, request: TimerRequest) -> Decision:
        """Advance the clock to the timer and fire it."""
        self.now = max(self.now, request.fire_at)
        return self.send(request.command)

    def fire_all(self, workflow_id: str | None = None) -> None:
        """Fire every collected timer (of one workflow), earliest first."""
        for request in sorted(
            self.timers.values(), key=lambda r: (r.fire_at, r.command.command_id)
        ):
            if workflow_id is None or request.command.workflow_id == workflow_id:
                self.fire(request)

    def release_held(self) -> None:
        held, self.held = self.held, []
        for command in held:
            self.send(command)

    # -- reading ---------------------------------------------------------------------------

    def history(self, workflow_id: str) -> list[Event]:
        return self.histories.get(workflow_id, [])

    def kinds(self, workflow_id: str) -> list[str]:
        return [type(event).__name__ for event in self.history(workflow_id)]

    def result(self, workflow_id: str) -> object:
        last = self.history(workflow_id)[-1]
        return last.result.to_json()  # type: ignore[union-attr]

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # -- internals -------------------------------------------------------------------------

    def _handle(self, command: Command) -> Decision:
        decision = self.core.handle(command, now=self.now)
        self._log(command, decision)
        self.decisions.append((command, decision))
        if decision.batch is not None:
            self.batches.append(decision.batch)
            self.histories.setdefault(decision.batch.workflow_id, []).extend(decision.batch.events)
            if self.watch:
                self._watch(decision.batch.events)
        if decision.refusal is not None:
            self.refusals.append(decision.refusal)
        for command_id in decision.disarm:
            self.timers.pop(command_id, None)
        for request in decision.timers:
            self.timers[request.command.command_id] = request
        self.tasks.extend(decision.tasks)
        for outgoing in decision.outgoing:
            if isinstance(outgoing, self.hold_types):
                self.held.append(outgoing)
            else:
                self._queue.append(outgoing)
        return decision

    def _log(self, command: Command, decision: Decision) -> None:
        """Write the decision's changelog records to the store, then release closed ones."""
        if self.store is None or self._changelog is None:
            return
        batch = decision.batch
        if batch is not None:
            changes = self._changelog.changes(self.core.state_of(batch.workflow_id), batch)
            written = []
            closed = []
            for change in changes:
                target = closed if change.closed_log and self.closed_store else written
                target.append((change, self._offset))
                self._offset += 1
                self.changelog_bytes += len(change.key) + len(change.value or b"")
            self.store.write(written, self._offset)
            if self.closed_store is not None:
                self.closed_store.write(closed, self._offset)
                opened, total = self.store.counts()
                assert opened == total, "engine-state holds an entry that is not open work"
                assert self.closed_store.counts()[0] == 0, "engine-closed holds open work"
        self.core.release_closed([command.workflow_id])

    def _watch(self, events: Iterable[Event]) -> None:
        """The watcher: report a child's final (non continue-as-new) terminal to its parent."""
        for event in events:
            outcome = outcome_of(event)
            if outcome is None or isinstance(event, WorkflowContinuedAsNew):
                continue
            started = next(
                e
                for e in reversed(self.histories[event.workflow_id])
                if isinstance(e, WorkflowStarted)
            )
            parent = started.parent
            if parent is None:
                continue
            self._queue.append(
                RecordChildTerminal(
                    command_id=record_child_terminal_id(
                        parent.workflow_id, parent.run_id, event.workflow_id
                    ),
                    issued_at=self.now,
                    workflow_id=parent.workflow_id,
                    parent_run_id=parent.run_id,
                    child_workflow_id=event.workflow_id,
                    child_run_id=event.run_id,
                    outcome=outcome,
                )
            )
