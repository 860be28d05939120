"""Drive one run's workflow coroutine by hand, without an event loop.

The executor calls ``coro.send``/``coro.throw`` itself. Every value the coroutine yields must
be an :class:`~aion_engine._context.Op`; the executor either answers it at once (starting a
child, a buffered signal, a recorded child result) or records that the run is blocked on it.
What the code decides (children, timers, its outcome) queues up as :data:`WorkflowDecision`
values; the engine turns them into events live, and the replayer matches them against history.
Input events (child terminals, signals, fired timers, cancel requests) go in via
:meth:`Executor.deliver` in history order, so live runs and replays see the same sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import linecache
import os
import re
import traceback
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aion.workflow as workflow_module
from aion._workflow import running_code
from aion.workflow import ActivityError, SignalTimeout, WorkflowInfo
from aion.workflow import ChildWorkflowFailed as ChildFailedError
from aion_common.codecs.user_formats import JsonFormat, validate_topic
from aion_common.domain import (
    ActivityCancelled,
    ActivityCompleted,
    ActivityFailed,
    ActivityOptions,
    ActivityTimedOut,
    Cancelled,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Completed,
    Event,
    Failed,
    InvalidInput,
    ParentClosePolicy,
    Payload,
    SignalReceived,
    TimerFired,
    WorkflowError,
    WorkflowStarted,
    derive_id,
    validate_id,
    validate_name,
)
from aion_engine import _context as sdk
from aion_engine import _sandbox, local_steps
from aion_engine.registry import WorkflowFn

__all__ = [
    "ContinueAsNewDecision",
    "Executor",
    "Finish",
    "Publish",
    "RequestCancelActivity",
    "ScheduleActivity",
    "ScheduleChild",
    "ScheduleTimer",
    "WorkflowDecision",
    "awaited_foreign_message",
    "code_stack",
    "execution_timeout_timer_id",
    "failure_of",
]


@dataclass(frozen=True, slots=True)
class ScheduleChild:
    """The code started a child."""

    child_id: str
    workflow_type: str
    input: Payload
    close_policy: ParentClosePolicy
    execution_timeout_ms: int | None


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """The code set a durable timer (a sleep or a signal wait's timeout)."""

    timer_id: str
    fire_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduleActivity:
    """The code scheduled an activity."""

    activity_id: str
    activity_type: str
    input: Payload
    options: ActivityOptions


@dataclass(frozen=True, slots=True)
class RequestCancelActivity:
    """The code asked for one of its activities to be cancelled."""

    activity_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Publish:
    """The code published a record: its JSON value for the history, its bytes for Kafka."""

    publish_id: str
    topic: str
    key: str | None
    value: Payload
    value_format: str
    encoded: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Finish:
    """The code returned, raised, or let a cancellation propagate."""

    outcome: Completed | Failed | Cancelled


@dataclass(frozen=True, slots=True)
class ContinueAsNewDecision:
    """The code called ``ctx.continue_as_new``; ``signals`` it had not consumed go to the next
    run, in the order they arrived, and so do the results of its children it had not awaited
    (``child_results``: child id → result or error, in the order they were recorded)."""

    input: Payload
    workflow_type: str | None
    signals: tuple[tuple[str, Payload], ...] = ()
    child_results: tuple[tuple[str, Payload | WorkflowError], ...] = ()


WorkflowDecision = (
    ScheduleChild
    | ScheduleTimer
    | ScheduleActivity
    | RequestCancelActivity
    | Publish
    | Finish
    | ContinueAsNewDecision
)

_BLOCKED = object()
_JSON = JsonFormat()
_ENDED = object()
_NO_LOOP = "no running event loop"


def awaited_foreign_message(thing: object) -> str:
    """The failure message for workflow code that awaited something other than a ctx op."""
    return (
        f"workflow code awaited {thing!r}; only ctx.* operations may be awaited inside a workflow"
    )


def execution_timeout_timer_id(workflow_id: str, run_id: str) -> str:
    """The id of a run's execution-timeout timer (set by the engine, not by workflow code)."""
    return derive_id("timer", workflow_id, run_id, "execution-timeout")


def _close_coroutine(coro: Coroutine[Any, Any, Any] | None) -> None:
    if coro is None:
        return
    # A finally block that awaits again while being closed raises RuntimeError; nothing it
    # does now could be recorded, so dropping the coroutine is all that is left to do.
    with contextlib.suppress(RuntimeError):
        coro.close()


_HERE = __file__.rsplit("/", 1)[0] + "/"
# The frames of a failure that are the engine driving the code, not the code itself.
_ENGINE_FILES = frozenset(
    _HERE + name for name in ("_executor.py", "_context.py", "_sandbox.py", "_replay.py")
)


def code_location(coro: Coroutine[Any, Any, Any] | None, fn: WorkflowFn) -> str:
    """``file:line: source`` of the innermost frame of the workflow's own code that ``coro``
    is suspended in (the SDK's frames skipped); the function's first line once it ended."""
    frame = None
    awaited: Any = coro
    while awaited is not None and getattr(awaited, "cr_frame", None) is not None:
        if not _is_sdk(awaited.cr_frame.f_code.co_filename):
            frame = awaited.cr_frame
        awaited = getattr(awaited, "cr_await", None)
    if frame is not None:
        filename, line = frame.f_code.co_filename, frame.f_lineno
    else:
        code = getattr(fn, "__code__", None)
        if code is None:
            return ""
        filename, line = code.co_filename, code.co_firstlineno
    text = linecache.getline(filename, line).strip()
    shown = _UNPACKED.sub("", filename)  # a package's file by its path in the package
    return f"{shown}:{line}: {text}" if text else f"{shown}:{line}"


def code_stack(coro: Coroutine[Any, Any, Any] | None) -> list[str]:
    """Every frame of the workflow's own code that ``coro`` is suspended in, outermost first,
    as ``file:line in function: source`` (the SDK's frames skipped); [] once it ended."""
    frames = []
    awaited: Any = coro
    while awaited is not None and getattr(awaited, "cr_frame", None) is not None:
        frame = awaited.cr_frame
        if not _is_sdk(frame.f_code.co_filename):
            filename, line = frame.f_code.co_filename, frame.f_lineno
            text = linecache.getline(filename, line).strip()
            where = f"{_UNPACKED.sub('', filename)}:{line} in {frame.f_code.co_name}"
            frames.append(f"{where}: {text}" if text else where)
        awaited = getattr(awaited, "cr_await", None)
    return frames


_UNPACKED = re.compile(r"^.*[/\\][0-9a-f]{64}[/\\]")
_SDK_FILES = (str(Path(workflow_module.__file__).parent) + os.sep, sdk.__file__)


def _is_sdk(filename: str) -> bool:
    return filename.startswith(_SDK_FILES)


def failure_of(err: BaseException, *, message: str | None = None) -> WorkflowError:
    """The recorded form of an exception workflow code raised: ``"<Type>: <text>"``, its type
    and its traceback without the engine's own frames (so it shows the user's file and line)."""
    text = str(err)
    name = type(err).__name__
    frames = [
        frame
        for frame in traceback.extract_tb(err.__traceback__)
        if frame.filename not in _ENGINE_FILES
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines.extend(traceback.format_exception_only(err))
    if isinstance(err, ActivityError) and err.traceback:
        # as Python shows a chained exception: the activity's own traceback first
        cause = err.traceback.rstrip("\n") + "\n"
        lines = [cause, "\nThe activity's failure above ended the workflow:\n\n", *lines]
    return WorkflowError(
        message=message or (f"{name}: {text}" if text else name),
        error_type=name,
        traceback="".join(lines),
    )


def _activity_error(activity_type: str, event: Event) -> ActivityError:
    match event:
        case ActivityFailed(activity_id=aid, attempt=attempt, error=error, non_retryable=nr):
            return ActivityError(
                activity_id=aid,
                activity_type=activity_type,
                attempt=attempt,
                cause_type=error.error_type,
                cause_message=error.message,
                traceback=error.traceback,
                non_retryable=nr,
            )
        case ActivityTimedOut(activity_id=aid, attempt=attempt, timeout=kind, last_error=last):
            return ActivityError(
                activity_id=aid,
                activity_type=activity_type,
                attempt=attempt,
                cause_type="" if last is None else last.error_type,
                cause_message="" if last is None else last.message,
                traceback="" if last is None else last.traceback,
                timeout=kind.value,
            )
        case ActivityCancelled(activity_id=aid, attempt=attempt, reason=reason):
            return ActivityError(
                activity_id=aid,
                activity_type=activity_type,
                attempt=attempt,
                cause_type="CancelledError",
                cause_message=reason,
                cancelled=True,
            )
        case _:
            raise InvalidInput(f"{type(event).__name__} does not end an activity")


def _check_key(key: object) -> None:
    if key is not None and not isinstance(key, str):
        raise InvalidInput(f"publish key must be a str or None, got {key!r}")


class Executor:
    """One run's coroutine plus what it has seen: child results, fired timers, signals."""

    __slots__ = (
        "_activities",
        "_activity_cancels",
        "_activity_results",
        "_arrivals",
        "_awaited_children",
        "_cancel_reason",
        "_child_results",
        "_coro",
        "_decisions",
        "_fired",
        "_fn",
        "_scheduled_children",
        "_signals",
        "_sources",
        "_timer_counter",
        "_waiting",
        "_waiting_timer",
        "ctx",
        "decisions_taken",
        "finished",
        "last_source",
        "local_fns",
        "queries",
        "started",
    )

    def __init__(self, fn: WorkflowFn, started: WorkflowStarted, *, trace: bool = False) -> None:
        self.started = started
        self._fn = fn
        self.ctx = sdk.WorkflowContext(
            WorkflowInfo(
                workflow_id=started.workflow_id,
                run_id=started.run_id,
                first_run_id=started.first_run_id,
                previous_run_id=started.previous_run_id,
                workflow_type=started.workflow_type,
                parent=started.parent,
                attempt=started.attempt,
            ),
            started.recorded_at,
            start_seq=started.seq,
        )
        self._coro: Coroutine[Any, Any, Any] | None = None
        self._decisions: deque[WorkflowDecision] = deque()
        self._waiting: sdk.Op[Any] | None = None
        self._waiting_timer: str | None = None
        self._child_results: dict[str, Payload | WorkflowError] = {}
        self._awaited_children: set[str] = set()  # results the code has taken
        # children a previous run of the chain scheduled and handed over at its continue-as-new
        self._scheduled_children: set[str] = {c.child_workflow_id for c in started.carried_children}
        self._fired: set[str] = set()
        self._signals: dict[str, deque[tuple[int, Payload]]] = {}
        self._arrivals = 0  # signals delivered so far: their order across names
        self._timer_counter = 0
        self._cancel_reason: str | None = None
        self._activities: dict[str, str] = {}  # id -> type, every activity scheduled
        self._activity_results: dict[str, Payload | ActivityError] = {}
        self._activity_cancels: set[str] = set()
        self.local_fns: dict[str, Callable[..., Any]] = {}
        """Each local step's function by activity id (``ctx.run``), for the engine to call."""
        self.decisions_taken = 0
        self.finished = False
        # With ``trace`` (replay checks), where in the code each decision was made.
        self._sources: deque[str] | None = deque() if trace else None
        self.last_source = ""
        """Where the code made the decision taken last (traced executors only)."""
        self.queries: dict[str, Callable[..., Any]] = {}
        """The query handlers the code registered (``@workflow.query``), by name."""

    # -- driving -------------------------------------------------------------------------

    def start(self) -> None:
        """Run the code from its start until it blocks or finishes."""
        try:
            value = self.started.input.to_json()
        except ValueError as err:
            self._finish(Failed(error=WorkflowError(message=f"undecodable input: {err}")))
            return
        self._coro = self._fn(self.ctx, value)
        self._resume(None)

    def deliver(self, event: Event) -> None:
        """Feed one input event (in history order); resumes the code if it unblocks it."""
        if self.finished:
            return
        self.ctx._set_now(event.recorded_at)
        match event:
            case ChildWorkflowCompleted(child_workflow_id=child, result=result):
                self._child_results[child] = result
                if self._waiting == sdk.ChildResultOp(child):
                    self._awaited_children.add(child)
                    self._resume(result.to_json())
            case ChildWorkflowFailed(child_workflow_id=child, error=error):
                self._child_results[child] = error
                if self._waiting == sdk.ChildResultOp(child):
                    self._awaited_children.add(child)
                    self._resume(sdk.Raise(ChildFailedError(child, error.message)))
            case ActivityCompleted() | ActivityFailed() | ActivityTimedOut() | ActivityCancelled():
                self._activity_resolved(event)
            case SignalReceived(name=name, payload=payload):
                self._arrivals += 1
                self._signals.setdefault(name, deque()).append((self._arrivals, payload))
                waiting = self._waiting
                if isinstance(waiting, sdk.WaitSignalOp) and waiting.name == name:
                    self._resume(self._signals[name].popleft()[1].to_json())
            case TimerFired(timer_id=timer_id):
                self._fired.add(timer_id)
                self._on_timer(timer_id)
            case CancelRequested(reason=reason):
                self._cancel_reason = reason
                self._waiting = None
                self._resume(None, throw=asyncio.CancelledError(reason))
            case _:
                raise InvalidInput(
                    f"{type(event).__name__} is not an input event for workflow code"
                )

    def _activity_resolved(
        self, event: ActivityCompleted | ActivityFailed | ActivityTimedOut | ActivityCancelled
    ) -> None:
        aid = event.activity_id
        outcome: Payload | ActivityError
        if isinstance(event, ActivityCompleted):
            outcome = event.result
        else:
            outcome = _activity_error(self._activities.get(aid, "?"), event)
        self._activity_results[aid] = outcome
        if self._waiting == sdk.ActivityResultOp(aid):
            if isinstance(outcome, ActivityError):
                self._resume(sdk.Raise(outcome))
            else:
                self._resume(outcome.to_json())

    def take_decision(self) -> WorkflowDecision | None:
        """The oldest decision not yet taken, or None."""
        if not self._decisions:
            return None
        self.decisions_taken += 1
        if self._sources:
            self.last_source = self._sources.popleft()
        return self._decisions.popleft()

    @property
    def traced(self) -> bool:
        """Whether decisions record where the code made them."""
        return self._sources is not None

    def where(self) -> str:
        """Where the code is now (suspended, or its first line once ended); see
        :func:`code_location`."""
        return code_location(self._coro, self._fn)

    def stack(self) -> list[str]:
        """The source line of each frame of the code's own that is suspended now, outermost
        first (see :func:`code_stack`)."""
        return code_stack(self._coro)

    @property
    def waiting(self) -> sdk.Op[Any] | None:
        """The operation the code is blocked on now (None when it is not blocked)."""
        return self._waiting

    @property
    def waiting_timer(self) -> str | None:
        """The id of the timer the blocking operation waits for (a sleep, or a signal wait's
        timeout), if any."""
        return self._waiting_timer

    def add_query(self, name: str, handler: Callable[..., Any]) -> None:
        """Register query handler ``name`` (``@workflow.query`` in the code calls this)."""
        self.queries[name] = handler

    def _decide(self, decision: WorkflowDecision) -> None:
        self._decisions.append(decision)
        if self._sources is not None:
            self._sources.append(code_location(self._coro, self._fn))

    @property
    def has_decisions(self) -> bool:
        """Whether decisions are queued."""
        return bool(self._decisions)

    def describe_wait(self) -> str:
        """What the code is blocked on, for error messages."""
        match self._waiting:
            case sdk.ChildResultOp(child_id=child):
                return f"waiting for child {child!r}"
            case sdk.ActivityResultOp(activity_id=aid):
                return f"waiting for activity {self._activities.get(aid, '?')!r} ({aid})"
            case sdk.SleepOp():
                return f"sleeping on timer {self._waiting_timer!r}"
            case sdk.WaitSignalOp(name=name):
                return f"waiting for signal {name!r}"
            case None:
                return "finished" if self.finished else "not blocked"
            case other:
                return f"blocked on {other!r}"

    def close(self) -> None:
        """Drop the coroutine (eviction or a forced close); its decisions are discarded."""
        self.finished = True
        self._waiting = None
        _close_coroutine(self._coro)
        self._coro = None

    def _on_timer(self, timer_id: str) -> None:
        if self._waiting_timer != timer_id:
            return
        waiting = self._waiting
        self._waiting_timer = None
        if isinstance(waiting, sdk.SleepOp):
            self._resume(None)
        elif isinstance(waiting, sdk.WaitSignalOp) and waiting.timeout_ms is not None:
            self._resume(sdk.Raise(SignalTimeout(waiting.name, waiting.timeout_ms)))

    def _resume(self, value: object, throw: BaseException | None = None) -> None:
        coro = self._coro
        if coro is None or self.finished:
            return
        self._waiting = None
        self._waiting_timer = None
        reply: object = value
        while (op := self._step(coro, reply, throw)) is not _ENDED:
            throw = None
            if not isinstance(op, sdk.Op):
                self._finish(Failed(error=WorkflowError(message=awaited_foreign_message(op))))
                return
            reply = self._answer(op)
            if reply is _BLOCKED:
                self._waiting = op
                return

    def _step(
        self, coro: Coroutine[Any, Any, Any], reply: object, throw: BaseException | None
    ) -> object:
        """Advance the code to its next await; :data:`_ENDED` once it returned or raised.

        The code runs inside the sandbox: a refused call fails the run even if caught."""
        with _sandbox.guard() as guard, running_code(self):
            try:
                op = coro.throw(throw) if throw is not None else coro.send(reply)
            except BaseException as ended:  # noqa: BLE001 - sorted out below, outside the guard
                outcome: BaseException | None = ended
            else:
                outcome = None
        if guard.violation is not None:
            error = guard.violation
            self._finish(Failed(error=failure_of(error)))
            return _ENDED
        if outcome is None:
            return op
        if isinstance(outcome, StopIteration):
            self._complete(outcome.value)
        elif isinstance(outcome, sdk.ContinueAsNewRequested):
            self._continue_as_new(outcome)
        elif isinstance(outcome, asyncio.CancelledError):
            reason = self._cancel_reason or str(outcome) or "cancelled by workflow code"
            self._finish(Cancelled(reason=reason))
        elif isinstance(outcome, Exception):  # any error the code raises is its outcome
            self._fail_from(outcome)
        else:
            raise outcome  # KeyboardInterrupt, SystemExit: not the workflow's business
        return _ENDED

    # -- answering ops -------------------------------------------------------------------

    def _answer(self, op: sdk.Op[Any]) -> object:  # noqa: PLR0911 - one answer per op type
        match op:
            case sdk.StartChildOp():
                return self._start_child(op)
            case sdk.ChildResultOp(child_id=child):
                return self._child_result(child)
            case sdk.SleepOp(duration_ms=ms):
                return self._sleep(ms)
            case sdk.WaitSignalOp(name=name, timeout_ms=timeout):
                return self._wait_signal(name, timeout)
            case sdk.StartActivityOp():
                return self._start_activity(op)
            case sdk.ActivityResultOp(activity_id=aid):
                return self._activity_result(aid)
            case sdk.CancelActivityOp(activity_id=aid, reason=reason):
                return self._cancel_activity(aid, reason)
            case sdk.PublishOp():
                return self._publish(op)
            case _:
                return sdk.Raise(InvalidInput(f"unsupported workflow operation {op!r}"))

    def _child_result(self, child: str) -> object:
        if child not in self._scheduled_children:
            return sdk.Raise(InvalidInput(f"{child!r} is not a child of this run"))
        outcome = self._child_results.get(child)
        if outcome is None:
            return _BLOCKED
        self._awaited_children.add(child)
        if isinstance(outcome, WorkflowError):
            return sdk.Raise(ChildFailedError(child, outcome.message))
        return outcome.to_json()

    def _start_activity(self, op: sdk.StartActivityOp) -> object:
        if isinstance(op.options, InvalidInput):
            return sdk.Raise(op.options)
        try:
            payload = Payload.from_json(list(op.args))
        except InvalidInput as err:
            return sdk.Raise(InvalidInput(f"arguments of activity {op.activity_type!r}: {err}"))
        activity_id = self.ctx._next_activity_id()
        self._activities[activity_id] = op.activity_type
        if op.fn is not None:
            self.local_fns[activity_id] = op.fn
            local_steps.remember(op.activity_type, op.fn)
        self._decide(ScheduleActivity(activity_id, op.activity_type, payload, op.options))
        return sdk.ActivityHandle(activity_id, op.activity_type)

    def _activity_result(self, activity_id: str) -> object:
        if activity_id not in self._activities:
            return sdk.Raise(InvalidInput(f"{activity_id!r} is not an activity of this run"))
        outcome = self._activity_results.get(activity_id)
        if outcome is None:
            return _BLOCKED
        if isinstance(outcome, ActivityError):
            return sdk.Raise(outcome)
        return outcome.to_json()

    def _cancel_activity(self, activity_id: str, reason: str) -> object:
        if activity_id not in self._activities:
            return sdk.Raise(InvalidInput(f"{activity_id!r} is not an activity of this run"))
        if activity_id in self._activity_results or activity_id in self._activity_cancels:
            return None  # already ended, or its cancellation already requested
        self._activity_cancels.add(activity_id)
        self._decide(RequestCancelActivity(activity_id, str(reason)))
        return None

    def _publish(self, op: sdk.PublishOp) -> object:
        if isinstance(op.headers, InvalidInput):
            return sdk.Raise(op.headers)
        try:
            topic = validate_topic(op.topic)
            _check_key(op.key)
            value = Payload.from_json(op.value)
            fmt = _JSON if op.schema is None else op.schema.format
            encoded = fmt.encode(op.value)
        except InvalidInput as err:
            return sdk.Raise(InvalidInput(f"publish to {op.topic!r}: {err}"))
        publish_id = self.ctx._next_publish_id()
        self._decide(Publish(publish_id, topic, op.key, value, fmt.name, encoded, op.headers))
        return None

    def _sleep(self, ms: int) -> object:
        if ms <= 0:
            return None
        self._waiting_timer = self._schedule_timer(ms)
        return _BLOCKED

    def _start_child(self, op: sdk.StartChildOp) -> object:
        try:
            validate_id(op.child_id, what="child workflow id")
            validate_name(op.workflow_type, what="child workflow type")
            payload = Payload.from_json(op.input_value)
        except InvalidInput as err:
            return sdk.Raise(err)
        if op.child_id in self._scheduled_children:
            return sdk.Raise(InvalidInput(f"child {op.child_id!r} was already started by this run"))
        self._scheduled_children.add(op.child_id)
        self._decide(
            ScheduleChild(
                op.child_id, op.workflow_type, payload, op.close_policy, op.execution_timeout_ms
            )
        )
        return sdk.ChildHandle(op.child_id)

    def _wait_signal(self, name: str, timeout_ms: int | None) -> object:
        buffered = self._signals.get(name)
        if buffered:
            return buffered.popleft()[1].to_json()
        if timeout_ms is not None:
            if timeout_ms <= 0:
                return sdk.Raise(SignalTimeout(name, timeout_ms))
            self._waiting_timer = self._schedule_timer(timeout_ms)
        return _BLOCKED

    def _schedule_timer(self, ms: int) -> str:
        self._timer_counter += 1
        info = self.ctx.info
        timer_id = derive_id("timer", info.workflow_id, info.run_id, str(self._timer_counter))
        fire_at = self.ctx.now() + timedelta(milliseconds=ms)
        self._decide(ScheduleTimer(timer_id, fire_at))
        return timer_id

    # -- outcomes ------------------------------------------------------------------------

    def _complete(self, value: object) -> None:
        try:
            payload = Payload.from_json(value)
        except InvalidInput as err:
            self._finish(Failed(error=WorkflowError(message=f"workflow result rejected: {err}")))
            return
        self._finish(Completed(result=payload))

    def _continue_as_new(self, request: sdk.ContinueAsNewRequested) -> None:
        try:
            payload = Payload.from_json(request.input_value)
            if request.workflow_type is not None:
                validate_name(request.workflow_type, what="workflow type")
        except InvalidInput as err:
            self._finish(Failed(error=WorkflowError(message=f"continue-as-new rejected: {err}")))
            return
        pending = sorted(
            (order, name, payload)
            for name, buffered in self._signals.items()
            for order, payload in buffered
        )
        signals = tuple((name, payload) for _, name, payload in pending)
        unawaited = tuple(
            (child, outcome)
            for child, outcome in self._child_results.items()
            if child not in self._awaited_children
        )
        self._decide(ContinueAsNewDecision(payload, request.workflow_type, signals, unawaited))
        self._mark_finished()

    def _fail_from(self, err: Exception) -> None:
        if isinstance(err, RuntimeError) and _NO_LOOP in str(err):
            # Outside an event loop, asyncio primitives fail before yielding anything.
            message = awaited_foreign_message("an asyncio awaitable (it needs an event loop)")
            self._finish(Failed(error=failure_of(err, message=message)))
        else:
            self._finish(Failed(error=failure_of(err)))

    def _finish(self, outcome: Completed | Failed | Cancelled) -> None:
        self._decide(Finish(outcome))
        self._mark_finished()

    def _mark_finished(self) -> None:
        self.finished = True
        self._waiting = None
        _close_coroutine(self._coro)
        self._coro = None
