"""Continue-as-new drops nothing: unconsumed signals go to the next run in order, open children
stay attached to the chain (recorded and awaitable there, closed by the chain's end)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine_harness import World

from aion.workflow import WorkflowContext
from aion_common.domain import (
    Completed,
    RecordChildTerminal,
    SignalReceived,
    TerminateWorkflow,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
)
from aion_common.kafka.changelog import ChangelogStore
from aion_engine import EngineCore
from aion_engine._replay import replay_run
from aion_engine.registry import WorkflowRegistry
from aion_engine.retention import purge_command


def _registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("batcher")
    async def batcher(ctx: WorkflowContext, state: dict[str, Any]) -> list[Any]:
        await ctx.sleep(10)  # signals arrive meanwhile and wait, buffered
        got = [*state["got"], await ctx.wait_signal("item")]
        if len(got) >= state["total"]:
            return got
        ctx.continue_as_new({"got": got, "total": state["total"]})

    @registry.defn("mixed")
    async def mixed(ctx: WorkflowContext, state: dict[str, Any]) -> list[Any]:
        if state["round"] == 0:
            await ctx.sleep(10)
            first = await ctx.wait_signal("b")  # "a" signals stay unconsumed
            ctx.continue_as_new({"round": 1, "seen": [first]})
        seen = [*state["seen"], await ctx.wait_signal("a"), await ctx.wait_signal("a")]
        return [*seen, await ctx.wait_signal("b")]

    @registry.defn("parent")
    async def parent(ctx: WorkflowContext, state: dict[str, Any]) -> Any:
        if state.get("child") is None:
            handle = await ctx.start_child("waiter", None, id="kid")
            ctx.continue_as_new({"child": handle.workflow_id, "wait": state["wait"]})
        if not state["wait"]:
            return "left it"
        return await ctx.get_child(state["child"]).result()

    @registry.defn("forgetful")
    async def forgetful(ctx: WorkflowContext, state: dict[str, Any]) -> Any:
        if state.get("child") is None:
            handle = await ctx.start_child("waiter", None, id="quick")
            await ctx.wait_signal("next")  # the child ends meanwhile; its result not awaited
            ctx.continue_as_new({"child": handle.workflow_id})
        return await ctx.get_child(state["child"]).result()

    @registry.defn("waiter")
    async def waiter(ctx: WorkflowContext, _: object) -> Any:
        return await ctx.wait_signal("go")

    return registry


def test_unconsumed_signals_go_to_the_next_run_in_order() -> None:
    world = World(_registry())
    world.start("b", "batcher", {"got": [], "total": 4})
    for n in range(4):
        world.signal("b", "item", n)
    for _ in range(4):
        world.fire_all("b")
    assert world.result("b") == [0, 1, 2, 3]
    history = world.history("b")
    second = history.index(next(e for e in history[1:] if isinstance(e, WorkflowStarted)))
    carried = history[second + 1 : second + 4]
    assert [type(e).__name__ for e in carried] == ["SignalReceived"] * 3
    assert [e.payload.to_json() for e in carried if isinstance(e, SignalReceived)] == [1, 2, 3]
    assert {e.command_id for e in carried} == {history[second].command_id}


def test_carried_signals_come_ahead_of_newer_ones_across_names() -> None:
    world = World(_registry())
    world.start("m", "mixed", {"round": 0})
    world.signal("m", "a", "a1")
    world.signal("m", "b", "b1")
    world.signal("m", "a", "a2")
    world.fire_all("m")  # run 1 takes b1 and continues; a1, a2 move on
    world.signal("m", "b", "b2")
    assert world.result("m") == ["b1", "a1", "a2", "b2"]


def test_an_open_child_stays_attached_and_its_result_reaches_the_new_run() -> None:
    world = World(_registry())
    world.start("p", "parent", {"wait": True})
    kinds = world.kinds("p")
    assert "WorkflowContinuedAsNew" in kinds
    assert not any(isinstance(c, TerminateWorkflow) for c, _ in world.decisions)
    second = [e for e in world.history("p") if isinstance(e, WorkflowStarted)][-1]
    (carried,) = second.carried_children
    assert (carried.child_workflow_id, carried.origin_run_id) == (
        "kid",
        world.history("p")[0].run_id,
    )
    world.signal("kid", "go", "done")  # the watcher addresses the run that started it
    assert world.result("p") == "done"
    assert world.kinds("p")[-2:] == ["ChildWorkflowCompleted", "WorkflowCompleted"]
    executor = replay_run(_registry().get("parent"), world.history("p")[len(kinds) - 1 :])  # type: ignore[arg-type]
    assert executor.finished


def test_the_chain_end_applies_the_close_policy_to_a_carried_child() -> None:
    world = World(_registry())
    world.start("q", "parent", {"wait": False})
    assert world.result("q") == "left it"
    assert isinstance(world.history("kid")[-1], WorkflowFailed)
    assert world.history("kid")[-1].error.message.startswith("terminated:parent-close:TERMINATE")
    assert not world.refusals


def test_a_rebuilt_engine_holds_the_carried_child() -> None:
    world = World(_registry())
    world.start("r", "parent", {"wait": True})
    restarted = EngineCore(_registry())
    for batch in world.batches:
        restarted.apply_batch(batch)
    world.core = restarted
    world.signal("kid", "go", 7)
    assert world.result("r") == 7
    assert any(isinstance(e, WorkflowContinuedAsNew) for e in world.history("r"))


def test_a_child_result_not_yet_awaited_goes_on_to_the_next_run() -> None:
    world = World(_registry())
    world.start("f", "forgetful", {})
    world.signal("quick", "go", "early")  # recorded in run 1, which never awaits it
    world.signal("f", "next")
    assert world.result("f") == "early"
    history = world.history("f")
    second = [i for i, e in enumerate(history) if isinstance(e, WorkflowStarted)][-1]
    assert type(history[second + 1]).__name__ == "ChildWorkflowCompleted"
    assert history[second + 1].command_id == history[second].command_id
    executor = replay_run(_registry().get("forgetful"), history[second:])  # type: ignore[arg-type]
    assert executor.finished


def test_a_restore_from_the_changelog_holds_the_carried_child(tmp_path: Path) -> None:
    """The next owner restores the chain from the changelog (issue 21), not the event log:
    the carried child is still the new run's, and its result reaches it."""
    world = World(_registry(), store=ChangelogStore(tmp_path / "p0.sqlite"))
    world.start("r", "parent", {"wait": True})
    world.restart()
    state = world.core.state_of("r")
    assert state is not None
    assert state.open_run is not None
    assert list(state.open_run.open_children) == ["kid"]
    world.signal("kid", "go", 7)
    assert world.result("r") == 7


def test_retention_leaves_a_continued_chain_alone_and_purges_it_once_it_ends(
    tmp_path: Path,
) -> None:
    """A chain that continued-as-new is open (its newest run is), so the sweep's purge is a
    no-op while a carried child runs; once the chain ends it is purged like any closed
    workflow, and a late record addressed to the run that started the child appends nothing."""
    world = World(_registry(), store=ChangelogStore(tmp_path / "p0.sqlite"))
    world.start("p", "parent", {"wait": True})
    origin = world.history("p")[0].run_id
    assert world.send(purge_command("p", len(world.history("p")), world.now)).is_noop
    world.signal("kid", "go", "done")
    assert world.result("p") == "done"
    purged = world.send(purge_command("p", len(world.history("p")), world.now))
    assert purged.batch is not None
    assert world.core.state_of("p") is None
    late = world.send(
        RecordChildTerminal.of(
            "p",
            origin,
            child_workflow_id="kid",
            child_run_id=world.history("kid")[0].run_id,
            outcome=Completed(result=world.history("kid")[-1].result),  # type: ignore[union-attr]
            issued_at=world.now,
        )
    )
    assert late.batch is None  # as for any purged parent: dead-lettered, saying why
    assert late.dead_letter_reason == f"parent run {origin!r} does not exist"
