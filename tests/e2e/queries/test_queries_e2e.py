"""Queries and "waiting on" end to end, on the real broker: through the API, the client and
the CLI, answered by the engine that owns the workflow over the replies topic.

- a query sees the run's current state, and again after the engine is SIGKILLed (the
  restarted engine rebuilds the run from its history to answer);
- a closed run is answered by replaying its history;
- a handler that awaits is refused, an unknown query lists the known ones;
- what a run waits on (a child, a timer, a signal, an activity backing off) and the source
  line its code is suspended at.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from aion import AionApiError, AionClient, AionQueryError, WaitingOn
from aion.testing import AionStack, history_types, wait_for_workflow

pytestmark = [pytest.mark.kafka]

T = TypeVar("T")
PATIENCE_S = 90.0  # how long a test waits for the stack before it gives up (not a timing check)


async def eventually(ask: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    """Ask until ``done`` says yes (answers that are problems count as not yet)."""
    deadline = time.monotonic() + PATIENCE_S
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = await ask()
        except AionApiError as err:  # no engine answering yet, the views behind: ask again
            last = err
        else:
            if done(found):
                return found
            last = found
        await asyncio.sleep(0.2)
    pytest.fail(f"{what}: never happened; last answer: {last!r}")


async def cli(stack: AionStack, *args: str) -> tuple[int, str, str]:
    """Run ``aion`` as a person would; its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aion.cli",
        "--api",
        stack.api_url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def state(client: AionClient, workflow_id: str) -> Any:
    return await client.query(workflow_id, "state", wait=10)


async def test_a_query_sees_the_current_state_also_after_the_engine_is_killed(
    query_stack: AionStack, client: AionClient
) -> None:
    workflow_id = "q-cart-kill"
    await client.start("q.cart", "ada", id=workflow_id)
    assert await eventually(
        lambda: state(client, workflow_id), lambda s: s is not None, "first answer"
    ) == {"owner": "ada", "items": []}
    await client.signal(workflow_id, "add", "apple")
    await client.signal(workflow_id, "add", "pear")
    await eventually(
        lambda: state(client, workflow_id),
        lambda s: s["items"] == ["apple", "pear"],
        "both signals seen",
    )
    # the engine answered before the projector caught up: the views are read once they hold
    # both signals (a query itself records nothing)
    before = await eventually(
        lambda: history_types(client, workflow_id),
        lambda types: types.count("SignalReceived") == 2,
        "both signals in the views",
    )

    query_stack.kill("engine-1")
    answer = await eventually(
        lambda: client.query_answer(workflow_id, "state", wait=10),
        lambda a: a["result"]["items"] == ["apple", "pear"],
        "an answer from the restarted engine",
    )
    assert answer["replayed"] is False  # the open run, rebuilt from its history
    await client.signal(workflow_id, "add", "fig")
    await eventually(
        lambda: state(client, workflow_id),
        lambda s: s["items"] == ["apple", "pear", "fig"],
        "the signal after the restart",
    )
    # queries left no trace in the history: only the third signal (and the next wait's timer)
    after = await eventually(
        lambda: history_types(client, workflow_id),
        lambda types: types.count("SignalReceived") == 3,
        "the third signal in the views",
    )
    assert after == [*before, "SignalReceived", "TimerScheduled"]


async def test_a_closed_run_is_answered_by_replaying_it(
    query_stack: AionStack, client: AionClient
) -> None:
    workflow_id = "q-cart-closed"
    await client.start("q.cart", "bo", id=workflow_id)
    await client.signal(workflow_id, "add", "kiwi")
    await client.signal(workflow_id, "add", "done")
    run = await wait_for_workflow(client, workflow_id, timeout=PATIENCE_S)
    assert run.status == "COMPLETED"
    answer = await client.query_answer(workflow_id, "state", wait=10)
    assert answer["result"] == {"owner": "bo", "items": ["kiwi"]}
    assert answer["replayed"] is True
    assert answer["run_id"] == run.description.current_run.run_id
    # the CLI, as a person types it
    code, out, err = await cli(query_stack, "query", workflow_id, "state", "--json")
    assert code == 0, err
    assert json.loads(out)["result"]["items"] == ["kiwi"]
    waiting = await client.waiting(workflow_id)
    assert (waiting.status, waiting.waiting_on, waiting.stack) == ("COMPLETED", (), ())


async def test_handlers_that_await_and_unknown_queries_are_refused_clearly(
    query_stack: AionStack, client: AionClient
) -> None:
    workflow_id = "q-cart-refused"
    await client.start("q.cart", "cy", id=workflow_id)
    await eventually(lambda: state(client, workflow_id), lambda s: True, "first answer")
    with pytest.raises(AionQueryError) as refused:
        await client.query(workflow_id, "sneaky")
    assert refused.value.kind == "query-refused"
    assert refused.value.status == 422
    assert "query handler 'sneaky' called ctx.sleep()" in refused.value.detail
    assert "read-only" in refused.value.detail
    with pytest.raises(AionQueryError) as unknown:
        await client.query(workflow_id, "stat")
    assert unknown.value.kind == "unknown-query"
    assert unknown.value.known_queries == ("sneaky", "state")
    with pytest.raises(AionApiError) as missing:
        await client.query("q-nobody", "state")
    assert (missing.value.status, missing.value.kind) == (404, "not-found")
    assert await history_types(client, workflow_id) == ["WorkflowStarted", "TimerScheduled"]


async def waiting_until(
    client: AionClient, workflow_id: str, done: Callable[[WaitingOn], bool]
) -> WaitingOn:
    return await eventually(lambda: client.waiting(workflow_id, wait=10), done, workflow_id)


async def test_waiting_on_a_child_a_timer_a_signal_and_an_activity(
    query_stack: AionStack, client: AionClient
) -> None:
    await client.start("q.sleeper", None, id="q-wait-timer")
    await client.start("q.cart", "di", id="q-wait-signal")
    await client.start("q.parent", "q-wait-kid", id="q-wait-parent")
    await client.start("q.retrying", "o-1", id="q-wait-activity")

    timer = await waiting_until(client, "q-wait-timer", lambda w: bool(w.waiting_on))
    [sleep] = timer.waiting_on
    assert (sleep.kind, sleep.purpose, sleep.awaited) == ("timer", "sleep", True)
    assert sleep.fire_at is not None
    [frame] = timer.stack
    assert "flows.py:" in frame
    assert "in sleeper: await ctx.sleep(HOUR)" in frame

    signal = await waiting_until(client, "q-wait-signal", lambda w: bool(w.waiting_on))
    [wait] = signal.waiting_on
    assert (wait.kind, wait.name, wait.awaited) == ("signal", "add", True)
    assert wait.deadline is not None
    assert 'in cart: item = await ctx.wait_signal("add", timeout=HOUR)' in signal.stack[0]

    parent = await waiting_until(client, "q-wait-parent", lambda w: bool(w.waiting_on))
    [child] = parent.waiting_on
    assert (child.kind, child.workflow_id, child.workflow_type, child.awaited) == (
        "child",
        "q-wait-kid",
        "q.hold",
        True,
    )
    outer, inner = parent.stack
    assert "in parent: return await _await_child(ctx, child_id)" in outer
    assert "in _await_child: return await ctx.execute_child(" in inner
    kid = await waiting_until(client, "q-wait-kid", lambda w: bool(w.waiting_on))
    assert [(i.kind, i.name, i.deadline) for i in kid.waiting_on] == [("signal", "release", None)]

    activity = await waiting_until(
        client,
        "q-wait-activity",
        lambda w: bool(w.waiting_on) and w.waiting_on[0].state == "backing-off",
    )
    [backing_off] = activity.waiting_on
    assert (backing_off.kind, backing_off.activity_type, backing_off.attempt) == (
        "activity",
        "unreachable",
        1,
    )
    assert backing_off.awaited
    assert backing_off.next_retry_at is not None
    assert "provider down for o-1" in (backing_off.last_error or "")
    assert "in retrying: result: str = await ctx.execute_activity(" in activity.stack[0]

    # `aion describe` shows it too
    code, out, err = await cli(query_stack, "describe", "q-wait-parent")
    assert code == 0, err
    assert "waiting on:" in out
    assert "child q-wait-kid (q.hold)  (awaited now)" in out
    assert "in _await_child: return await ctx.execute_child(" in out
