"""Queries in the engine's core: answered from a run's state, never touching its history.

Each scenario drives :class:`EngineCore` through the broker-free :class:`World`, asks a
``QueryWorkflow`` of the core directly and checks the answer, and that the history (and the
code's later decisions) are exactly what they would have been without the query.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_harness import World, payload

from aion import workflow
from aion.workflow import RetryPolicy, WorkflowContext
from aion_common.domain import (
    EventBatch,
    FailActivityAttempt,
    InvalidInput,
    QueryAnswer,
    QueryStatus,
    QueryWorkflow,
    WorkflowError,
    activity_outcome_id,
)
from aion_engine import replay_history
from aion_engine.queries import expired
from aion_engine.registry import WorkflowRegistry

HERE = Path(__file__).name


def make_registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("q.cart")
    async def cart(ctx: WorkflowContext, owner: str) -> dict[str, Any]:
        items: list[str] = []

        @workflow.query("items")
        def current_items() -> list[str]:
            return items

        @workflow.query
        def count(extra: int = 0) -> int:
            return len(items) + extra

        while True:
            item = await ctx.wait_signal("add")
            if item is None:
                return {"owner": owner, "items": items}
            items.append(item)

    @registry.defn("q.late")
    async def late(ctx: WorkflowContext, _: Any) -> str:
        await ctx.wait_signal("go")

        @workflow.query("ready")
        def ready() -> bool:
            return True

        await ctx.wait_signal("stop")
        return "done"

    @registry.defn("q.bad")
    async def bad(ctx: WorkflowContext, _: Any) -> Any:
        seen = {"n": 0}

        @workflow.query("sleeps")
        async def sleeps() -> int:
            await ctx.sleep(1)
            return 1

        @workflow.query("asyncio")
        async def asyncio_sleeps() -> int:
            await asyncio.sleep(0)
            return 1

        @workflow.query("random")
        def draws() -> float:
            try:
                return ctx.random()
            except BaseException:  # noqa: BLE001 - even a handler hiding it is refused
                return -1.0

        @workflow.query("child")
        def starts_child() -> str:
            ctx.start_child("q.cart", "x")
            return "started"

        @workflow.query("io")
        def does_io() -> str:
            return Path("/etc/hostname").read_text(encoding="utf-8")

        @workflow.query("blocking")
        def blocks() -> int:
            time.sleep(0.01)
            return 1

        @workflow.query("raises")
        def raises() -> int:
            raise KeyError("nope")

        @workflow.query("not-json")
        def not_json() -> object:
            return {1, 2}

        @workflow.query("nested")
        def nested() -> int:
            workflow.query("inner")(lambda: 1)
            return 1

        @workflow.query("async-ok")
        async def async_ok() -> dict[str, int]:
            return seen

        seen["n"] = 1
        first = await ctx.start_child("q.cart", "child-1")  # its id: derived, counter 1
        await ctx.wait_signal("go")
        second = ctx.random()
        return {"first": first.workflow_id, "random": second}

    @registry.defn("q.sleeper")
    async def sleeper(ctx: WorkflowContext, _: Any) -> str:
        await ctx.sleep(timedelta(minutes=5))
        return "awake"

    @registry.defn("q.approval")
    async def approval(ctx: WorkflowContext, _: Any) -> Any:
        return await ctx.wait_signal("decision", timeout=timedelta(hours=1))

    @registry.defn("q.parent")
    async def parent(ctx: WorkflowContext, _: Any) -> Any:
        return await helper(ctx)

    async def helper(ctx: WorkflowContext) -> Any:
        return await ctx.execute_child("q.sleeper", None, id="kid")

    @registry.defn("q.activity")
    async def with_activity(ctx: WorkflowContext, _: Any) -> Any:
        return await ctx.execute_activity(
            "charge", "A-1", start_to_close=10, retry=RetryPolicy(initial_interval=600)
        )

    @registry.defn("q.broken")
    async def broken(ctx: WorkflowContext, _: Any) -> Any:
        return undefined_name  # type: ignore[name-defined]  # noqa: F821 - blocks the run

    return registry


@pytest.fixture
def world() -> World:
    return World(make_registry())


def ask(
    world: World,
    workflow_id: str,
    name: str,
    *args: Any,
    run_id: str | None = None,
    history: EventBatch | None = None,
) -> QueryAnswer:
    before = list(world.history(workflow_id))
    decision = world.core.handle(
        QueryWorkflow(
            command_id=world.next_id("query"),
            issued_at=world.now,
            workflow_id=workflow_id,
            name=name,
            args=payload(list(args)),
            deadline=world.now + timedelta(seconds=5),
            run_id=run_id,
            history=history,
        ),
        now=world.now,
    )
    assert decision.batch is None
    assert decision.refusal is None
    assert not decision.outgoing
    assert not decision.timers
    assert not decision.tasks
    assert decision.answer is not None
    assert world.history(workflow_id) == before
    return decision.answer


def result(answer: QueryAnswer) -> Any:
    assert answer.status is QueryStatus.ANSWERED, answer.message
    assert answer.result is not None
    return answer.result.to_json()


def run_of(world: World, workflow_id: str) -> EventBatch:
    events = tuple(world.history(workflow_id))
    return EventBatch(workflow_id=workflow_id, command_id="q", writer="api", events=events)


def test_a_query_sees_the_current_state_and_changes_nothing(world: World) -> None:
    world.start("c", "q.cart", "ada")
    assert result(ask(world, "c", "items")) == []
    world.signal("c", "add", "apple")
    world.signal("c", "add", "pear")
    remembered = world.core.remembered_command_ids("c")
    answer = ask(world, "c", "items")
    assert result(answer) == ["apple", "pear"]
    assert answer.known_queries == ("count", "items")
    assert answer.last_seq == len(world.history("c"))
    assert not answer.replayed
    assert result(ask(world, "c", "count", 10)) == 12
    # queries are not remembered as applied: the same query id again is answered again
    assert world.core.remembered_command_ids("c") == remembered
    world.signal("c", "add", None)
    assert world.result("c") == {"owner": "ada", "items": ["apple", "pear"]}
    replay_history(world.history("c"), make_registry())


def test_an_evicted_run_is_rebuilt_to_answer(world: World) -> None:
    evicting = World(make_registry(), max_resident=0)
    evicting.start("c", "q.cart", "bo")
    evicting.signal("c", "add", "fig")
    assert evicting.core.resident_count == 0
    assert result(ask(evicting, "c", "items")) == ["fig"]


def test_unknown_query_lists_the_known_ones_and_late_handlers(world: World) -> None:
    world.start("c", "q.cart", "ada")
    answer = ask(world, "c", "itmes")
    assert answer.status is QueryStatus.UNKNOWN_QUERY
    assert answer.known_queries == ("count", "items")
    assert "no query 'itmes'" in answer.message
    assert "count, items" in answer.message
    world.start("late", "q.late")
    early = ask(world, "late", "ready")
    assert early.status is QueryStatus.UNKNOWN_QUERY
    assert "none yet" in early.message
    world.signal("late", "go")
    assert result(ask(world, "late", "ready")) is True


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("sleeps", "called ctx.sleep()"),
        ("asyncio", "awaited an asyncio awaitable"),
        ("random", "called ctx.random()"),
        ("child", "called ctx.start_child()"),
        ("io", "did I/O"),
        ("blocking", "did I/O"),
        ("nested", "raised InvalidInput"),
    ],
)
def test_handlers_that_decide_await_or_do_io_are_refused(
    world: World, name: str, says: str
) -> None:
    world.start("b", "q.bad")
    answer = ask(world, "b", name)
    if name == "nested":  # registering from inside a handler is an error the handler raised
        assert answer.status is QueryStatus.FAILED
    else:
        assert answer.status is QueryStatus.REFUSED, answer.message
        assert "read-only" in answer.message
    assert says in answer.message
    # nothing the handler tried leaked into the run: the same decisions, the same ids
    world.signal("b", "go")
    clean = World(make_registry())
    clean.start("b", "q.bad")
    clean.signal("b", "go")
    assert world.result("b") == clean.result("b")


def test_handler_errors_and_bad_arguments_are_answered(world: World) -> None:
    world.start("b", "q.bad")
    raised = ask(world, "b", "raises")
    assert raised.status is QueryStatus.FAILED
    assert "KeyError: 'nope'" in raised.message
    assert HERE in raised.message  # the handler's traceback
    assert ask(world, "b", "not-json").status is QueryStatus.FAILED
    assert result(ask(world, "b", "async-ok")) == {"n": 1}
    world.start("c", "q.cart", "ada")
    extra = ask(world, "c", "items", 1)
    assert extra.status is QueryStatus.INVALID
    assert "called with 1 argument(s)" in extra.message
    not_array = dataclasses.replace(
        QueryWorkflow(
            command_id="q-x",
            issued_at=world.now,
            workflow_id="c",
            name="items",
            args=payload({"a": 1}),
            deadline=world.now,
        )
    )
    found = world.core.handle(not_array, now=world.now).answer
    assert found is not None
    assert found.status is QueryStatus.INVALID
    assert "JSON array" in found.message


def test_query_registration_outside_a_run_or_with_a_reserved_name_fails() -> None:
    with pytest.raises(InvalidInput, match="inside the workflow function"):

        @workflow.query("status")
        def status() -> str:
            return "x"

    with pytest.raises(InvalidInput, match="reserved"):
        workflow.query("__stack_trace")


def test_unknown_workflows_and_closed_runs(world: World) -> None:
    assert ask(world, "nobody", "items").status is QueryStatus.NOT_FOUND
    world.start("c", "q.cart", "ada")
    world.signal("c", "add", "kiwi")
    world.signal("c", "add", None)
    closed = ask(world, "c", "items")
    assert closed.status is QueryStatus.RUN_CLOSED
    assert "replaying its history" in closed.message
    replayed = ask(world, "c", "items", history=run_of(world, "c"))
    assert result(replayed) == ["kiwi"]
    assert replayed.replayed
    assert replayed.last_seq == world.history("c")[-1].seq
    waiting = result(ask(world, "c", "__waiting_on", history=run_of(world, "c")))
    assert waiting["status"] == "CLOSED"
    assert waiting["waiting_on"] == []


def test_a_closed_run_unknown_to_this_engine_is_replayed_from_its_history(
    world: World,
) -> None:
    world.start("c", "q.cart", "ada")
    world.signal("c", "add", None)
    elsewhere = World(make_registry())  # another engine, which never held the workflow
    assert result(ask(elsewhere, "c", "items", history=run_of(world, "c"))) == []


def test_a_history_that_is_not_one_whole_closed_run_is_refused(world: World) -> None:
    world.start("c", "q.cart", "ada")
    world.signal("c", "add", "kiwi")
    elsewhere = World(make_registry())
    answer = ask(elsewhere, "c", "items", history=run_of(world, "c"))
    assert answer.status is QueryStatus.INVALID
    assert "does not end with the run's terminal event" in answer.message


def test_a_blocked_run_answers_user_queries_with_its_reason(world: World) -> None:
    world.start("x", "q.broken")
    answer = ask(world, "x", "anything")
    assert answer.status is QueryStatus.BLOCKED
    assert "NameError" in answer.message
    assert "aion run move" in answer.message
    waiting = result(ask(world, "x", "__waiting_on"))
    assert waiting["status"] == "BLOCKED"
    assert "undefined_name" in waiting["blocked_reason"]
    assert waiting["stack"] == []


def test_waiting_on_a_timer_names_its_fire_time_and_the_line(world: World) -> None:
    world.start("s", "q.sleeper")
    waiting = result(ask(world, "s", "__waiting_on"))
    assert waiting["status"] == "RUNNING"
    [timer] = waiting["waiting_on"]
    assert timer["kind"] == "timer"
    assert timer["purpose"] == "sleep"
    assert timer["awaited"] is True
    assert timer["fire_at"] == (world.now + timedelta(minutes=5)).isoformat()
    [frame] = waiting["stack"]
    assert frame.startswith(f"{HERE}:") or f"/{HERE}:" in frame
    assert "in sleeper: await ctx.sleep(timedelta(minutes=5))" in frame
    assert result(ask(world, "s", "__stack_trace")) == waiting["stack"]


def test_waiting_on_a_signal_names_it_and_its_deadline(world: World) -> None:
    world.start("a", "q.approval", execution_timeout_ms=86_400_000)
    waiting = result(ask(world, "a", "__waiting_on"))
    signal, timeout = waiting["waiting_on"]
    assert signal == {
        "kind": "signal",
        "awaited": True,
        "name": "decision",
        "deadline": (world.now + timedelta(hours=1)).isoformat(),
    }
    assert timeout["purpose"] == "execution timeout"
    assert timeout["awaited"] is False
    assert 'wait_signal("decision"' in waiting["stack"][0]


def test_waiting_on_a_child_names_it_and_every_frame(world: World) -> None:
    world.start("p", "q.parent")
    waiting = result(ask(world, "p", "__waiting_on"))
    child = waiting["waiting_on"][0]
    assert child["kind"] == "child"
    assert child["awaited"] is True
    assert (child["workflow_id"], child["workflow_type"]) == ("kid", "q.sleeper")
    outer, inner = waiting["stack"]
    assert "in parent: return await helper(ctx)" in outer
    assert "in helper: return await ctx.execute_child(" in inner
    # the child itself waits on its own timer
    assert result(ask(world, "kid", "__waiting_on"))["waiting_on"][0]["kind"] == "timer"


def test_waiting_on_an_activity_names_its_attempt_and_next_retry(world: World) -> None:
    world.start("act", "q.activity")
    waiting = result(ask(world, "act", "__waiting_on"))
    [activity] = waiting["waiting_on"]
    assert activity["kind"] == "activity"
    assert (activity["activity_type"], activity["attempt"], activity["state"]) == (
        "charge",
        1,
        "queued",
    )
    _, task = world.tasks[-1]
    world.send(
        FailActivityAttempt(
            command_id=activity_outcome_id(task.activity_id, 1, "failed"),  # type: ignore[union-attr]
            issued_at=world.now,
            workflow_id="act",
            run_id=task.run_id,
            activity_id=task.activity_id,  # type: ignore[union-attr]
            attempt=1,
            error=WorkflowError(message="ConnectionError: provider down"),
        )
    )
    [backing_off] = result(ask(world, "act", "__waiting_on"))["waiting_on"]
    assert backing_off["state"] == "backing-off"
    assert backing_off["attempt"] == 1
    assert backing_off["last_error"] == "ConnectionError: provider down"
    assert backing_off["next_retry_at"] == (world.now + timedelta(seconds=600)).isoformat()
    assert backing_off["awaited"] is True


def test_a_query_past_its_deadline_is_expired(world: World) -> None:
    query = QueryWorkflow(
        command_id="q",
        issued_at=world.now,
        workflow_id="c",
        name="items",
        args=payload([]),
        deadline=world.now,
    )
    assert not expired(query, world.now)
    assert expired(query, world.now + timedelta(milliseconds=1))
