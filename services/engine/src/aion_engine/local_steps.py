"""Local steps (``ctx.run``): short functions the engine calls itself (decision 45).

A local step is an activity on the reserved queue ``aion.local``: the same events
(``ActivityScheduled``, ``ActivityAttemptFailed``/``ActivityAttemptScheduled``,
``ActivityCompleted``/``ActivityFailed``), the same retry policy on durable timers, the same
failure types — but no task topic and no worker. When a batch's decisions dispatch an attempt
to that queue, the partition's worker calls the function (a coroutine function on the event
loop, a plain one in a thread), turns how it ended into the report a worker would send
(``CompleteActivity``/``FailActivityAttempt``, same command ids), hands that to the core at
once and repeats while the new decisions run more steps; everything goes out in the batch's
one transaction. So a run of fast steps costs one transaction, not two topic hops per step.

Exactly-once as for every command: the results are recorded once (the transaction), the
function's effects are at-least-once — a crash before the commit aborts the transaction, the
command that started the steps is consumed again and they run again. An attempt that outlives
its ``start_to_close`` (at most 5 s) fails the step for good (``LocalStepTooLong``), advising an
activity: the partition's other commands wait while a step runs. Its thread (a plain function)
cannot be stopped and runs on unobserved.

Where the function comes from: the run's executor keeps each step's function by activity id
while it is resident; otherwise (a retry after a restart, before the code replayed) by the
recorded name, as last seen in this process or imported as ``module.qualname``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aion import activity
from aion_common.domain import (
    DEFAULT_PAYLOAD_LIMIT,
    ActivityTask,
    CompleteActivity,
    FailActivityAttempt,
    InvalidInput,
    Payload,
    WorkflowError,
    activity_outcome_id,
)

__all__ = ["MAX_ROUNDS", "find", "remember", "run_attempt", "run_batch"]

_BY_NAME: dict[str, Callable[..., Any]] = {}

MAX_ROUNDS = 1000
"""Rounds of steps one batch runs at most; attempts still asked for then are failed (retryable,
``LocalStepBudget``), so their retries come on durable timers in later batches and a workflow
that loops over ``ctx.run`` cannot keep its partition's batch from ever committing."""

Report = CompleteActivity | FailActivityAttempt


def remember(name: str, fn: Callable[..., Any]) -> None:
    """Note the function a step of that name called (the latest wins)."""
    _BY_NAME[name] = fn


def find(name: str) -> Callable[..., Any] | None:
    """The function of a step recorded as ``name``: seen in this process, else imported."""
    fn = _BY_NAME.get(name)
    if fn is not None:
        return fn
    module_name, _, rest = name.rpartition(".")
    while module_name:
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            rest = f"{head}.{rest}"
            continue
        for part in rest.split("."):
            found = getattr(found, part, None)
        return found if callable(found) else None
    return None


def _failure(err: BaseException, *, error_type: str | None = None) -> WorkflowError:
    name = error_type or type(err).__name__
    text = str(err)
    lines = traceback.format_exception(err)
    return WorkflowError(
        message=f"{name}: {text}" if text else name,
        error_type=name,
        traceback="".join(lines),
    )


def _report(
    task: ActivityTask,
    *,
    result: Payload | None = None,
    error: WorkflowError | None = None,
    non_retryable: bool = False,
) -> CompleteActivity | FailActivityAttempt:
    ids: dict[str, Any] = {
        "issued_at": datetime.now(UTC),
        "workflow_id": task.workflow_id,
        "run_id": task.run_id,
        "activity_id": task.activity_id,
        "attempt": task.attempt,
    }
    if result is not None:
        return CompleteActivity(
            command_id=activity_outcome_id(task.activity_id, task.attempt, "completed"),
            result=result,
            **ids,
        )
    assert error is not None
    return FailActivityAttempt(
        command_id=activity_outcome_id(task.activity_id, task.attempt, "failed"),
        error=error,
        non_retryable=non_retryable,
        **ids,
    )


def _problem(task: ActivityTask, error_type: str, message: str) -> FailActivityAttempt:
    error = WorkflowError(message=f"{error_type}: {message}", error_type=error_type)
    report = _report(task, error=error, non_retryable=True)
    assert isinstance(report, FailActivityAttempt)
    return report


async def run_attempt(  # noqa: PLR0911 - one report per ending
    task: ActivityTask,
    fn: Callable[..., Any] | None,
    threads: Executor,
    *,
    payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
) -> CompleteActivity | FailActivityAttempt:
    """Call one attempt of a local step; never raises: every ending is the report."""
    if fn is None:
        return _problem(
            task,
            "LocalStepNotFound",
            f"the function of local step {task.activity_type!r} is not loaded in this engine",
        )
    try:
        args = task.input.to_json()
    except ValueError as err:
        return _problem(task, "InvalidActivityInput", f"undecodable input: {err}")
    assert isinstance(args, list)
    limit_ms = task.options.start_to_close_ms or 1000
    if inspect.iscoroutinefunction(fn):
        call: asyncio.Future[Any] = asyncio.ensure_future(fn(*args))
    else:
        call = asyncio.get_running_loop().run_in_executor(threads, partial(fn, *args))
    done, _ = await asyncio.wait({call}, timeout=limit_ms / 1000)
    if not done:
        call.cancel()  # an async step stops; a thread cannot be stopped and runs on
        return _problem(
            task,
            "LocalStepTooLong",
            f"local step {task.activity_type!r} attempt {task.attempt} ran past its "
            f"{limit_ms / 1000:g} s start_to_close; a local step holds its partition while it "
            "runs: run this as an activity (ctx.execute_activity) instead",
        )
    error = call.exception()
    if error is not None:
        if isinstance(error, activity.ApplicationError):
            return _report(
                task,
                error=_failure(error, error_type=error.type),
                non_retryable=error.non_retryable,
            )
        return _report(task, error=_failure(error))
    try:
        result = Payload.from_json(call.result(), limit=payload_limit)
    except InvalidInput as err:
        return _problem(
            task,
            "InvalidActivityResult",
            f"local step {task.activity_type!r} returned a value aion cannot record: {err}",
        )
    return _report(task, result=result)


def _over_budget(task: ActivityTask, rounds: int) -> FailActivityAttempt:
    error = WorkflowError(
        message=(
            f"LocalStepBudget: this batch already ran {rounds} rounds of local steps; the "
            "attempt is retried per its policy on a durable timer (a workflow that runs "
            "many steps back to back without awaiting anything else)"
        ),
        error_type="LocalStepBudget",
    )
    report = _report(task, error=error)
    assert isinstance(report, FailActivityAttempt)
    return report


async def run_batch(
    first: list[ActivityTask],
    *,
    function_of: Callable[[ActivityTask], Callable[..., Any] | None],
    handle: Callable[[Report], list[ActivityTask]],
    threads: Executor,
    payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
    max_rounds: int = MAX_ROUNDS,
) -> int:
    """Run ``first`` and every attempt their reports lead to, round by round (a round's
    attempts concurrently); ``handle`` gives a report to the core and returns the attempts it
    asked for. Returns the rounds run."""
    local, rounds = first, 0
    while local:
        if rounds >= max_rounds:
            reports: list[Report] = [_over_budget(task, rounds) for task in local]
        else:
            rounds += 1
            calls = [
                run_attempt(task, function_of(task), threads, payload_limit=payload_limit)
                for task in local
            ]
            # one attempt (a workflow's next step): awaited in this task, not one of gather's
            reports = [await calls[0]] if len(calls) == 1 else list(await asyncio.gather(*calls))
        local = []
        for report in reports:
            local.extend(handle(report))
    return rounds
