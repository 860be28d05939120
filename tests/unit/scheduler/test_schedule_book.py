"""Schedules, pure: cron, due fires, catch-up, overlap policies, triggers, deterministic ids."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from croniter import croniter

from aion_common.domain import (
    InvalidInput,
    OverlapPolicy,
    Payload,
    ScheduledRun,
    ScheduleRecord,
    ScheduleTrigger,
    derive_id,
    due_fires,
    fire_ids,
    fire_jitter,
    trigger_key,
)
from aion_common.domain.cron import CronSpec
from aion_scheduler.book import Book

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _record(**kw: object) -> ScheduleRecord:
    values: dict[str, object] = {
        "schedule_id": "tick",
        "workflow_type": "t",
        "input": Payload.from_json({"n": 1}),
        "every_ms": 1000,
        "not_before": T0,
        "updated_at": T0,
    }
    values.update(kw)
    return ScheduleRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "expression",
    ["*/5 * * * *", "30 2 * * mon-fri", "0 0 13 * 5", "15 */3 1,15 * *", "0 0 29 2 *", "@weekly"],
)
def test_cron_agrees_with_croniter(expression: str) -> None:
    spec = CronSpec.parse(expression)
    rng = random.Random(expression)
    for _ in range(100):
        start = T0 + timedelta(
            minutes=rng.randrange(0, 4 * 365 * 24 * 60), seconds=rng.randrange(60)
        )
        assert spec.next_after(start) == croniter(expression, start).get_next(datetime)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 31 2 *", "never matches"),
        ("* * * *", "has 4 fields"),
        ("61 * * * *", "outside 0-59"),
        ("*/0 * * * *", "step"),
        ("0 0 * * fun", "not a number or a name"),
    ],
)
def test_bad_cron_expressions_say_why(expression: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        CronSpec.parse(expression)


def test_intervals_are_epoch_aligned_and_catch_up_is_bounded() -> None:
    record = _record(every_ms=10_000, catchup_window_ms=30_000)
    due = due_fires(record, None, T0 + timedelta(seconds=25))
    assert due.due == (T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=20))
    assert due.next_fire == T0 + timedelta(seconds=30)
    after_outage = due_fires(record, T0 + timedelta(seconds=20), T0 + timedelta(minutes=10))
    assert after_outage.missed == 54  # 0:30 .. 9:20 are older than the 30 s window
    assert after_outage.due == tuple(T0 + timedelta(seconds=s) for s in (570, 580, 590, 600))
    assert after_outage.missed_until == T0 + timedelta(seconds=560)


def test_jitter_delays_a_fire_deterministically() -> None:
    jitter = fire_jitter("tick", T0, 5000)
    assert timedelta(0) <= jitter < timedelta(seconds=5)
    assert fire_jitter("tick", T0, 5000) == jitter
    record = _record(jitter_ms=5000)
    assert T0 not in due_fires(record, None, T0 + jitter - timedelta(milliseconds=1)).due
    assert T0 in due_fires(record, None, T0 + jitter).due


def test_a_step_starts_due_fires_with_ids_from_the_nominal_time() -> None:
    book = Book()
    book.definition("tick", _record(overlap=OverlapPolicy.ALLOW_ALL))
    step = book.step("tick", T0 + timedelta(seconds=2.5), set())
    assert step is not None
    assert [f.command.workflow_id for f in step.fires] == [
        "tick-2026-03-01T12:00:00Z",
        "tick-2026-03-01T12:00:01Z",
        "tick-2026-03-01T12:00:02Z",
    ]
    assert step.fires[0].command.command_id == fire_ids("tick", T0)[1]
    assert step.state.last_fire == T0 + timedelta(seconds=2)
    assert step.state.started == 3
    book.state("tick", step.state)
    assert book.step("tick", T0 + timedelta(seconds=2.9), set()) is None  # nothing new
    again = Book()  # a restart before the state was written decides the same fires
    again.definition("tick", _record(overlap=OverlapPolicy.ALLOW_ALL))
    redo = again.step("tick", T0 + timedelta(seconds=2.5), set())
    assert redo is not None
    assert [f.command for f in redo.fires] == [f.command for f in step.fires]


def _running(workflow_id: str) -> ScheduledRun:
    return ScheduledRun(
        workflow_id=workflow_id, command_id="c", nominal_at=T0, events_offset=0, replies_offset=0
    )


def test_skip_starts_one_run_at_a_time() -> None:
    book = Book()
    book.definition("tick", _record())
    first = book.step("tick", T0 + timedelta(seconds=1.5), set())
    assert first is not None
    assert len(first.fires) == 1  # the second fire skipped: the first run is open
    assert first.state.skipped == 1
    state = replace(first.state, running=(_running(first.fires[0].command.workflow_id),))
    book.state("tick", state)
    busy = book.step("tick", T0 + timedelta(seconds=2.5), {state.running[0].workflow_id})
    assert busy is not None
    assert busy.fires == ()
    assert busy.state.skipped == 2
    book.state("tick", busy.state)
    free = book.step("tick", T0 + timedelta(seconds=3.5), set())  # the run ended
    assert free is not None
    assert [f.nominal for f in free.fires] == [T0 + timedelta(seconds=3)]
    assert free.state.running == ()


def test_buffer_one_keeps_one_fire_for_when_the_run_ends() -> None:
    book = Book()
    book.definition("tick", _record(overlap=OverlapPolicy.BUFFER_ONE))
    first = book.step("tick", T0 + timedelta(seconds=2.5), set())
    assert first is not None
    assert [f.nominal for f in first.fires] == [T0]
    assert first.state.buffered == T0 + timedelta(seconds=1)
    assert first.state.skipped == 1
    running = (_running(first.fires[0].command.workflow_id),)
    book.state("tick", replace(first.state, running=running))
    released = book.step("tick", T0 + timedelta(seconds=2.7), set())
    assert released is not None
    assert [f.nominal for f in released.fires] == [T0 + timedelta(seconds=1)]
    assert released.state.buffered is None


def test_paused_schedules_do_not_fire_but_triggers_do() -> None:
    book = Book()
    book.definition("tick", _record(paused=True))
    assert book.wake_at("tick", T0 + timedelta(hours=1)) is None
    assert book.step("tick", T0 + timedelta(hours=1), set()) is None
    trigger = ScheduleTrigger(schedule_id="tick", request_id="r1", requested_at=T0)
    book.trigger(trigger_key("tick", "r1"), trigger)
    assert book.wake_at("tick", T0) == T0
    step = book.step("tick", T0 + timedelta(hours=1), set())
    assert step is not None
    (fire,) = step.fires
    assert fire.command.workflow_id.startswith("tick-trigger-")
    assert fire.command.command_id == derive_id("schedule-trigger", "tick", "r1")
    assert step.triggers_done == (trigger_key("tick", "r1"),)


def test_a_definition_needs_exactly_one_spec() -> None:
    with pytest.raises(InvalidInput, match="exactly one"):
        _record(cron="* * * * *")
    with pytest.raises(InvalidInput, match="shortest is 1 s"):
        _record(every_ms=10)
    assert _record(cron="*/5 * * * *", every_ms=None).spec == "cron */5 * * * *"
