"""A chain that continues-as-new for ever keeps bounded engine state (decision 63): only the
latest ``CLOSED_RUNS_KEPT`` closed runs, in memory, in the head and in its changelog records;
a child carried past them still reaches the current run, and a late command addressed to a
forgotten run is refused or deduplicated, never applied."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from engine_harness import World, payload

from aion import activity
from aion.workflow import WorkflowContext
from aion_common.codecs import Codec
from aion_common.domain import (
    ActivityTask,
    CompleteActivity,
    RecordChildTerminal,
    RefusalCode,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
)
from aion_common.kafka.changelog import ChangelogStore
from aion_engine._snapshot import decode_head, encode_head, observable
from aion_engine._state import CLOSED_RUNS_KEPT, WorkflowState
from aion_engine.registry import WorkflowRegistry

STEP = 50
"""Continue-as-news per tick signal (the engine refuses 100 in one command: a loop)."""


@activity.defn
def poll_once(target: str) -> str:
    return f"polled {target}"


def _registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("poller")
    async def poller(ctx: WorkflowContext, state: dict[str, Any]) -> Any:
        """A polling loop: continues-as-new until ``total`` runs, waiting for a tick every
        :data:`STEP` runs; its first run may start a child, await a quick one, or start an
        activity, and its last run awaits the child (or leaves it to the close policy)."""
        n = state["n"]
        if n == 0 and state.get("child"):
            await ctx.start_child("waiter", None, id=state["child"])
        if n == 0 and state.get("quick"):
            await (await ctx.start_child("echo", "hi", id=state["quick"])).result()
        if n == 0 and state.get("activity"):
            await ctx.start_activity(poll_once, "x", start_to_close=60)
        if n >= state["total"]:
            if state.get("child") and state.get("await_child", True):
                return await ctx.get_child(state["child"]).result()
            return n
        if (n + 1) % STEP == 0:
            await ctx.wait_signal("tick")
        ctx.continue_as_new({**state, "n": n + 1})

    @registry.defn("waiter")
    async def waiter(ctx: WorkflowContext, _: object) -> Any:
        return await ctx.wait_signal("go")

    @registry.defn("echo")
    async def echo(ctx: WorkflowContext, value: object) -> Any:
        return value

    return registry


def _runs(world: World, workflow_id: str) -> list[WorkflowStarted]:
    return [e for e in world.history(workflow_id) if isinstance(e, WorkflowStarted)]


def _tick_until(world: World, workflow_id: str, runs: int) -> None:
    """Signal ticks until the chain has had ``runs`` runs (a multiple of STEP)."""
    while len(_runs(world, workflow_id)) < runs:
        world.signal(workflow_id, "tick")


def _finish(world: World, workflow_id: str) -> object:
    """Tick until the chain ends; its result."""
    for _ in range(1_000):
        if isinstance(world.history(workflow_id)[-1], WorkflowCompleted):
            return world.result(workflow_id)
        world.signal(workflow_id, "tick")
    raise AssertionError(f"{workflow_id} did not end")


def _state(world: World, workflow_id: str) -> WorkflowState:
    state = world.core.state_of(workflow_id)
    assert state is not None
    return state


def _dead_letters(world: World) -> list[str]:
    return [d.dead_letter_reason for _, d in world.decisions if d.dead_letter_reason]


def test_an_endless_chain_keeps_its_state_head_and_changelog_bounded(tmp_path: Path) -> None:
    world = World(_registry(), store=ChangelogStore(tmp_path / "p0.sqlite"))
    world.start("p", "poller", {"n": 0, "total": 10**9})
    codec = Codec()
    head_sizes: dict[int, int] = {}
    tick_bytes: dict[int, int] = {}
    while len(_runs(world, "p")) < 5_000:
        before = world.changelog_bytes
        world.signal("p", "tick")
        runs = len(_runs(world, "p"))
        tick_bytes[runs] = world.changelog_bytes - before
        state = _state(world, "p")
        assert len(state.closed_runs) <= CLOSED_RUNS_KEPT
        head_sizes[runs] = len(encode_head(codec, state))
    state = _state(world, "p")
    kept = [started.run_id for started in _runs(world, "p")[-CLOSED_RUNS_KEPT - 1 : -1]]
    assert list(state.closed_runs) == kept, "the latest runs, oldest first"
    # Once the window is full, a head and a tick's changelog records grow only by the tick's
    # command id in the window of earlier ids (bounded itself, at 1,024 ids): about 20 bytes a
    # tick. Unbounded, they grew by the 50 runs' start and terminal a tick (about 19 KB).
    ticks = (5_000 - 2_500) // STEP
    assert (head_sizes[5_000] - head_sizes[2_500]) / ticks < 64
    assert (tick_bytes[5_000] - tick_bytes[2_500]) / ticks < 64
    restored = world.restored("p")
    assert restored is not None
    assert observable(restored) == observable(state)


@pytest.mark.parametrize("ends", ["mid-chain", "at the last run", "after a restore"])
def test_a_child_carried_past_the_kept_runs_reaches_the_current_run(
    ends: str, tmp_path: Path
) -> None:
    store = ChangelogStore(tmp_path / "p0.sqlite") if ends == "after a restore" else None
    world = World(_registry(), store=store)
    world.start("p", "poller", {"n": 0, "total": 4 * STEP, "child": "kid"})
    origin = _runs(world, "p")[0].run_id
    # mid-chain the record reaches a run that continues on; at the last run, the one awaiting it
    _tick_until(world, "p", 4 * STEP + 1 if ends == "at the last run" else 3 * STEP)
    assert origin not in _state(world, "p").closed_runs, "the run that started it is forgotten"
    if store is not None:
        world.restart()
    world.signal("kid", "go", "done")  # its record is addressed to the run that started it
    records = {c.command_id: c for c, _ in world.decisions if isinstance(c, RecordChildTerminal)}
    (record,) = records.values()
    assert record.parent_run_id == origin
    if ends != "at the last run":
        world.signal("p", "tick")  # recorded, not awaited yet: carried on with its result
    again = world.send(dataclasses.replace(record, command_id="another-issuer"))
    assert again.is_noop, "the chain's latest run holds it already (or has ended)"
    assert _finish(world, "p") == "done"
    assert len(_runs(world, "p")) == 4 * STEP + 1
    assert not _dead_letters(world)
    assert not world.refusals


def test_the_chain_end_closes_a_child_carried_past_the_kept_runs_quietly() -> None:
    """The chain ends without awaiting the child: its close policy terminates it under the run
    that started it, long forgotten, and that terminal finds the chain closed (a no-op)."""
    world = World(_registry())
    world.start("p", "poller", {"n": 0, "total": 2 * STEP, "child": "kid", "await_child": False})
    assert _finish(world, "p") == 2 * STEP
    assert isinstance(world.history("kid")[-1], WorkflowFailed)
    assert world.history("kid")[-1].error.message.startswith("terminated:parent-close")
    records = [c for c, _ in world.decisions if isinstance(c, RecordChildTerminal)]
    assert records
    assert all(d.is_noop for c, d in world.decisions if isinstance(c, RecordChildTerminal))
    assert not _dead_letters(world)


def test_a_late_child_terminal_to_a_forgotten_run_is_deduplicated_or_refused() -> None:
    world = World(_registry())
    world.start("p", "poller", {"n": 0, "total": 10**9, "quick": "q"})
    # the engine reports the quick child's terminal, and the watcher does too: one command id
    records = {c.command_id: c for c, _ in world.decisions if isinstance(c, RecordChildTerminal)}
    (record,) = records.values()
    assert world.send(dataclasses.replace(record, command_id="again-1")).is_noop  # run closed
    _tick_until(world, "p", 2 * STEP)
    assert record.parent_run_id not in _state(world, "p").closed_runs
    seq = _state(world, "p").last_seq
    assert world.send(record).is_noop, "its command id is still known: a duplicate"
    late = world.send(dataclasses.replace(record, command_id="again-2"))
    assert late.batch is None
    assert late.dead_letter_reason is not None
    assert f"parent run {record.parent_run_id!r} does not exist" in late.dead_letter_reason
    assert "older than the 64 closed runs" in late.dead_letter_reason
    assert _state(world, "p").last_seq == seq


def test_a_late_activity_report_to_a_forgotten_run_is_refused() -> None:
    world = World(_registry())
    world.start("p", "poller", {"n": 0, "total": 10**9, "activity": True})
    (task,) = [t for _, t in world.tasks if isinstance(t, ActivityTask)]

    def report(n: int) -> CompleteActivity:
        return CompleteActivity(
            command_id=f"report-{n}",
            issued_at=world.now,
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            activity_id=task.activity_id,
            attempt=task.attempt,
            result=payload(None),
        )

    stale = world.send(report(1))
    assert stale.refusal is not None
    assert stale.refusal.code is RefusalCode.STALE_ACTIVITY_REPORT  # its run is kept: closed
    _tick_until(world, "p", 2 * STEP)
    seq = _state(world, "p").last_seq
    late = world.send(report(2))
    assert late.batch is None
    assert late.refusal is not None
    assert late.refusal.code is RefusalCode.UNKNOWN_ACTIVITY
    assert f"no run {task.run_id!r}" in late.refusal.reason
    assert "older than the 64 closed runs" in late.refusal.reason
    assert _state(world, "p").last_seq == seq


def test_a_head_written_with_more_closed_runs_loads_the_latest_ones() -> None:
    """A head written before the bound (every closed run of the chain) loads as the live state
    now is: the latest runs kept, the open run's events applied on top."""
    world = World(_registry())
    world.start("p", "poller", {"n": 0, "total": 10**9})
    _tick_until(world, "p", 4 * STEP)
    live = _state(world, "p")
    assert live.run is not None
    assert live.open_run is not None
    history = world.history("p")
    old = WorkflowState("p", last_seq=live.last_seq, recent=dict(live.recent), run=live.run)
    old.chain_starts = set(live.chain_starts)
    ends = {e.run_id: e for e in history if isinstance(e, WorkflowContinuedAsNew)}
    for started in _runs(world, "p")[:-1]:
        old.closed_runs[started.run_id] = (started, ends[started.run_id])
    assert len(old.closed_runs) == 4 * STEP - 1
    codec = Codec()
    restored = decode_head(codec, "p", encode_head(codec, old))
    assert len(restored.closed_runs) == CLOSED_RUNS_KEPT
    for event in live.run.events:
        restored.apply(event)
    assert observable(restored) == observable(live)
