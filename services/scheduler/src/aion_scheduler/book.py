"""The scheduler's pure core: the schedules of one partition, and what is due when.

:class:`Book` holds the definitions, pending triggers and states read from the compacted
topics; :meth:`Book.step` decides, for one schedule at ``now``, which runs to start (each a
:class:`Fire` with its deterministic ids), what its overlap policy skips or buffers, and the
state to write in the same transaction. No I/O and no clock: ``now`` and which of the
schedule's watched runs are still open are passed in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from aion_common.domain import (
    IdReusePolicy,
    OverlapPolicy,
    ScheduledRun,
    ScheduleRecord,
    ScheduleState,
    ScheduleTrigger,
    StartWorkflow,
    derive_id,
    due_fires,
    fire_ids,
    fire_jitter,
)

__all__ = ["BUFFER_POLL", "Book", "Fire", "Step"]

BUFFER_POLL = timedelta(seconds=1)
"""How often a schedule holding a buffered fire (or a trigger waiting for an open run) checks
whether its open run ended."""


@dataclass(frozen=True, slots=True)
class Fire:
    """A run to start: its command, and whether the overlap policy watches it."""

    command: StartWorkflow
    nominal: datetime
    watched: bool


@dataclass(frozen=True, slots=True)
class Step:
    """One schedule's decision: starts, the state after them (its ``running`` lacks the new
    watched runs: the service adds them with their offsets), triggers handled."""

    fires: tuple[Fire, ...]
    state: ScheduleState
    triggers_done: tuple[str, ...]


class Book:
    """Definitions, triggers and states of one partition's schedules."""

    def __init__(self) -> None:
        self.definitions: dict[str, ScheduleRecord] = {}
        self.states: dict[str, ScheduleState] = {}
        self.triggers: dict[str, ScheduleTrigger] = {}
        self.checked: dict[str, datetime] = {}
        """When each schedule's watched runs were last checked (in memory only)."""

    # -- what the topics feed in ------------------------------------------------------------

    def definition(self, schedule_id: str, record: ScheduleRecord | None) -> None:
        """A definition was written (None: deleted)."""
        if record is None:
            self.definitions.pop(schedule_id, None)
        else:
            self.definitions[schedule_id] = record

    def trigger(self, key: str, trigger: ScheduleTrigger | None) -> None:
        """A trigger request was written (None: handled, deleted)."""
        if trigger is None:
            self.triggers.pop(key, None)
        else:
            self.triggers[key] = trigger

    def state(self, schedule_id: str, state: ScheduleState | None) -> None:
        """A state record was read (or written by this scheduler)."""
        if state is None:
            self.states.pop(schedule_id, None)
        else:
            self.states[schedule_id] = state

    # -- what is due ------------------------------------------------------------------------

    def orphans(self) -> list[str]:
        """Schedules with a state but no definition (deleted): their state is deleted too."""
        return [s for s in self.states if s not in self.definitions]

    def triggers_of(self, schedule_id: str) -> list[tuple[str, ScheduleTrigger]]:
        """Pending triggers of ``schedule_id``, oldest first."""
        found = [(k, t) for k, t in self.triggers.items() if t.schedule_id == schedule_id]
        return sorted(found, key=lambda kt: (kt[1].requested_at, kt[0]))

    def wake_at(  # noqa: PLR0911 - one answer per reason to wake
        self, schedule_id: str, now: datetime
    ) -> datetime | None:
        """When ``schedule_id`` next needs a step (``now`` when it does already)."""
        record = self.definitions.get(schedule_id)
        if record is None:
            return None
        if self.triggers_of(schedule_id):
            return now
        state = self.states.get(schedule_id)
        if state is not None and state.buffered is not None:
            checked = self.checked.get(schedule_id)
            return now if checked is None else min(now, checked + BUFFER_POLL)
        if record.paused:
            return None
        due = due_fires(record, None if state is None else state.last_fire, now)
        if due.due or due.missed:
            return now
        if due.next_fire is None:
            return None
        return due.next_fire + fire_jitter(schedule_id, due.next_fire, record.jitter_ms)

    def schedule_ids(self) -> Iterator[str]:
        """Every schedule defined here."""
        return iter(list(self.definitions))

    def needs_open_runs(self, schedule_id: str) -> bool:
        """Whether :meth:`step` for ``schedule_id`` must know which watched runs are open."""
        state = self.states.get(schedule_id)
        return state is not None and bool(state.running)

    def step(self, schedule_id: str, now: datetime, open_runs: Collection[str]) -> Step | None:
        """Decide ``schedule_id``'s starts at ``now``; ``open_runs`` are the workflow ids of its
        watched runs that have not ended. None when there is nothing to do."""
        record = self.definitions.get(schedule_id)
        if record is None:
            return None
        before = self.states.get(schedule_id) or ScheduleState(
            schedule_id=schedule_id, updated_at=now
        )
        running = tuple(r for r in before.running if r.workflow_id in open_runs)
        self.checked[schedule_id] = now
        plan = _Plan(record, before, running)
        if before.buffered is not None and not running:
            plan.start(before.buffered, kind="fire")
            plan.buffered = None
        triggers = self.triggers_of(schedule_id)
        for _key, trigger in triggers:
            plan.offer(trigger.requested_at, kind="trigger", request_id=trigger.request_id)
        if not record.paused:
            due = due_fires(record, before.last_fire, now)
            plan.missed += due.missed
            if due.missed_until is not None:
                plan.last_fire = due.missed_until
            for nominal in due.due:
                plan.offer(nominal, kind="fire")
                plan.last_fire = nominal
            plan.next_fire = due.next_fire
        else:
            plan.next_fire = None
        state = plan.state(now)
        unchanged = replace(state, updated_at=before.updated_at) == before
        if not plan.fires and not triggers and unchanged:
            return None
        return Step(tuple(plan.fires), state, tuple(k for k, _ in triggers))


class _Plan:
    """One step's decisions, accumulated."""

    def __init__(
        self, record: ScheduleRecord, before: ScheduleState, running: tuple[ScheduledRun, ...]
    ) -> None:
        self.record = record
        self.before = before
        self.running = running
        self.fires: list[Fire] = []
        self.buffered = before.buffered
        self.last_fire = before.last_fire
        self.next_fire = before.next_fire
        self.skipped = 0
        self.missed = 0

    @property
    def busy(self) -> bool:
        """Whether a run of the schedule is open (watched, or started in this step)."""
        return bool(self.running) or any(f.watched for f in self.fires)

    def offer(self, nominal: datetime, *, kind: str, request_id: str = "") -> None:
        """A fire (or trigger) at ``nominal``: start, buffer or skip it by the policy."""
        policy = self.record.overlap
        if policy is OverlapPolicy.ALLOW_ALL or not self.busy:
            self.start(nominal, kind=kind, request_id=request_id)
        elif policy is OverlapPolicy.BUFFER_ONE and self.buffered is None and kind == "fire":
            self.buffered = nominal
        else:
            self.skipped += 1

    def start(self, nominal: datetime, *, kind: str, request_id: str = "") -> None:
        record = self.record
        if kind == "trigger":
            # named by its request id: a retried trigger request is the same run
            command_id = derive_id("schedule-trigger", record.schedule_id, request_id)
            workflow_id = f"{record.schedule_id}-trigger-{command_id[:8]}"
        else:
            workflow_id, command_id = fire_ids(record.schedule_id, nominal)
        command = StartWorkflow(
            command_id=command_id,
            issued_at=nominal,
            workflow_id=workflow_id,
            workflow_type=record.workflow_type,
            input=record.input,
            execution_timeout_ms=record.execution_timeout_ms,
            id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
        )
        watched = record.overlap is not OverlapPolicy.ALLOW_ALL
        self.fires.append(Fire(command, nominal, watched))

    def state(self, now: datetime) -> ScheduleState:
        last_started = self.fires[-1].command.workflow_id if self.fires else ""
        return ScheduleState(
            schedule_id=self.record.schedule_id,
            last_fire=self.last_fire,
            next_fire=self.next_fire,
            started=self.before.started + len(self.fires),
            skipped=self.before.skipped + self.skipped,
            missed=self.before.missed + self.missed,
            buffered=self.buffered,
            running=self.running,
            last_started=last_started or self.before.last_started,
            updated_at=now,
        )
