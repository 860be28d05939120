"""The workflow context: workflow code's only door to children, activities, time, signals,
randomness and ids (the engine's implementation of :class:`aion.workflow.WorkflowContext`).

Every awaitable the context hands out is an :class:`Op`: awaiting it yields the op itself to
the executor, which records a decision or blocks the coroutine until the history supplies the
answer. Nothing here touches an event loop, a clock or the ``random`` module, so replaying the
same history always drives the code through the same decisions.
"""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, NoReturn, TypeVar

from aion import workflow
from aion.activity import definition as activity_definition
from aion.workflow import RetryPolicy, WorkflowInfo
from aion_common.domain import (
    DEFAULT_TASK_QUEUE,
    LOCAL_TASK_QUEUE,
    MAX_ID_LENGTH,
    ActivityOptions,
    InvalidInput,
    ParentClosePolicy,
    derive_id,
    validate_name,
)

__all__ = [
    "LOCAL_STEP_LIMIT_MS",
    "ActivityHandle",
    "ActivityResultOp",
    "CancelActivityOp",
    "ChildHandle",
    "ChildResultOp",
    "ContinueAsNewRequested",
    "Op",
    "PublishOp",
    "QueryViolation",
    "Raise",
    "SleepOp",
    "StartActivityOp",
    "StartChildOp",
    "WaitSignalOp",
    "WorkflowContext",
    "duration_ms",
    "local_step_name",
]

_PACKAGE_NAMESPACE = re.compile(r"^aion_pkg_[0-9a-f]{16}\.")
LOCAL_STEP_LIMIT_MS = 5_000
"""The longest ``start_to_close`` a local step may ask for: it holds its partition while it runs."""

T = TypeVar("T")


class ContinueAsNewRequested(BaseException):
    """Raised by ``ctx.continue_as_new``; a BaseException so ``except Exception`` can't eat it."""

    def __init__(self, input_value: object, workflow_type: str | None) -> None:
        super().__init__("continue-as-new")
        self.input_value = input_value
        self.workflow_type = workflow_type


class QueryViolation(BaseException):
    """A query handler called a ``ctx`` operation that decides or draws (a BaseException, so
    ``except Exception`` in the handler cannot hide it; the handler is refused either way)."""

    def __init__(self, call: str) -> None:
        super().__init__(f"ctx.{call}()")
        self.call = call


@dataclass(frozen=True, slots=True)
class Raise:
    """An executor reply that makes the awaiting op raise ``error`` in workflow code."""

    error: BaseException


class Op(Generic[T]):
    """An awaitable workflow operation; the executor answers it (or makes it raise)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, T]:
        reply = yield self
        if isinstance(reply, Raise):
            raise reply.error
        return reply  # type: ignore[no-any-return]  # the executor answers each op with its T


@dataclass(frozen=True, slots=True)
class ChildHandle:
    """A started child; ``await handle.result()`` gives its JSON result."""

    workflow_id: str

    def result(self) -> ChildResultOp:
        """Await the child's result; raises :class:`ChildWorkflowFailed` unless it completed."""
        return ChildResultOp(self.workflow_id)


@dataclass(frozen=True, slots=True)
class StartChildOp(Op[ChildHandle]):
    """Schedule a child (a decision; answered at once with its handle)."""

    child_id: str
    workflow_type: str
    input_value: object
    close_policy: ParentClosePolicy
    execution_timeout_ms: int | None


@dataclass(frozen=True, slots=True)
class ChildResultOp(Op[Any]):
    """Block until the child's terminal is recorded in this run."""

    child_id: str


@dataclass(frozen=True, slots=True)
class SleepOp(Op[None]):
    """A durable timer (a decision), then block until it fires."""

    duration_ms: int


@dataclass(frozen=True, slots=True)
class WaitSignalOp(Op[Any]):
    """Take the oldest buffered signal ``name``, or block for one (with an optional timer)."""

    name: str
    timeout_ms: int | None


@dataclass(frozen=True, slots=True)
class ActivityHandle:
    """A scheduled activity; ``await handle.result()`` gives its JSON result."""

    activity_id: str
    activity_type: str

    def result(self) -> ActivityResultOp:
        """Await the result; raises :class:`aion.workflow.ActivityError` if there is none."""
        return ActivityResultOp(self.activity_id)

    def cancel(self, reason: str = "cancelled by the workflow") -> CancelActivityOp:
        """Request the activity's cancellation (a decision; answered at once)."""
        return CancelActivityOp(self.activity_id, reason)


@dataclass(frozen=True, slots=True)
class StartActivityOp(Op[ActivityHandle]):
    """Schedule an activity (a decision; answered at once with its handle, or raising the
    problem with its arguments)."""

    activity_type: str
    args: tuple[Any, ...]
    options: ActivityOptions | InvalidInput
    fn: Callable[..., Any] | None = None
    """A local step's function (``ctx.run``): the engine calls it itself."""


@dataclass(frozen=True, slots=True)
class ActivityResultOp(Op[Any]):
    """Block until the activity is resolved in this run."""

    activity_id: str


@dataclass(frozen=True, slots=True)
class CancelActivityOp(Op[None]):
    """Request cancellation of an activity of this run."""

    activity_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PublishOp(Op[None]):
    """Publish a record to a user topic (a decision; answered at once, or raising the problem
    with the value, key or headers)."""

    topic: str
    value: object
    key: str | None
    headers: tuple[tuple[str, str], ...] | InvalidInput
    schema: workflow.AvroSchema | None


def _optional_ms(value: float | timedelta | None, what: str) -> int | None:
    if value is None:
        return None
    ms = duration_ms(value)
    if ms < 1:
        raise InvalidInput(f"{what} must be a positive duration, got {value!r}")
    return ms


def activity_options(
    *,
    start_to_close: float | timedelta | None,
    schedule_to_close: float | timedelta | None,
    schedule_to_start: float | timedelta | None,
    heartbeat_timeout: float | timedelta | None,
    retry: RetryPolicy | None,
    task_queue: str | None,
) -> ActivityOptions:
    """The domain options of an activity call; raises InvalidInput with the problem."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise InvalidInput(f"retry must be an aion.workflow.RetryPolicy, got {retry!r}")
    try:
        retry_options = (RetryPolicy() if retry is None else retry).to_options()
    except ValueError as err:
        raise InvalidInput(str(err)) from err
    if task_queue == LOCAL_TASK_QUEUE:
        raise InvalidInput(
            f"task queue {LOCAL_TASK_QUEUE!r} is the engine's own (local steps): use ctx.run, "
            "or another queue"
        )
    return ActivityOptions(
        task_queue=DEFAULT_TASK_QUEUE if task_queue is None else task_queue,
        start_to_close_ms=_optional_ms(start_to_close, "start_to_close"),
        schedule_to_close_ms=_optional_ms(schedule_to_close, "schedule_to_close"),
        schedule_to_start_ms=_optional_ms(schedule_to_start, "schedule_to_start"),
        heartbeat_timeout_ms=_optional_ms(heartbeat_timeout, "heartbeat_timeout"),
        retry=retry_options,
    )


def activity_name(activity: str | Callable[..., Any]) -> str:
    """The registered name of ``activity`` (an ``@activity.defn`` function, or a name)."""
    if isinstance(activity, str):
        return validate_name(activity, what="activity type")
    found = activity_definition(activity)
    if found is None:
        raise InvalidInput(
            f"{activity!r} is not an activity: decorate it with @activity.defn "
            "(from aion import activity), or pass the activity's name"
        )
    return found.name


_STEP_NAMES: weakref.WeakKeyDictionary[Callable[..., Any], str] = weakref.WeakKeyDictionary()
"""Each step function's recorded name, worked out once per function, not at every step."""


def local_step_name(fn: Callable[..., Any]) -> str:
    """A local step's recorded type: its ``@activity.defn`` name, else ``module.qualname``;
    the function itself must be one the engine can find again by that name after a restart
    (:mod:`aion_engine.local_steps`), so a lambda or a nested function is refused."""
    try:
        return _STEP_NAMES[fn]
    except (KeyError, TypeError):  # TypeError: not weakly referenceable
        name = _local_step_name(fn)
    with contextlib.suppress(TypeError):
        _STEP_NAMES[fn] = name
    return name


def _local_step_name(fn: Callable[..., Any]) -> str:
    found = activity_definition(fn)
    if found is not None:
        return found.name
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not callable(fn) or not module or not qualname or "<" in qualname:
        raise InvalidInput(
            f"ctx.run takes a module-level function (or an @activity.defn one), got {fn!r}"
        )
    # a versioned package's modules load as aion_pkg_<hash>.<module>: the recorded name stays
    # the same across versions, so a run moved to another version still replays
    module = _PACKAGE_NAMESPACE.sub("", module)
    return validate_name(f"{module}.{qualname}", what="local step")


def local_step_options(
    retry: RetryPolicy | None, start_to_close: float | timedelta
) -> ActivityOptions:
    """A local step's options: the reserved queue and its start-to-close bound (the same
    options for the same arguments, worked out once: they are immutable)."""
    try:
        return _local_step_options(retry, start_to_close)
    except TypeError:  # unhashable: a RetryPolicy with a list of error names
        return _local_step_options.__wrapped__(retry, start_to_close)


@functools.lru_cache(maxsize=256, typed=True)
def _local_step_options(
    retry: RetryPolicy | None, start_to_close: float | timedelta
) -> ActivityOptions:
    ms = _optional_ms(start_to_close, "start_to_close")
    assert ms is not None
    if ms > LOCAL_STEP_LIMIT_MS:
        raise InvalidInput(
            f"a local step may take at most {LOCAL_STEP_LIMIT_MS / 1000:g} s "
            f"(start_to_close={start_to_close!r}): "
            "it holds its partition's other commands while it runs; run longer work as an "
            "activity (ctx.execute_activity)"
        )
    options = activity_options(
        start_to_close=start_to_close,
        schedule_to_close=None,
        schedule_to_start=None,
        heartbeat_timeout=None,
        retry=retry,
        task_queue=None,
    )
    return ActivityOptions(
        task_queue=LOCAL_TASK_QUEUE,
        start_to_close_ms=options.start_to_close_ms,
        retry=options.retry,
    )


def _headers(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if not isinstance(headers, Mapping):
        raise InvalidInput(f"publish headers must be a mapping of str to str, got {headers!r}")
    pairs = []
    for name, value in headers.items():
        validate_name(name, what="publish header name")
        if not isinstance(value, str):
            raise InvalidInput(f"publish header {name!r} must be a str, got {value!r}")
        if name.startswith("aion."):
            raise InvalidInput(f"publish header {name!r}: names starting with 'aion.' are aion's")
        pairs.append((name, value))
    return tuple(pairs)


def duration_ms(value: float | timedelta) -> int:
    """Milliseconds in a duration given as seconds or a timedelta."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return round(seconds * 1000)


class WorkflowContext:
    """What workflow code receives as ``ctx``: every effect goes through it."""

    __slots__ = (
        "_activity_counter",
        "_child_counter",
        "_info",
        "_now",
        "_publish_counter",
        "_query",
        "_random_counter",
        "_start_seq",
        "_uuid_counter",
        "_violation",
    )

    def __init__(self, info: WorkflowInfo, now: datetime, *, start_seq: int = 1) -> None:
        self._info = info
        self._now = now
        self._start_seq = start_seq  # the seq of this run's WorkflowStarted
        self._child_counter = 0
        self._activity_counter = 0
        self._publish_counter = 0
        self._random_counter = 0
        self._uuid_counter = 0
        self._query: str | None = None
        self._violation: str | None = None

    @property
    def info(self) -> WorkflowInfo:
        """This run's ids, type, parent link and attempt."""
        return self._info

    def now(self) -> datetime:
        """Workflow time: when the event being processed was recorded (never the wall clock)."""
        return self._now

    def random(self) -> float:
        """A deterministic float in [0, 1), derived from the run id and a call counter."""
        self._effect("random")
        self._random_counter += 1
        bits = uuid.UUID(self._derive("random", self._random_counter)).int >> 75
        return bits / float(1 << 53)

    def uuid4(self) -> uuid.UUID:
        """A deterministic UUID (UUIDv5 bits) unique to this run and call; replay repeats it."""
        self._effect("uuid4")
        self._uuid_counter += 1
        return uuid.UUID(self._derive("uuid", self._uuid_counter))

    def start_child(
        self,
        workflow_type: str,
        input: object = None,  # noqa: A002 - the SDK's public keyword
        *,
        id: str | None = None,  # noqa: A002 - the SDK's public keyword
        parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
        execution_timeout: float | timedelta | None = None,
    ) -> StartChildOp:
        """Schedule a child workflow; ``await`` it for a :class:`ChildHandle`.

        The default child id is ``<this workflow's id>/<type>/<n>`` for the n-th child this
        run starts (``aion tree`` shows which child is which), the same on every replay.
        """
        self._effect("start_child")
        self._child_counter += 1
        child_id = id if id is not None else self._default_child_id(workflow_type)
        timeout = None if execution_timeout is None else duration_ms(execution_timeout)
        return StartChildOp(child_id, workflow_type, input, parent_close_policy, timeout)

    def get_child(self, workflow_id: str) -> ChildHandle:
        """A handle to the child ``workflow_id`` this run started — or an earlier run of its
        chain started and handed over at its continue-as-new (``await .result()`` raises if
        it is neither)."""
        return ChildHandle(workflow_id)

    async def execute_child(
        self,
        workflow_type: str,
        input: object = None,  # noqa: A002 - the SDK's public keyword
        *,
        id: str | None = None,  # noqa: A002 - the SDK's public keyword
        parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
        execution_timeout: float | timedelta | None = None,
    ) -> Any:
        """Start a child and await its result (raises :class:`ChildWorkflowFailed`)."""
        handle = await self.start_child(
            workflow_type,
            input,
            id=id,
            parent_close_policy=parent_close_policy,
            execution_timeout=execution_timeout,
        )
        return await handle.result()

    def sleep(self, duration: float | timedelta) -> SleepOp:
        """A durable sleep of ``duration`` (seconds or timedelta) that survives restarts."""
        self._effect("sleep")
        return SleepOp(duration_ms(duration))

    def wait_signal(self, name: str, timeout: float | timedelta | None = None) -> WaitSignalOp:
        """The payload of the oldest unconsumed signal ``name``, waiting for one if none.

        Signals that arrived before the wait are buffered per name, in arrival order. With a
        ``timeout``, raises :class:`SignalTimeout` when it passes first (a signal payload may
        be JSON ``null``, so returning None could not tell the two apart).
        """
        self._effect("wait_signal")
        return WaitSignalOp(name, None if timeout is None else duration_ms(timeout))

    def continue_as_new(self, input: object, workflow_type: str | None = None) -> NoReturn:  # noqa: A002
        """Close this run and start a new run of the same workflow id with ``input``."""
        self._effect("continue_as_new")
        raise ContinueAsNewRequested(input, workflow_type)

    def publish(
        self,
        topic: str,
        value: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        schema: workflow.AvroSchema | None = None,
    ) -> PublishOp:
        """Write a record to ``topic`` in this step's transaction (a decision): exactly once
        for read_committed readers, never again on replay. Problems with the value, key,
        headers or schema are raised where the op is awaited."""
        self._effect("publish")
        pairs: tuple[tuple[str, str], ...] | InvalidInput
        try:
            pairs = _headers(headers)
        except InvalidInput as err:
            pairs = err
        return PublishOp(topic, value, key, pairs, schema)

    async def gather(self, *awaitables: Awaitable[T]) -> list[T]:
        """Await each in turn and return their results in order (no event loop needed).

        Children run concurrently anyway; awaiting them in order only changes which failure
        is raised first when several fail.
        """
        return [await each for each in awaitables]

    def start_activity(
        self,
        activity: str | Callable[..., Any],
        *args: Any,
        start_to_close: float | timedelta | None = None,
        schedule_to_close: float | timedelta | None = None,
        schedule_to_start: float | timedelta | None = None,
        heartbeat_timeout: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        task_queue: str | None = None,
    ) -> StartActivityOp:
        """Schedule an activity; ``await`` it for an :class:`ActivityHandle`.

        Problems with the arguments (a function that is not an activity, no timeout, a bad
        retry policy or queue) are raised where the op is awaited.
        """
        self._effect("start_activity")
        options: ActivityOptions | InvalidInput
        try:
            name = activity_name(activity)
            options = activity_options(
                start_to_close=start_to_close,
                schedule_to_close=schedule_to_close,
                schedule_to_start=schedule_to_start,
                heartbeat_timeout=heartbeat_timeout,
                retry=retry,
                task_queue=task_queue,
            )
        except InvalidInput as err:
            name, options = "?", err
        return StartActivityOp(name, args, options)

    async def execute_activity(
        self,
        activity: str | Callable[..., Any],
        *args: Any,
        start_to_close: float | timedelta | None = None,
        schedule_to_close: float | timedelta | None = None,
        schedule_to_start: float | timedelta | None = None,
        heartbeat_timeout: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        task_queue: str | None = None,
    ) -> Any:
        """Schedule an activity and await its result (raises ``ActivityError``)."""
        handle = await self.start_activity(
            activity,
            *args,
            start_to_close=start_to_close,
            schedule_to_close=schedule_to_close,
            schedule_to_start=schedule_to_start,
            heartbeat_timeout=heartbeat_timeout,
            retry=retry,
            task_queue=task_queue,
        )
        return await handle.result()

    def run_step(
        self,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        start_to_close: float | timedelta = 1.0,
    ) -> StartActivityOp:
        """Schedule a local step (``await`` it for its handle); see :meth:`run`."""
        self._effect("run")
        options: ActivityOptions | InvalidInput
        try:
            name = local_step_name(fn)
            options = local_step_options(retry, start_to_close)
        except InvalidInput as err:
            name, options = "?", err
        return StartActivityOp(name, args, options, fn)

    async def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        start_to_close: float | timedelta = 1.0,
    ) -> Any:
        """A local step: the engine calls ``fn(*args)`` and records its result (the SDK's
        :meth:`aion.workflow.WorkflowContext.run`)."""
        handle = await self.run_step(fn, *args, retry=retry, start_to_close=start_to_close)
        return await handle.result()

    def _begin_query(self, name: str) -> None:
        """A query handler runs from now on: operations that decide or draw are refused."""
        self._query = name
        self._violation = None

    def _end_query(self) -> str | None:
        """The handler returned: the first operation it was refused (None if none)."""
        violation, self._query, self._violation = self._violation, None, None
        return violation

    def _effect(self, call: str) -> None:
        if self._query is not None:
            if self._violation is None:
                self._violation = call
            raise QueryViolation(call)

    def _next_publish_id(self) -> str:
        self._publish_counter += 1
        return self._derive("publish", self._publish_counter)

    def _next_activity_id(self) -> str:
        self._activity_counter += 1
        return self._derive("activity", self._activity_counter)

    def _set_now(self, now: datetime) -> None:
        self._now = now

    def _default_child_id(self, workflow_type: str) -> str:
        """``<parent id>/<type>/<n>``; in a later run of the id (continue-as-new, or the id
        started again) ``@<seq of that run's start>`` follows, so no two runs of one workflow
        id ever make the same child id. An id that would pass the limit is derived instead."""
        run = "" if self._start_seq == 1 else f"@{self._start_seq}"
        readable = f"{self._info.workflow_id}/{workflow_type}/{self._child_counter}{run}"
        if len(readable) <= MAX_ID_LENGTH:
            return readable
        return self._derive("child", self._child_counter)

    def _derive(self, kind: str, counter: int) -> str:
        return derive_id(kind, self._info.workflow_id, self._info.run_id, str(counter))


def _conforms(ctx: WorkflowContext) -> workflow.WorkflowContext:
    """Static check (mypy): this context implements the SDK's protocol."""
    return ctx
