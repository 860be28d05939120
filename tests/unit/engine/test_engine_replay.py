"""Replay: evicted and resident runs give identical histories; code changes are caught."""

from __future__ import annotations

from typing import Any

import pytest
from engine_harness import World
from engine_workflows import make_registry

from aion.workflow import WorkflowContext
from aion_common.domain import NonDeterminism, WorkflowBlocked, WorkflowCompleted
from aion_engine import EngineCore, replay_history
from aion_engine.registry import WorkflowRegistry, load_modules


def _scenario(world: World) -> None:
    """A bit of everything, interleaved across workflows."""
    world.start(
        "fan",
        "fanout",
        [{"mode": m, "i": i} for i, m in enumerate(["complete", "fail", "cancel", "timeout"] * 5)],
    )
    world.start("sig", "signals")
    world.start("det", "deterministic")
    world.start("chain", "runs-counter")
    world.start("clean", "cleanup")
    world.start("guard", "guardian")
    world.signal("sig", "x", 1)
    world.tick(3)
    for i in range(2, 20, 4):
        world.cancel(f"fan/c{i}", reason=f"r{i}")
    world.signal("sig", "x", 2)
    world.cancel("clean")
    world.tick(7)
    world.signal("det", "go")
    for _ in range(4):
        world.tick(40)
        world.fire_all()
    world.signal("sig", "y", 3)
    world.cancel("guard")
    world.drain()


@pytest.mark.parametrize("max_resident", [0, 1, 2])
def test_evicted_and_resident_runs_give_identical_histories(max_resident: int) -> None:
    resident = World(make_registry(), max_resident=10_000)
    evicted = World(make_registry(), max_resident=max_resident)
    _scenario(resident)
    _scenario(evicted)

    assert resident.batches == evicted.batches  # every event, field by field, in order
    assert [d for _, d in resident.decisions] == [d for _, d in evicted.decisions]
    for workflow_id in ("fan", "sig", "det", "chain", "clean"):
        assert isinstance(resident.history(workflow_id)[-1], WorkflowCompleted), workflow_id
    assert evicted.core.resident_count <= max_resident


def test_deterministic_time_randomness_and_ids_survive_replay() -> None:
    world = World(make_registry(), max_resident=0)
    world.start("det", "deterministic")
    world.tick(5)
    world.signal("det", "go")
    result = world.result("det")
    assert isinstance(result, list)
    r1, u1, t1, r2, u2, t2, run_id = result
    assert 0 <= r1 < 1
    assert r1 != r2
    assert u1 != u2
    assert t1 != t2  # now() is the time of the event being processed
    assert run_id == world.history("det")[0].run_id


def _v1() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("order")
    async def order(ctx: WorkflowContext, _: Any) -> Any:
        return await ctx.execute_child("pay", 10, id="pay-1")

    @registry.defn("pay")
    async def pay(ctx: WorkflowContext, amount: int) -> int:
        await ctx.wait_signal("settle")
        return amount

    return registry


def _v2() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("order")
    async def order(ctx: WorkflowContext, _: Any) -> Any:
        await ctx.sleep(5)  # changed: now sleeps first
        return await ctx.execute_child("pay", 10, id="pay-1")

    @registry.defn("pay")
    async def pay(ctx: WorkflowContext, amount: int) -> int:
        await ctx.wait_signal("settle")
        return amount

    @registry.defn("other")
    async def other(ctx: WorkflowContext, _: Any) -> str:
        return str(await ctx.wait_signal("go"))

    return registry


def test_non_determinism_after_a_code_change_blocks_only_that_workflow() -> None:
    before = World(_v1())
    before.start("o", "order")
    before_batches = list(before.batches)

    after = World(_v2())  # a redeploy in place: the same history, new code
    for batch in before_batches:
        after.core.apply_batch(batch)
    after.histories = {k: list(v) for k, v in before.histories.items()}
    after.start("bystander", "other")

    after.signal("pay-1", "settle")  # pay completes; the watcher records it in "o"

    last = after.history("o")[-1]
    assert isinstance(last, WorkflowBlocked), "blocked, not failed: a fix can resume it"
    message = last.error.message
    assert message.startswith("non-determinism in workflow 'o' at seq 2: ")
    assert "expected ChildWorkflowScheduled(pay-1, type=pay) at seq 2" in message
    assert "code scheduled TimerScheduled(" in message
    assert after.kinds("o")[-2:] == ["ChildWorkflowCompleted", "WorkflowBlocked"]

    after.signal("o", "late")  # inputs keep being recorded while it waits
    assert after.kinds("o")[-1] == "SignalReceived"

    after.signal("bystander", "go", "fine")
    assert after.result("bystander") == "fine"


def test_replay_history_checks_a_whole_history() -> None:
    world = World(_v1())
    world.start("o", "order")
    world.signal("pay-1", "settle")
    history = world.history("o")
    assert isinstance(history[-1], WorkflowCompleted)
    replay_history(history, _v1())
    with pytest.raises(NonDeterminism) as caught:
        replay_history(history, _v2())
    assert caught.value.seq == 2


def test_replay_accepts_terminals_the_engine_forced() -> None:
    world = World(make_registry())
    world.start("w", "waiter", execution_timeout_ms=1000)
    world.fire_all("w")
    world.start("t", "waiter")
    world.terminate("t")
    replay_history(world.history("w"), make_registry())
    replay_history(world.history("t"), make_registry())


def test_the_engines_public_names_are_pinned() -> None:
    import aion_engine

    assert sorted(aion_engine.__all__) == [
        "DEFAULT_MAX_RESIDENT",
        "Decision",
        "EngineCore",
        "TimerRequest",
        "WorkflowRegistry",
        "load_modules",
        "replay_history",
    ]
    assert EngineCore is aion_engine.EngineCore


def test_registry_refuses_sync_functions_and_conflicting_types() -> None:
    registry = WorkflowRegistry()

    def not_async(ctx: WorkflowContext, _: Any) -> None:
        return None

    with pytest.raises(Exception, match="async def"):
        registry.register("sync", not_async)  # type: ignore[arg-type]

    @registry.defn("a")
    async def a(ctx: WorkflowContext, _: Any) -> None:
        return None

    async def b(ctx: WorkflowContext, _: Any) -> None:
        return None

    with pytest.raises(Exception, match="defined twice"):
        registry.register("a", b)
    registry.register("a", a)  # re-registering the same function is fine
    assert registry.types() == ("a",)


def test_load_modules_imports_user_modules(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "user_flows_for_engine_test.py").write_text(
        "from aion import workflow\n"
        "@workflow.defn('user-flow-for-engine-test')\n"
        "async def run(ctx, value):\n"
        "    return value\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_modules(["user_flows_for_engine_test"], WorkflowRegistry())
    assert loaded == ("user-flow-for-engine-test",)
    with pytest.raises(Exception, match="cannot import workflow module"):
        load_modules(["no_such_module_for_engine_test"], WorkflowRegistry())
