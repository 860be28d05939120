"""Workflow definitions and the context protocol workflow code is written against.

The engine implements :class:`WorkflowContext`; this module holds no engine internals, so
workflow code, the engine and the worker can all import it.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol, TypeVar, overload

from aion._publish import AvroSchema
from aion._retry import RetryPolicy
from aion_common.domain import (
    InvalidInput,
    ParentClosePolicy,
    ParentLink,
    validate_name,
    validate_query_name,
)

__all__ = [
    "ActivityHandle",
    "ChildHandle",
    "QueryHandlers",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowInfo",
    "definition",
    "defn",
    "query",
    "running_code",
]

T = TypeVar("T")
WorkflowFn = Callable[..., Coroutine[Any, Any, Any]]
F = TypeVar("F", bound=WorkflowFn)
Q = TypeVar("Q", bound=Callable[..., Any])
_ATTRIBUTE = "__aion_workflow__"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowInfo:
    """Who this run is: ids, type, parent link and attempt."""

    workflow_id: str
    run_id: str
    first_run_id: str
    previous_run_id: str | None
    workflow_type: str
    parent: ParentLink | None
    attempt: int


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    """A workflow type: its name and its ``async def run(ctx, input)``."""

    name: str
    fn: WorkflowFn


class ChildHandle(Protocol):
    """A started child workflow."""

    @property
    def workflow_id(self) -> str:
        """The child's workflow id."""

    def result(self) -> Awaitable[Any]:
        """Await the child's result; raises :class:`ChildWorkflowFailed` unless it completed."""


class ActivityHandle(Protocol):
    """A scheduled activity."""

    @property
    def activity_id(self) -> str:
        """The activity's id: also the idempotency key each of its attempts sees."""

    @property
    def activity_type(self) -> str:
        """The activity's registered name."""

    def result(self) -> Awaitable[Any]:
        """Await the activity's result; raises :class:`ActivityError` if it ends without one."""

    def cancel(self, reason: str = "cancelled by the workflow") -> Awaitable[None]:
        """Request the activity's cancellation (its ``result()`` then raises ``ActivityError``
        with ``cancelled=True`` once its worker confirms, or at once if it was not running)."""


class WorkflowContext(Protocol):
    """What workflow code receives as ``ctx``: every effect and every source of time,
    randomness and ids goes through it, so a replay takes the same decisions."""

    @property
    def info(self) -> WorkflowInfo:
        """This run's ids, type, parent link and attempt."""

    def now(self) -> datetime:
        """Workflow time: when the event being processed was recorded (never the wall clock)."""

    def random(self) -> float:
        """A deterministic float in [0, 1): the same on every replay."""

    def uuid4(self) -> uuid.UUID:
        """A deterministic UUID unique to this run and call: the same on every replay."""

    def start_child(
        self,
        workflow_type: str,
        input: object = None,  # noqa: A002 - the SDK's public keyword
        *,
        id: str | None = None,  # noqa: A002 - the SDK's public keyword
        parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
        execution_timeout: float | timedelta | None = None,
    ) -> Awaitable[ChildHandle]:
        """Schedule a child workflow; ``await`` it for a :class:`ChildHandle`."""

    def get_child(self, workflow_id: str) -> ChildHandle:
        """A handle to the child ``workflow_id`` this run started — or that an earlier run of
        its chain started and was still open at its continue-as-new (children stay attached
        to the chain: their results arrive in the run that holds them now)."""

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

    def sleep(self, duration: float | timedelta) -> Awaitable[None]:
        """A durable sleep of ``duration`` (seconds or timedelta) that survives restarts."""

    def wait_signal(self, name: str, timeout: float | timedelta | None = None) -> Awaitable[Any]:
        """The payload of the oldest unconsumed signal ``name``, waiting for one if none;
        with a ``timeout``, raises :class:`SignalTimeout` when it passes first."""

    def continue_as_new(self, input: object, workflow_type: str | None = None) -> NoReturn:  # noqa: A002
        """Close this run and start a new run of the same workflow id with ``input``."""

    def publish(
        self,
        topic: str,
        value: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        schema: AvroSchema | None = None,
    ) -> Awaitable[None]:
        """Write a record to Kafka topic ``topic`` with this step: it appears exactly once for
        read_committed readers (it is written in the engine's transaction for the step) and
        never again on replay. ``value`` is JSON, or Avro with ``schema``
        (:class:`AvroSchema`), checked now: :class:`InvalidInput` if it does not fit."""

    async def gather(self, *awaitables: Awaitable[T]) -> list[T]:
        """Await each in turn and return their results in order."""

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
    ) -> Awaitable[ActivityHandle]:
        """Schedule an activity (an ``@activity.defn`` function or its name) with ``args``;
        ``await`` it for an :class:`ActivityHandle`. At least one of ``start_to_close`` and
        ``schedule_to_close`` is required."""

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
        """Schedule an activity and await its result (raises :class:`ActivityError`)."""

    async def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        start_to_close: float | timedelta = 1.0,
    ) -> Any:
        """A local step: the engine calls ``fn(*args)`` itself (a coroutine function is
        awaited, a plain one runs in a thread) outside the workflow's code, and records its
        result (raises :class:`ActivityError` as an activity would) in the transaction that
        carries the workflow's next decision: no task topic, no worker. Its effects are
        at-least-once: a crash before that commit runs it again. ``fn`` must be a module-level
        function (or ``@activity.defn``). A failure is retried per ``retry`` on a durable timer;
        an attempt that outlives ``start_to_close`` (at most 5 s: the step holds its partition's
        other commands while it runs) fails the step for good, advising an activity instead."""


@overload
def defn(fn: F, /) -> F: ...
@overload
def defn(name: str | None = None, /) -> Callable[[F], F]: ...
@overload
def defn(*, name: str) -> Callable[[F], F]: ...
def defn(name_or_fn: str | F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark an ``async def run(ctx, input)`` as a workflow type.

    ``@workflow.defn("order")`` (or ``name="order"``) names it; bare ``@workflow.defn`` uses
    the function's name. The engine finds decorated functions in the modules it loads.
    """
    if callable(name_or_fn):
        return _define(name_or_fn, name or name_or_fn.__name__)
    chosen = name if name is not None else name_or_fn

    def decorate(fn: F) -> F:
        return _define(fn, chosen if chosen is not None else fn.__name__)

    return decorate


def _define(fn: F, name: str) -> F:
    validate_name(name, what="workflow type")
    if not inspect.iscoroutinefunction(fn):
        raise InvalidInput(f"workflow {name!r} must be an `async def run(ctx, input)`, got {fn!r}")
    setattr(fn, _ATTRIBUTE, WorkflowDefinition(name=name, fn=fn))
    return fn


def definition(obj: object) -> WorkflowDefinition | None:
    """The workflow definition ``@workflow.defn`` attached to ``obj``, if any."""
    found = getattr(obj, _ATTRIBUTE, None)
    return found if isinstance(found, WorkflowDefinition) else None


class QueryHandlers(Protocol):
    """Where ``@workflow.query`` puts the handlers of the run whose code is running (the
    engine's; the SDK only hands them on)."""

    def add_query(self, name: str, handler: Callable[..., Any]) -> None:
        """Register ``handler`` as query ``name`` of the running run (a later one of the same
        name replaces it), or raise :class:`InvalidInput` saying why it may not be."""


_RUNNING: ContextVar[QueryHandlers | None] = ContextVar("aion_workflow_running", default=None)


@contextmanager
def running_code(handlers: QueryHandlers | None) -> Iterator[None]:
    """While a run's code runs (the engine steps it inside this), ``@workflow.query``
    registers with ``handlers``; None refuses every registration."""
    token = _RUNNING.set(handlers)
    try:
        yield
    finally:
        _RUNNING.reset(token)


@overload
def query(fn: Q, /) -> Q: ...
@overload
def query(name: str | None = None, /) -> Callable[[Q], Q]: ...
def query(name_or_fn: str | Q | None = None, /) -> Q | Callable[[Q], Q]:
    """Make a function of the running workflow's own code answer query ``name`` (bare
    ``@workflow.query``: the function's name), from the workflow's state::

        @workflow.defn("order")
        async def order(ctx: workflow.WorkflowContext, spec: dict) -> dict:
            step = "charging"

            @workflow.query("step")
            def current_step() -> str:
                return step

            ...
            step = "shipping"

    Use it inside the workflow function, where the handler sees its variables (a closure);
    the handler is registered when that line runs, so a query asked earlier is answered as
    unknown. Handlers are read-only: a plain ``def`` returning JSON. One that awaits, sleeps,
    starts a child or an activity, continues-as-new, draws ``ctx.random()``/``ctx.uuid4()`` or
    does I/O is refused with an error (its effects would not be in the history); it must not
    change the workflow's variables either, which no replay would repeat. Queries starting
    with ``__`` are the engine's own (``__stack_trace``, ``__waiting_on``).
    """
    if callable(name_or_fn):
        return _register(getattr(name_or_fn, "__name__", ""), name_or_fn)
    chosen = name_or_fn
    if chosen is not None:
        validate_query_name(chosen, builtin_ok=False)

    def decorate(fn: Q) -> Q:
        return _register(chosen if chosen is not None else getattr(fn, "__name__", ""), fn)

    return decorate


def _register(name: str, fn: Q) -> Q:
    validate_query_name(name, builtin_ok=False)
    if not callable(fn):
        raise InvalidInput(f"@workflow.query({name!r}) decorates a function, got {fn!r}")
    handlers = _RUNNING.get()
    if handlers is None:
        raise InvalidInput(
            f"@workflow.query({name!r}) registers a handler of the running workflow: use it "
            "inside the workflow function's body (on a nested def), not at module level or "
            "inside a query handler"
        )
    handlers.add_query(name, fn)
    return fn
