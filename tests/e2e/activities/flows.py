"""Workflows and activities the activity end-to-end tests run (engine and worker load this).

Activities that must behave differently per attempt, or whose executions the tests count,
keep their state in files under a directory the test passes in (the worker is another
process): every execution appends one line to ``<dir>/<key>.runs``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aion import activity, workflow
from aion.workflow import ActivityError, RetryPolicy

FAST_RETRY = RetryPolicy(initial_interval=0.2, maximum_interval=1.0)


def _count(directory: str, key: str) -> int:
    """Record one execution of ``key``; returns how many there have been (this one included)."""
    path = Path(directory) / f"{key}.runs"
    with path.open("a", encoding="utf-8") as runs:
        runs.write(f"{activity.info().attempt}\n")
    return len(path.read_text(encoding="utf-8").splitlines())


@activity.defn
def flaky(directory: str, key: str, fail_times: int) -> dict[str, int]:
    """Fail the first ``fail_times`` executions, then return how many it took."""
    runs = _count(directory, key)
    if runs <= fail_times:
        raise ConnectionError(f"transient failure {runs} of {fail_times}")
    return {"runs": runs, "attempt": activity.info().attempt}


@activity.defn(name="declined")
async def declined(directory: str, key: str) -> None:
    """Always fails for good."""
    _count(directory, key)
    raise activity.ApplicationError("card declined", type="CardDeclined", non_retryable=True)


@activity.defn
async def hangs_first(directory: str, key: str) -> int:
    """Attempt 1 hangs (well past its start-to-close); later attempts return at once."""
    _count(directory, key)
    if activity.info().attempt == 1:
        await asyncio.sleep(3600)
    return activity.info().attempt


@activity.defn
def goes_silent(directory: str, key: str) -> Any:
    """Attempt 1 heartbeats progress then stops heartbeating; attempt 2 returns what it saw."""
    _count(directory, key)
    info = activity.info()
    if info.attempt == 1:
        for step in range(3):
            activity.heartbeat({"step": step})
            time.sleep(0.1)
        time.sleep(30)  # silent: the heartbeat timeout fails the attempt
        return "unreachable"
    return {"attempt": info.attempt, "seen": info.heartbeat_details}


@activity.defn
def always_fails(directory: str, key: str) -> None:
    """Fails every time (retried until schedule-to-close)."""
    _count(directory, key)
    raise RuntimeError("still broken")


@activity.defn
async def heartbeats_until_cancelled(directory: str, key: str) -> str:
    """An async activity that heartbeats until cancelled; records that it saw the cancel."""
    _count(directory, key)
    try:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        (Path(directory) / f"{key}.cancelled").write_text("async", encoding="utf-8")
        raise


@activity.defn
def sync_heartbeats_until_cancelled(directory: str, key: str) -> str:
    """A sync activity: learns of its cancellation from ``heartbeat()``."""
    _count(directory, key)
    try:
        while True:
            activity.heartbeat()
            time.sleep(0.1)
    except asyncio.CancelledError:
        (Path(directory) / f"{key}.cancelled").write_text("sync", encoding="utf-8")
        raise


@activity.defn
async def echo(directory: str, key: str, value: Any) -> Any:
    """Count the execution, return ``value`` (after a short await)."""
    _count(directory, key)
    await asyncio.sleep(0.01)
    return value


def _mark(directory: str, key: str) -> int:
    """Record one execution of local step ``key``; returns how many there have been."""
    path = Path(directory) / f"{key}.runs"
    with path.open("a", encoding="utf-8") as runs:
        runs.write("1\n")
    return len(path.read_text(encoding="utf-8").splitlines())


def local_flaky(directory: str, key: str, fail_times: int) -> int:
    """A local step (a plain function: the engine runs it in a thread) failing its first
    ``fail_times`` executions; returns how many it took."""
    runs = _mark(directory, key)
    if runs <= fail_times:
        raise ConnectionError(f"transient failure {runs} of {fail_times}")
    return runs


async def local_slow(directory: str, key: str, seconds: float) -> int:
    """A local step whose first execution takes ``seconds``; returns how many there were."""
    runs = _mark(directory, key)
    if runs == 1:
        await asyncio.sleep(seconds)
    return runs


def _error(err: ActivityError) -> dict[str, Any]:
    return {
        "type": err.cause_type,
        "message": err.cause_message,
        "attempt": err.attempt,
        "timeout": err.timeout,
        "non_retryable": err.non_retryable,
        "cancelled": err.cancelled,
    }


@workflow.defn("e2e.activity")
async def run_activity(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> Any:
    """Run ``spec["activity"]`` with ``spec["args"]`` and the given timeouts; its result, or
    the ``ActivityError``'s fields."""
    try:
        return await ctx.execute_activity(
            spec["activity"],
            *spec["args"],
            start_to_close=spec.get("start_to_close"),
            schedule_to_close=spec.get("schedule_to_close"),
            heartbeat_timeout=spec.get("heartbeat_timeout"),
            retry=FAST_RETRY,
        )
    except ActivityError as err:
        return {"error": _error(err)}


@workflow.defn("e2e.local")
async def local(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> Any:
    """Run local step ``spec["step"]`` (``ctx.run``) with ``spec["args"]``: its result, or
    the ``ActivityError``'s fields."""
    step = {"flaky": local_flaky, "slow": local_slow}[spec["step"]]
    try:
        return await ctx.run(
            step, *spec["args"], retry=FAST_RETRY, start_to_close=spec.get("start_to_close", 1)
        )
    except ActivityError as err:
        return {"error": _error(err)}


@workflow.defn("e2e.five")
async def five(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> list[Any]:
    """Five activities: three at once, then two in sequence."""
    key = spec["key"]
    handles = [
        await ctx.start_activity(
            echo, spec["dir"], f"{key}-{i}", i, start_to_close=10, retry=FAST_RETRY
        )
        for i in range(3)
    ]
    results = [await handle.result() for handle in handles]
    for i in range(3, 5):
        result = await ctx.execute_activity(
            echo, spec["dir"], f"{key}-{i}", i, start_to_close=10, retry=FAST_RETRY
        )
        results.append(result)
    return results


@workflow.defn("e2e.opens_a_file")
async def opens_a_file(ctx: workflow.WorkflowContext, path: str) -> str:
    """Workflow code that does I/O itself: refused."""
    return Path(path).read_text(encoding="utf-8")
