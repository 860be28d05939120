"""Signal-with-start: start if absent, then signal; the signal reaches the first step."""

from __future__ import annotations

from typing import Any

from engine_harness import World, payload

from aion.workflow import WorkflowContext
from aion_common.domain import (
    IdReusePolicy,
    RefusalCode,
    SignalReceived,
    SignalWithStartWorkflow,
    WorkflowStarted,
)
from aion_engine import EngineCore
from aion_engine._replay import replay_run
from aion_engine.registry import WorkflowRegistry


def _registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("collector")
    async def collector(ctx: WorkflowContext, expected: int) -> list[Any]:
        seen = []
        while len(seen) < expected:
            seen.append(await ctx.wait_signal("event"))
        return seen

    @registry.defn("first-step-peek")
    async def first_step_peek(ctx: WorkflowContext, _: object) -> Any:
        # a zero timeout answers only from what is buffered: the signal must be there already
        return await ctx.wait_signal("event", timeout=0)

    @registry.defn("timed-collector")
    async def timed(ctx: WorkflowContext, _: object) -> Any:
        await ctx.sleep(5)
        return await ctx.wait_signal("event")

    return registry


def _sws(world: World, workflow_id: str, value: object, **kw: Any) -> SignalWithStartWorkflow:
    return SignalWithStartWorkflow(
        command_id=kw.pop("command_id", None) or world.next_id("sws"),
        issued_at=world.now,
        workflow_id=workflow_id,
        workflow_type=kw.pop("workflow_type", "collector"),
        input=payload(kw.pop("input", 3)),
        signal_name="event",
        signal_payload=payload(value),
        **kw,
    )


def test_starts_an_absent_workflow_and_signals_the_open_one_in_order() -> None:
    world = World(_registry())
    for value in ("a", "b", "c"):
        world.send(_sws(world, "o-1", value))
    assert world.result("o-1") == ["a", "b", "c"]
    starts = [e for e in world.history("o-1") if isinstance(e, WorkflowStarted)]
    assert len(starts) == 1
    first_batch = world.batches[0]
    assert [type(e).__name__ for e in first_batch.events] == ["WorkflowStarted", "SignalReceived"]
    assert {e.command_id for e in first_batch.events} == {first_batch.command_id}


def test_the_signal_is_there_at_the_first_step() -> None:
    world = World(_registry())
    world.send(_sws(world, "p", {"n": 1}, workflow_type="first-step-peek", input=None))
    assert world.result("p") == {"n": 1}


def test_replay_delivers_the_signal_before_the_first_step_as_live() -> None:
    world = World(_registry())
    world.send(_sws(world, "p", "x", workflow_type="timed-collector", input=None))
    executor = replay_run(_registry().get("timed-collector"), world.history("p"))  # type: ignore[arg-type]
    assert not executor.finished  # sleeping, the signal buffered, no divergence
    restarted = EngineCore(_registry())
    for batch in world.batches:
        restarted.apply_batch(batch)
    (timer,) = world.timers.values()
    decision = restarted.handle(timer.command, now=timer.fire_at)
    assert decision.batch is not None
    assert decision.batch.events[-1].result.to_json() == "x"  # type: ignore[attr-defined]


def test_a_duplicate_is_a_noop_before_and_after_the_run_closed() -> None:
    world = World(_registry())
    first = _sws(world, "d", "a", input=1)
    world.send(first)
    assert world.send(first).is_noop  # the open run applied it
    assert world.result("d") == ["a"]
    assert world.send(first).is_noop  # it started a chain: remembered while the id lives


def test_a_closed_workflow_is_started_again_under_its_reuse_policy() -> None:
    world = World(_registry())
    world.send(_sws(world, "r", "a", input=1))
    world.send(_sws(world, "r", "b", input=1))  # closed: a new run with its signal
    assert world.result("r") == ["b"]
    refused = world.send(
        _sws(world, "r", "c", input=1, id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE)
    )
    assert refused.refusal is not None
    assert refused.refusal.code is RefusalCode.ID_REUSE_REJECTED
    assert refused.refusal.command_type == "SignalWithStartWorkflow"


def test_an_unknown_type_is_refused_and_a_running_workflow_ignores_the_type() -> None:
    world = World(_registry())
    refused = world.send(_sws(world, "u", "a", workflow_type="nope"))
    assert refused.refusal is not None
    assert refused.refusal.code is RefusalCode.UNKNOWN_WORKFLOW_TYPE
    world.send(_sws(world, "u", "a", input=2))
    world.send(_sws(world, "u", "b", workflow_type="nope"))  # open: only the signal counts
    assert world.result("u") == ["a", "b"]
    assert isinstance(world.history("u")[-2], SignalReceived)
