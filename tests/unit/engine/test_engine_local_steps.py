"""Local steps (``ctx.run``) in the engine's core: the run's steps are attempts on the engine's
own queue, run by :func:`aion_engine.local_steps.run_attempt` as the service runs them, their
reports handed straight back to the core (decision 45)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from engine_harness import World

from aion.workflow import ActivityError, RetryPolicy, WorkflowContext
from aion_common.domain import (
    LOCAL_TASK_QUEUE,
    ActivityCompleted,
    ActivityScheduled,
    ActivityTask,
    InvalidInput,
    WorkflowCompleted,
    WorkflowFailed,
)
from aion_engine import local_steps, replay_history
from aion_engine._context import local_step_name, local_step_options
from aion_engine.registry import WorkflowRegistry

CALLS: list[tuple[str, int]] = []


async def double(value: int) -> int:
    CALLS.append(("double", value))
    return value * 2


def flaky(value: int) -> int:
    """Fails its first call for each value (a plain function: it runs in a thread)."""
    CALLS.append(("flaky", value))
    if CALLS.count(("flaky", value)) == 1:
        raise ConnectionError(f"first call for {value}")
    return value + 100


async def slow(value: int) -> int:
    await asyncio.sleep(1)
    return value


def registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()

    @reg.defn("local.sum")
    async def total(ctx: WorkflowContext, count: int) -> int:
        return sum([int(await ctx.run(double, i)) for i in range(count)])

    @reg.defn("local.flaky")
    async def retried(ctx: WorkflowContext, value: int) -> int:
        policy = RetryPolicy(initial_interval=0.5, maximum_attempts=3)
        return int(await ctx.run(flaky, value, retry=policy))

    @reg.defn("local.slow")
    async def too_long(ctx: WorkflowContext, value: int) -> Any:
        try:
            return await ctx.run(slow, value, start_to_close=0.05)
        except ActivityError as err:
            return {"type": err.cause_type, "message": err.cause_message}

    @reg.defn("local.forever")
    async def forever(ctx: WorkflowContext, value: int) -> int:
        while True:
            value = int(await ctx.run(double, value, retry=RetryPolicy(initial_interval=1)))

    @reg.defn("local.asks-too-much")
    async def asks(ctx: WorkflowContext, value: int) -> Any:
        return await ctx.run(double, value, start_to_close=60)

    return reg


def run_local_steps(world: World, *, max_rounds: int = local_steps.MAX_ROUNDS) -> int:
    """Run every local attempt the core asked for, as the service does; returns how many."""
    ran = 0

    def pending() -> list[ActivityTask]:
        local = [t for q, t in world.tasks if q == LOCAL_TASK_QUEUE]
        world.tasks.clear()
        assert all(isinstance(t, ActivityTask) for t in local)
        return local  # type: ignore[return-value]

    def handle(report: local_steps.Report) -> list[ActivityTask]:
        nonlocal ran
        ran += 1
        world.send(report)
        return pending()

    with ThreadPoolExecutor(2) as threads:
        asyncio.run(
            local_steps.run_batch(
                pending(),
                function_of=world.core.local_step,
                handle=handle,
                threads=threads,
                max_rounds=max_rounds,
            )
        )
    return ran


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def test_steps_run_in_the_engine_and_their_results_are_recorded() -> None:
    world = World(registry())
    world.start("w", "local.sum", 3)
    assert run_local_steps(world) == 3
    assert world.result("w") == 0 + 2 + 4
    assert CALLS == [("double", 0), ("double", 1), ("double", 2)]
    history = world.history("w")
    scheduled = [e for e in history if isinstance(e, ActivityScheduled)]
    assert [e.options.task_queue for e in scheduled] == [LOCAL_TASK_QUEUE] * 3
    assert {e.activity_type for e in scheduled} == {f"{__name__}.double"}
    assert len([e for e in history if isinstance(e, ActivityCompleted)]) == 3
    assert isinstance(history[-1], WorkflowCompleted)
    replay_history(history, registry())  # the recorded results replay without running steps


def test_a_failed_step_is_retried_on_a_durable_timer() -> None:
    world = World(registry())
    world.start("r", "local.flaky", 7)
    assert run_local_steps(world) == 1  # the first attempt fails: a retry timer, no result
    assert not isinstance(world.history("r")[-1], WorkflowCompleted)
    (timer,) = world.timers.values()
    world.fire(timer)
    assert run_local_steps(world) == 1
    assert world.result("r") == 107
    assert CALLS == [("flaky", 7), ("flaky", 7)]


def test_a_step_that_outlives_its_bound_fails_for_good_advising_an_activity() -> None:
    world = World(registry())
    world.start("s", "local.slow", 1)
    assert run_local_steps(world) == 1
    outcome = world.result("s")
    assert outcome["type"] == "LocalStepTooLong"
    assert "run this as an activity" in outcome["message"]


def test_a_bound_past_the_limit_is_refused_where_the_step_is_asked() -> None:
    world = World(registry())
    world.start("a", "local.asks-too-much", 1)
    assert run_local_steps(world) == 0
    last = world.history("a")[-1]
    assert isinstance(last, WorkflowFailed)
    assert "run longer work as an activity" in last.error.message


def test_a_step_redone_after_a_lost_commit_is_recorded_once() -> None:
    """A crash between running a step and committing its result: the command that ran it is
    handled again by a core rebuilt from the log (here: a fresh core given the same start),
    the step runs again, and the history holds its result once."""
    first = World(registry())
    first.start("c", "local.sum", 1, command_id="start-c")
    # the step ran, its report never committed: nothing of it reaches the log
    task = next(t for q, t in first.tasks if q == LOCAL_TASK_QUEUE)
    assert isinstance(task, ActivityTask)
    asyncio.run(local_steps.run_attempt(task, first.core.local_step(task), ThreadPoolExecutor(1)))
    again = World(registry())
    again.start("c", "local.sum", 1, command_id="start-c")
    assert run_local_steps(again) == 1
    assert again.result("c") == 0
    assert CALLS == [("double", 0), ("double", 0)]  # at-least-once effects
    completed = [e for e in again.history("c") if isinstance(e, ActivityCompleted)]
    assert len(completed) == 1


def test_a_steps_name_is_the_same_in_every_version_of_its_package() -> None:
    def fn() -> None: ...

    fn.__module__, fn.__qualname__ = "aion_pkg_0123456789abcdef.shop.flows", "charge"
    assert local_step_name(fn) == "shop.flows.charge"
    with pytest.raises(InvalidInput, match="module-level function"):
        local_step_name(lambda: None)


def test_a_steps_name_and_options_are_worked_out_once_and_refusals_every_time() -> None:
    assert local_step_name(double) == local_step_name(double) == f"{__name__}.double"
    for _ in range(2):
        with pytest.raises(InvalidInput, match="module-level function"):
            local_step_name(lambda: None)
        with pytest.raises(InvalidInput, match="at most 5 s"):
            local_step_options(None, 6)
    assert local_step_options(None, 1.0) is local_step_options(None, 1.0)
    listed = RetryPolicy(non_retryable_errors=["KeyError"])  # a list: not hashable
    options = local_step_options(listed, 2)
    assert options.retry.non_retryable_errors == ("KeyError",)
    assert options.start_to_close_ms == 2000
    assert local_step_options(None, 2).retry.non_retryable_errors == ()


def test_a_batch_runs_at_most_max_rounds_then_retries_on_a_durable_timer() -> None:
    """A workflow looping over ``ctx.run`` cannot keep its batch from committing: past the
    budget its attempt fails (retryable), and the retry comes on a timer, in a later batch."""
    world = World(registry())
    world.start("f", "local.forever", 1)
    assert run_local_steps(world, max_rounds=5) == 6  # five ran, the sixth was over budget
    assert [v for name, v in CALLS] == [1, 2, 4, 8, 16]
    failed = [e for e in world.history("f") if type(e).__name__ == "ActivityAttemptFailed"]
    assert [e.error.error_type for e in failed] == ["LocalStepBudget"]
    (retry,) = world.timers.values()
    world.fire(retry)
    assert run_local_steps(world, max_rounds=2) == 3
    assert [v for name, v in CALLS][5:] == [32, 64]
