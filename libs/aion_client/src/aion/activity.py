"""The activity SDK: what activity code imports.

```python
from aion import activity


@activity.defn
async def charge(order_id: str, amount: int) -> str:
    key = activity.info().idempotency_key  # the same for every attempt: dedup at the far side
    ...
    activity.heartbeat({"step": 1})  # long work: prove liveness, learn of cancellation
    return receipt
```

Activities do the workflow's I/O. They run on ``aion worker`` processes, at least once per
attempt (a worker killed mid-task runs it again); their result is recorded exactly once. A
plain ``def`` runs in the worker's thread pool, an ``async def`` on its event loop. Raise
:class:`ApplicationError` with ``non_retryable=True`` to stop the retries.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from aion._failures import ApplicationError
from aion_common.domain import InvalidInput, validate_name

__all__ = [
    "ActivityContext",
    "ActivityDefinition",
    "ActivityInfo",
    "ApplicationError",
    "definition",
    "defn",
    "heartbeat",
    "info",
    "is_cancelled",
]

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__aion_activity__"
_current: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("aion_activity")


@dataclass(frozen=True, slots=True)
class ActivityDefinition:
    """An activity type: its name and function (``is_async`` for an ``async def``)."""

    name: str
    fn: Callable[..., Any]
    is_async: bool


@overload
def defn(fn: F, /) -> F: ...
@overload
def defn(*, name: str | None = None) -> Callable[[F], F]: ...
def defn(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark a function as an activity: ``@activity.defn`` (named after the function) or
    ``@activity.defn(name="charge")``. Workers find decorated functions in the modules they
    load; workflows schedule them by function or by name."""
    if fn is not None:
        return _define(fn, name or fn.__name__)

    def decorate(inner: F) -> F:
        return _define(inner, name or inner.__name__)

    return decorate


def _define(fn: F, name: str) -> F:
    validate_name(name, what="activity type")
    if not callable(fn):
        raise InvalidInput(f"activity {name!r} must be a function, got {fn!r}")
    setattr(fn, _ATTRIBUTE, ActivityDefinition(name, fn, inspect.iscoroutinefunction(fn)))
    return fn


def definition(obj: object) -> ActivityDefinition | None:
    """The activity definition ``@activity.defn`` attached to ``obj``, if any."""
    found = getattr(obj, _ATTRIBUTE, None)
    return found if isinstance(found, ActivityDefinition) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityInfo:
    """The attempt being run.

    ``idempotency_key`` is the same for every attempt of one activity (its activity id): pass
    it to the service you call so a repeated attempt is recognised there. ``deadline`` is when
    this attempt will be timed out (start-to-close or schedule-to-close, whichever is first);
    ``heartbeat_details`` the last details heartbeated, by this attempt or an earlier one.
    """

    workflow_id: str
    run_id: str
    workflow_type: str
    activity_id: str
    activity_type: str
    attempt: int
    task_queue: str
    scheduled_at: datetime
    started_at: datetime
    deadline: datetime | None
    heartbeat_timeout: timedelta | None
    heartbeat_details: Any
    idempotency_key: str


class ActivityContext:
    """One running attempt, as activity code sees it through :func:`info`, :func:`heartbeat`
    and :func:`is_cancelled`.

    ``aion worker`` binds one per attempt; a test can bind its own to call an activity
    function directly (``with ActivityContext(info).bind(): charge("A-1", 10)``).
    ``on_heartbeat`` receives each heartbeat's details (from any thread).
    """

    def __init__(
        self, info: ActivityInfo, *, on_heartbeat: Callable[[Any], None] | None = None
    ) -> None:
        self.info = info
        self.last_heartbeat_details: Any = info.heartbeat_details
        self.cancel_reason: str | None = None
        self._on_heartbeat = on_heartbeat
        self._cancelled = threading.Event()

    def heartbeat(self, details: Any = None) -> None:
        """Report liveness (and ``details``); raises CancelledError once cancellation came."""
        if details is not None:
            self.last_heartbeat_details = details
        if self._on_heartbeat is not None:
            self._on_heartbeat(details)
        if self._cancelled.is_set():
            raise asyncio.CancelledError(self.cancel_reason or "activity cancelled")

    def cancel(self, reason: str) -> None:
        """Mark the attempt cancelled (the worker does this when a cancel notice arrives)."""
        self.cancel_reason = reason
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested."""
        return self._cancelled.is_set()

    @contextmanager
    def bind(self) -> Iterator[None]:
        """Make this the current attempt for the code run inside the block (and for tasks
        and ``contextvars`` copies made there)."""
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)


def _require() -> ActivityContext:
    context = _current.get(None)
    if context is None:
        raise RuntimeError(
            "not inside an activity: activity.info()/heartbeat() work only in code that an "
            "aion worker runs as an activity (or inside ActivityContext(...).bind())"
        )
    return context


def info() -> ActivityInfo:
    """The attempt being run (raises RuntimeError outside an activity)."""
    return _require().info


def heartbeat(details: Any = None) -> None:
    """Tell the engine this attempt is alive, with optional JSON ``details`` that a later
    attempt sees in ``info().heartbeat_details``. Needed when the activity has a
    ``heartbeat_timeout``; cheap to call often (the worker throttles what it sends). Raises
    ``asyncio.CancelledError`` once the activity's cancellation has been requested."""
    _require().heartbeat(details)


def is_cancelled() -> bool:
    """Whether cancellation of this attempt has been requested."""
    return _require().cancelled
