"""Command handling: signals, timers across restarts, timeouts, cancellation, idempotency."""

from __future__ import annotations

from datetime import timedelta

import pytest
from engine_harness import T0, World, payload
from engine_workflows import make_registry

from aion_common.domain import (
    Completed,
    ContinuedAsNew,
    EventBatch,
    FireTimer,
    IdReusePolicy,
    RecordChildTerminal,
    RefusalCode,
    SequenceError,
    SignalWorkflow,
    TimerFired,
    TimerScheduled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTimedOut,
    record_child_terminal_id,
)
from aion_engine import EngineCore


def test_signals_sent_before_and_after_the_wait_arrive_in_order() -> None:
    world = World(make_registry())
    world.start("s", "signals")
    world.signal("s", "x", "x1")  # before any wait: buffered
    world.signal("s", "x", "x2")
    world.fire_all("s")  # the sleep ends; both buffered x signals are taken at once
    assert world.kinds("s")[-1] == "TimerFired"
    world.signal("s", "y", "y1")  # after the wait began
    assert world.result("s") == ["x1", "x2", "y1"]


def test_signal_wait_timeout_raises_signal_timeout_in_the_code() -> None:
    world = World(make_registry())
    world.start("t", "signal-timeout")
    world.fire_all("t")
    assert world.result("t") == "timed out"


def test_signal_arriving_before_the_timeout_wins_and_the_stale_timer_is_harmless() -> None:
    world = World(make_registry())
    world.start("t", "signal-timeout")
    world.signal("t", "approve", "yes")
    assert world.result("t") == "yes"
    (request,) = world.timers.values()
    assert world.fire(request).is_noop


def test_durable_sleep_survives_a_restart() -> None:
    world = World(make_registry())
    world.start("z", "sleeper", 30)
    (request,) = world.timers.values()
    assert request.fire_at == T0 + timedelta(seconds=30)

    restarted = EngineCore(make_registry())
    for batch in world.batches:
        restarted.apply_batch(batch)
    assert restarted.pending_timers() == [request]

    decision = restarted.handle(request.command, now=request.fire_at)
    assert decision.batch is not None
    fired, completed = decision.batch.events
    assert isinstance(fired, TimerFired)
    assert isinstance(completed, WorkflowCompleted)
    assert completed.result.to_json() == f"slept until {request.fire_at.isoformat()}"
    assert restarted.pending_timers() == []
    assert restarted.handle(request.command, now=request.fire_at).is_noop


def test_rebuild_skips_duplicate_batches_and_rejects_gaps() -> None:
    world = World(make_registry())
    world.start("w", "waiter")
    world.signal("w", "go", 1)
    core = EngineCore(make_registry())
    first, second = world.batches
    core.apply_batch(first)
    core.apply_batch(first)  # a re-delivered record: its seqs are already held
    core.apply_batch(second)
    assert core.last_seq("w") == 3
    gap = EventBatch(
        workflow_id="w",
        command_id="x",
        writer="t",
        events=(TimerFired(**{**_env(second.events[-1]), "seq": 5}, timer_id="t"),),
    )
    with pytest.raises(SequenceError):
        core.apply_batch(gap)


def _env(event: object) -> dict[str, object]:
    return {
        name: getattr(event, name)
        for name in ("workflow_id", "run_id", "seq", "recorded_at", "command_id")
    }


def test_execution_timeout_times_the_run_out() -> None:
    world = World(make_registry())
    decision = world.start("slow", "waiter", execution_timeout_ms=90_000)
    assert decision.batch is not None
    timer = decision.batch.events[1]
    assert isinstance(timer, TimerScheduled)
    assert timer.fire_at == T0 + timedelta(seconds=90)
    (request,) = decision.timers
    fired = world.fire(request)
    assert fired.batch is not None
    assert [type(e).__name__ for e in fired.batch.events] == ["TimerFired", "WorkflowTimedOut"]
    timed_out = fired.batch.events[-1]
    assert isinstance(timed_out, WorkflowTimedOut)
    assert timed_out.timeout == "1m30s"
    assert world.signal("slow", "go").refusal is not None


def test_cancellation_caught_by_the_code_which_then_returns_a_result() -> None:
    world = World(make_registry())
    world.start("c", "cleanup")
    decision = world.cancel("c")
    assert decision.batch is not None
    assert [type(e).__name__ for e in decision.batch.events] == [
        "CancelRequested",
        "TimerScheduled",
    ]
    assert world.cancel("c").is_noop  # already requested
    world.fire_all("c")
    assert world.result("c") == "cleaned up"


def test_duplicate_commands_are_no_ops() -> None:
    world = World(make_registry())
    first = world.start("d", "waiter", command_id="start-1")
    assert world.start("d", "waiter", command_id="start-1").is_noop
    again = world.start("d", "waiter", command_id="start-2")
    assert again.refusal is not None
    assert again.refusal.code is RefusalCode.ALREADY_RUNNING
    assert again.batch is None
    signal = SignalWorkflow(
        command_id="sig-1", issued_at=T0, workflow_id="d", name="go", payload=payload("v")
    )
    assert world.send(signal).batch is not None
    assert world.send(signal).is_noop
    assert first.batch is not None
    assert world.core.last_seq("d") == 3


def test_refusals_name_the_reason() -> None:
    world = World(make_registry())
    unknown_type = world.start("u", "nope")
    assert unknown_type.refusal is not None
    assert unknown_type.refusal.code is RefusalCode.UNKNOWN_WORKFLOW_TYPE
    assert "'nope' is not loaded" in unknown_type.refusal.reason
    assert "fanout" in unknown_type.refusal.reason
    assert "u" not in world.core

    missing = world.signal("ghost", "go")
    assert missing.refusal is not None
    assert missing.refusal.code is RefusalCode.UNKNOWN_WORKFLOW
    assert missing.refusal.command_type == "SignalWorkflow"

    world.start("w", "waiter")
    world.signal("w", "go")
    closed = world.signal("w", "go")
    assert closed.refusal is not None
    assert closed.refusal.code is RefusalCode.WORKFLOW_CLOSED
    assert world.cancel("w").refusal is not None
    assert world.terminate("w").refusal is not None


@pytest.mark.parametrize(
    ("policy", "closed_by", "allowed"),
    [
        (IdReusePolicy.ALLOW_DUPLICATE, "complete", True),
        (IdReusePolicy.REJECT_DUPLICATE, "fail", False),
        (IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, "complete", False),
        (IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, "fail", True),
        (IdReusePolicy.TERMINATE_IF_RUNNING, "complete", True),
    ],
)
def test_id_reuse_after_close_follows_the_policy(
    policy: IdReusePolicy, closed_by: str, allowed: bool
) -> None:
    world = World(make_registry())
    world.start("r", "leaf", {"mode": closed_by, "i": 0})
    decision = world.start("r", "leaf", {"mode": "complete", "i": 1}, id_reuse_policy=policy)
    if allowed:
        assert decision.batch is not None
        assert world.result("r") == {"i": 1}
    else:
        assert decision.refusal is not None
        assert decision.refusal.code is RefusalCode.ID_REUSE_REJECTED


def _record(
    world: World, outcome: object, *, run_id: str, child: str = "kid"
) -> RecordChildTerminal:
    return RecordChildTerminal(
        command_id=record_child_terminal_id("w", run_id, child) + "-" + world.next_id(),
        issued_at=T0,
        workflow_id="w",
        parent_run_id=run_id,
        child_workflow_id=child,
        child_run_id="r",
        outcome=outcome,  # type: ignore[arg-type]
    )


def test_record_child_terminal_follows_the_reference() -> None:
    world = World(make_registry())
    started = world.start("w", "waiter")
    assert started.batch is not None
    run_id = started.batch.events[0].run_id
    done = Completed(result=payload(1))

    recorded = world.send(_record(world, done, run_id=run_id))
    assert recorded.batch is not None
    assert [type(e).__name__ for e in recorded.batch.events] == ["ChildWorkflowCompleted"]
    assert world.send(_record(world, done, run_id=run_id)).is_noop  # AlreadyRecorded

    can = ContinuedAsNew(input=payload(0), workflow_type=None, next_run_id="n")
    refused = world.send(_record(world, can, run_id=run_id, child="other"))
    assert refused.batch is None
    assert refused.refusal is None
    assert refused.dead_letter_reason is not None
    assert "continue-as-new is not a recordable child terminal" in refused.dead_letter_reason

    unknown_run = world.send(_record(world, done, run_id="no-such-run", child="other"))
    assert unknown_run.dead_letter_reason is not None

    world.signal("w", "go")
    assert world.send(_record(world, done, run_id=run_id, child="late")).is_noop  # ParentTerminal


def test_workflow_exception_fails_the_run_with_its_message() -> None:
    world = World(make_registry())
    world.start("x", "raiser")
    world.signal("x", "go")
    last = world.history("x")[-1]
    assert isinstance(last, WorkflowFailed)
    assert last.error.message == "RuntimeError: kaput"


async def test_awaiting_asyncio_sleep_inside_a_loop_fails_with_a_clear_error() -> None:
    world = World(make_registry())
    world.start("a", "asyncio-sleeper")
    last = world.history("a")[-1]
    assert isinstance(last, WorkflowFailed)
    assert last.error.message.startswith("workflow code awaited <Future")
    assert last.error.message.endswith("; only ctx.* operations may be awaited inside a workflow")


def test_awaiting_asyncio_sleep_without_a_loop_fails_with_a_clear_error() -> None:
    world = World(make_registry())
    world.start("a", "asyncio-sleeper")
    last = world.history("a")[-1]
    assert isinstance(last, WorkflowFailed)
    assert "only ctx.* operations may be awaited inside a workflow" in last.error.message


def test_fire_timer_for_unknown_or_closed_runs_is_a_no_op() -> None:
    world = World(make_registry())
    stale = FireTimer(command_id="f", issued_at=T0, workflow_id="none", run_id="r", timer_id="t")
    assert world.send(stale).is_noop
    world.start("z", "sleeper", 1)
    (request,) = world.timers.values()
    world.terminate("z")
    assert world.fire(request).is_noop


def test_clear_drops_every_workflow() -> None:
    world = World(make_registry())
    world.start("w", "waiter")
    assert world.core.resident_count == 1
    world.core.clear()
    assert len(world.core) == 0
    assert world.core.resident_count == 0


def test_record_for_a_run_that_continued_as_new_is_parent_terminal() -> None:
    world = World(make_registry())
    world.start("w", "counter", 0)
    first_run = world.history("w")[0].run_id
    world.fire_all("w")  # the first run continues as new
    assert world.kinds("w")[-2:] == ["WorkflowStarted", "TimerScheduled"]
    done = Completed(result=payload(1))
    assert world.send(_record(world, done, run_id=first_run)).is_noop


@pytest.mark.parametrize(
    "policy",
    [
        IdReusePolicy.ALLOW_DUPLICATE,
        IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        IdReusePolicy.REJECT_DUPLICATE,
    ],
)
def test_a_running_id_is_refused_unless_terminate_if_running(policy: IdReusePolicy) -> None:
    world = World(make_registry())
    world.start("r", "waiter")
    decision = world.start("r", "waiter", id_reuse_policy=policy)
    assert decision.refusal is not None
    assert decision.refusal.code is RefusalCode.ALREADY_RUNNING
    assert "TERMINATE_IF_RUNNING" in decision.refusal.reason


def test_terminate_if_running_replaces_the_run_in_one_step() -> None:
    world = World(make_registry())
    first = world.start("r", "waiter")
    assert first.batch is not None
    old_run = first.batch.events[0].run_id
    decision = world.start(
        "r",
        "leaf",
        {"mode": "complete", "i": 2},
        id_reuse_policy=IdReusePolicy.TERMINATE_IF_RUNNING,
    )
    assert decision.batch is not None
    events = decision.batch.events
    assert isinstance(events[0], WorkflowFailed)
    assert events[0].run_id == old_run
    assert events[0].error.error_type == "Terminated"
    assert events[0].error.message.startswith("terminated:replaced by a new start")
    assert isinstance(events[1], WorkflowStarted)
    assert events[1].run_id != old_run
    assert world.result("r") == {"i": 2}


def test_terminate_records_a_reason_and_its_type() -> None:
    world = World(make_registry())
    world.start("t", "waiter")
    decision = world.terminate("t", reason="")
    assert decision.batch is not None
    failed = decision.batch.events[-1]
    assert isinstance(failed, WorkflowFailed)
    assert failed.error.message == "terminated:no reason given"
    assert failed.error.error_type == "Terminated"
