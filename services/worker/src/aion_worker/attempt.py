"""One attempt of one activity: call the user's function and turn what happened into a report.

An ``async def`` activity runs as a task on the worker's loop; a plain ``def`` in the worker's
bounded thread pool. Either way the attempt's :class:`~aion.activity.ActivityContext` is bound
around the call, so ``activity.info()``/``heartbeat()`` work in the task and in the thread.
The attempt ends with an :class:`Outcome`: a result, an error (with its type, message,
traceback and retry verdict), a confirmed cancellation, or *abandoned* (its local deadline
passed or the worker is shutting down): an abandoned attempt reports nothing, because the
engine's own clock decides what happens to it and a re-delivered task runs it again.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import traceback
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aion import activity
from aion_common.domain import (
    ActivityTask,
    CompleteActivity,
    FailActivityAttempt,
    InvalidInput,
    Payload,
    WorkflowError,
    activity_outcome_id,
)

__all__ = ["Attempt", "Outcome"]

_HERE = __file__.rsplit("/", 1)[0] + "/"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: exactly one of ``result``/``error``, or ``abandoned``."""

    result: Payload | None = None
    error: WorkflowError | None = None
    non_retryable: bool = False
    cancelled: bool = False
    abandoned: bool = False

    def report(self, task: ActivityTask) -> CompleteActivity | FailActivityAttempt:
        """The command telling the engine how attempt ``task.attempt`` ended (its id is
        derived from the activity, the attempt and the kind: a re-sent report is one)."""
        ids: dict[str, Any] = {
            "issued_at": datetime.now(UTC),
            "workflow_id": task.workflow_id,
            "run_id": task.run_id,
            "activity_id": task.activity_id,
            "attempt": task.attempt,
        }
        if self.result is not None:
            return CompleteActivity(
                command_id=activity_outcome_id(task.activity_id, task.attempt, "completed"),
                result=self.result,
                **ids,
            )
        assert self.error is not None  # an outcome that is not abandoned has one or the other
        return FailActivityAttempt(
            command_id=activity_outcome_id(task.activity_id, task.attempt, "failed"),
            error=self.error,
            non_retryable=self.non_retryable,
            cancelled=self.cancelled,
            **ids,
        )


def _failure(err: BaseException, *, error_type: str | None = None) -> WorkflowError:
    """An exception as the engine records it: type, message and the user's frames."""
    name = error_type or type(err).__name__
    text = str(err)
    frames = [
        frame
        for frame in traceback.extract_tb(err.__traceback__)
        if not frame.filename.startswith(_HERE)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines.extend(traceback.format_exception_only(err))
    details = None
    if isinstance(err, activity.ApplicationError) and err.details is not None:
        try:
            details = Payload.from_json(err.details)
        except InvalidInput:
            details = Payload.from_json({"unserialisable": repr(err.details)[:1000]})
    return WorkflowError(
        message=f"{name}: {text}" if text else name,
        error_type=name,
        traceback="".join(lines),
        details=details,
    )


def _problem(error_type: str, message: str) -> Outcome:
    """A failure of the task itself (not of the user's code): never retried."""
    return Outcome(
        error=WorkflowError(message=f"{error_type}: {message}", error_type=error_type),
        non_retryable=True,
    )


def info_of(task: ActivityTask, *, started_at: datetime) -> activity.ActivityInfo:
    """What ``activity.info()`` returns for ``task`` started at ``started_at``."""
    options = task.options
    deadline = task.schedule_to_close_deadline
    if options.start_to_close_ms is not None:
        attempt_end = started_at + timedelta(milliseconds=options.start_to_close_ms)
        deadline = attempt_end if deadline is None else min(deadline, attempt_end)
    heartbeat_details = None if task.heartbeat_details is None else task.heartbeat_details.to_json()
    return activity.ActivityInfo(
        workflow_id=task.workflow_id,
        run_id=task.run_id,
        workflow_type=task.workflow_type,
        activity_id=task.activity_id,
        activity_type=task.activity_type,
        attempt=task.attempt,
        task_queue=options.task_queue,
        scheduled_at=task.scheduled_at,
        started_at=started_at,
        deadline=deadline,
        heartbeat_timeout=None
        if options.heartbeat_timeout_ms is None
        else timedelta(milliseconds=options.heartbeat_timeout_ms),
        heartbeat_details=heartbeat_details,
        idempotency_key=task.activity_id,
    )


class Attempt:
    """One running attempt; :meth:`run` once, :meth:`cancel` or :meth:`abandon` any time."""

    def __init__(
        self,
        task: ActivityTask,
        definition: activity.ActivityDefinition | None,
        *,
        known: tuple[str, ...],
        worker: str,
        threads: Executor,
        payload_limit: int,
        on_heartbeat: Callable[[Any], None],
    ) -> None:
        self.task = task
        self.started_at = datetime.now(UTC)
        self.context = activity.ActivityContext(
            info_of(task, started_at=self.started_at), on_heartbeat=on_heartbeat
        )
        self._definition = definition
        self._known = known
        self._worker = worker
        self._threads = threads
        self._limit = payload_limit
        self._inner: asyncio.Future[Any] | None = None
        self.cancel_requested = False
        self.abandoned = False

    @property
    def deadline(self) -> datetime | None:
        """When this attempt is given up locally (its start-to-close or schedule-to-close)."""
        return self.context.info.deadline

    def cancel(self, reason: str) -> None:
        """The engine asked to cancel: tell the code (CancelledError in an async activity at
        once, from ``heartbeat()`` in a sync one)."""
        self.cancel_requested = True
        self.context.cancel(reason)
        if self._inner is not None and self._definition is not None and self._definition.is_async:
            self._inner.cancel(reason)

    def abandon(self) -> None:
        """Stop without reporting (local deadline, or shutdown past its grace period)."""
        self.abandoned = True
        self.context.cancel("abandoned by the worker")
        if self._inner is not None:
            self._inner.cancel()

    async def run(self) -> Outcome:
        """Call the activity; never raises (every failure is an outcome)."""
        definition = self._definition
        task = self.task
        if definition is None:
            known = ", ".join(self._known) or "(none)"
            return _problem(
                "ActivityNotRegistered",
                f"activity type {task.activity_type!r} is not registered on worker "
                f"{self._worker} (task queue {task.options.task_queue!r}); it runs: {known}. "
                "Add it to the worker's --activities modules, or route the activity to a "
                "task queue whose workers have it",
            )
        try:
            args = task.input.to_json()
        except ValueError as err:
            return _problem("InvalidActivityInput", f"undecodable input: {err}")
        if not isinstance(args, list):
            return _problem("InvalidActivityInput", "the input is not a JSON list of arguments")
        try:
            inspect.signature(definition.fn).bind(*args)
        except TypeError as err:
            return _problem(
                "InvalidActivityInput",
                f"{task.activity_type}{inspect.signature(definition.fn)} cannot take "
                f"{json.dumps(args)[:200]}: {err}",
            )
        except ValueError:
            pass  # a builtin without a signature: let the call say
        self._inner = self._call(definition, args)
        return await self._wait(self._inner)

    def _call(
        self, definition: activity.ActivityDefinition, args: list[Any]
    ) -> asyncio.Future[Any]:
        with self.context.bind():
            if definition.is_async:
                coroutine: Coroutine[Any, Any, Any] = definition.fn(*args)
                return asyncio.ensure_future(coroutine)
            copied = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._threads, copied.run, definition.fn, *args)

    async def _wait(self, inner: asyncio.Future[Any]) -> Outcome:  # noqa: PLR0911 - per ending
        deadline = self.deadline
        timeout = None if deadline is None else (deadline - datetime.now(UTC)).total_seconds()
        if timeout is not None and timeout <= 0:
            self.abandon()
            return Outcome(abandoned=True)
        done, _ = await asyncio.wait({inner}, timeout=timeout)
        if not done:
            self.abandon()  # past its deadline: the engine's clock fails it, we stop it
            return Outcome(abandoned=True)
        if self.abandoned:
            return Outcome(abandoned=True)
        if inner.cancelled():
            return self._cancelled(asyncio.CancelledError(self.context.cancel_reason or ""))
        error = inner.exception()
        if error is None:
            return self._completed(inner.result())
        if isinstance(error, asyncio.CancelledError):
            return self._cancelled(error)
        if isinstance(error, activity.ApplicationError):
            return Outcome(
                error=_failure(error, error_type=error.type), non_retryable=error.non_retryable
            )
        return Outcome(error=_failure(error))

    def _cancelled(self, error: asyncio.CancelledError) -> Outcome:
        if self.cancel_requested:
            reason = self.context.cancel_reason or "cancelled"
            return Outcome(
                error=WorkflowError(
                    message=f"CancelledError: {reason}", error_type="CancelledError"
                ),
                cancelled=True,
            )
        return Outcome(error=_failure(error, error_type="CancelledError"))

    def _completed(self, value: Any) -> Outcome:
        try:
            return Outcome(result=Payload.from_json(value, limit=self._limit))
        except InvalidInput as err:
            return _problem(
                "InvalidActivityResult",
                f"activity {self.task.activity_type!r} returned a value aion cannot record: {err}",
            )
