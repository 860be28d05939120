"""Queries: answered from a run's state, never changing its history.

DESIGN: "Queries go to the owning engine as commands and are answered on aion.replies from
the workflow's state, without touching its history". A ``QueryWorkflow`` appends no event,
and its command id is not remembered (asking again is asking again). Which state answers:

- the open run (the default, or ``run_id`` naming it): its live coroutine, rebuilt by replay
  if it was evicted (and kept resident after, as any command's would be);
- a blocked run has no code that runs: user queries are answered ``BLOCKED`` with its reason,
  the built-in ones from the engine's state;
- a closed run: its code replayed against the whole history the query carries (the API reads
  it from its views: the engine keeps only a closed run's start and terminal); without one,
  ``RUN_CLOSED``.

User handlers (``@workflow.query``) run read-only: ``ctx`` refuses what would decide or draw,
the sandbox refuses I/O, and a handler that awaits anything is refused (see
:func:`_call_handler`). The built-in queries ``__stack_trace`` and ``__waiting_on`` describe
where the code is suspended and what the run waits for (:func:`waiting_on`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Final

from aion._workflow import running_code
from aion_common.domain import (
    BUILTIN_QUERIES,
    STACK_TRACE_QUERY,
    WAITING_ON_QUERY,
    ChildWorkflowScheduled,
    Event,
    EventBatch,
    InvalidInput,
    NonDeterminism,
    Payload,
    QueryAnswer,
    QueryStatus,
    QueryWorkflow,
    WorkflowMoved,
    WorkflowStarted,
    outcome_of,
)
from aion_engine import _context as sdk
from aion_engine import _sandbox
from aion_engine._executor import Executor, execution_timeout_timer_id, failure_of
from aion_engine._replay import replay_run
from aion_engine._state import RunState, WorkflowState
from aion_engine.versions import Missing, Versions

__all__ = ["Live", "answer", "expired", "waiting_on"]

Live = Callable[[WorkflowState, RunState], Executor | NonDeterminism | Missing | None]
"""The open run's live code (resident, or rebuilt by replay), or why there is none."""

_READ_ONLY: Final = (
    "query handlers are read-only: return the workflow's state without awaiting, sleeping, "
    "starting children or activities, continuing as new, drawing ctx.random()/ctx.uuid4() "
    "or doing I/O"
)
_NO_LOOP = "no running event loop"
_ASYNCIO = "an asyncio awaitable"


def expired(cmd: QueryWorkflow, wall_now: datetime) -> bool:
    """Whether nobody waits for ``cmd``'s answer any more (the service drops such queries:
    an engine back from an outage would otherwise replay runs for queries long given up)."""
    return cmd.deadline < wall_now


def answer(
    cmd: QueryWorkflow,
    state: WorkflowState | None,
    now: datetime,
    *,
    live: Live,
    versions: Versions,
) -> QueryAnswer:
    """The answer to ``cmd`` from ``state`` (or from the history it carries)."""
    reply = _Reply(cmd, now, 0 if state is None else state.last_seq)
    try:
        args = _arguments(cmd)
    except InvalidInput as err:
        return reply.error(QueryStatus.INVALID, str(err))
    run = None if state is None else state.open_run
    if state is not None and run is not None and cmd.run_id in (None, run.run_id):
        return _ask_open(reply, state, run, args, live)
    if cmd.history is not None:
        return _ask_replay(reply, cmd.history, args, versions)
    if state is None:
        return reply.error(QueryStatus.NOT_FOUND, f"workflow {cmd.workflow_id!r} does not exist")
    latest = state.run.run_id if state.run is not None else None
    asked = cmd.run_id or latest
    return reply.error(
        QueryStatus.RUN_CLOSED,
        f"run {asked!r} of workflow {cmd.workflow_id!r} is not open: a closed run is queried "
        "by replaying its history (the API sends it)",
        run_id=asked,
    )


class _Reply:
    """Builds the answers to one query."""

    def __init__(self, cmd: QueryWorkflow, now: datetime, last_seq: int) -> None:
        self.cmd = cmd
        self.now = now
        self.last_seq = last_seq
        self.replayed = False

    def ok(self, run_id: str, value: object, known: tuple[str, ...]) -> QueryAnswer:
        try:
            result = Payload.from_json(value)
        except InvalidInput as err:
            return self.error(
                QueryStatus.FAILED,
                f"query {self.cmd.name!r} returned something that is not JSON: {err}",
                run_id=run_id,
                known=known,
            )
        return self._answer(QueryStatus.ANSWERED, "", run_id, result, known)

    def error(
        self,
        status: QueryStatus,
        message: str,
        *,
        run_id: str | None = None,
        known: tuple[str, ...] = (),
    ) -> QueryAnswer:
        return self._answer(status, message, run_id, None, known)

    def _answer(
        self,
        status: QueryStatus,
        message: str,
        run_id: str | None,
        result: Payload | None,
        known: tuple[str, ...],
    ) -> QueryAnswer:
        return QueryAnswer(
            command_id=self.cmd.command_id,
            workflow_id=self.cmd.workflow_id,
            name=self.cmd.name,
            status=status,
            message=message,
            answered_at=self.now,
            run_id=run_id,
            result=result,
            known_queries=known,
            replayed=self.replayed,
            last_seq=self.last_seq,
        )


def _arguments(cmd: QueryWorkflow) -> list[Any]:
    try:
        args = cmd.args.to_json()
    except ValueError as err:
        raise InvalidInput(f"query arguments are not JSON: {err}") from err
    if not isinstance(args, list):
        raise InvalidInput(
            f"query arguments must be a JSON array (the handler's positional arguments), "
            f"got {type(args).__name__}"
        )
    return args


def _ask_open(
    reply: _Reply, state: WorkflowState, run: RunState, args: list[Any], live: Live
) -> QueryAnswer:
    name, run_id = reply.cmd.name, run.run_id
    if run.blocked is not None:
        if name in BUILTIN_QUERIES:
            return _builtin(reply, run, None, closed=False)
        return reply.error(
            QueryStatus.BLOCKED,
            f"run {run_id!r} is blocked: {run.blocked}; its code cannot answer queries until "
            "it is moved to code that replays it (aion run move), or it is terminated",
            run_id=run_id,
        )
    executor = live(state, run)
    if not isinstance(executor, Executor):
        return reply.error(
            QueryStatus.CANNOT_REPLAY,
            f"run {run_id!r}'s code cannot be rebuilt to answer: {_problem(executor)}",
            run_id=run_id,
        )
    if name in BUILTIN_QUERIES:
        return _builtin(reply, run, executor, closed=False)
    return _call_handler(reply, executor, run_id, args)


def _ask_replay(
    reply: _Reply, history: EventBatch, args: list[Any], versions: Versions
) -> QueryAnswer:
    """Rebuild a closed run from ``history`` and ask its code."""
    reply.replayed = True
    events = history.events
    cmd = reply.cmd
    started = events[0]
    problem = _whole_closed_run(cmd, events)
    if problem is not None or not isinstance(started, WorkflowStarted):
        return reply.error(QueryStatus.INVALID, f"the history given {problem}")
    reply.last_seq = events[-1].seq
    run_id = started.run_id
    version = started.package_version
    for event in events:
        if isinstance(event, WorkflowMoved):
            version = event.package_version
    fn = versions.workflow(started.workflow_type, version)
    if isinstance(fn, Missing):
        return reply.error(
            QueryStatus.CANNOT_REPLAY,
            f"run {run_id!r} cannot be replayed here: {fn.reason}",
            run_id=run_id,
        )
    try:
        executor = replay_run(fn, events)
    except NonDeterminism as err:
        return reply.error(
            QueryStatus.CANNOT_REPLAY,
            f"run {run_id!r} does not replay on its code: {err.detail}",
            run_id=run_id,
        )
    if cmd.name in BUILTIN_QUERIES:
        return _builtin(reply, None, executor, closed=True, run_id=run_id)
    return _call_handler(reply, executor, run_id, args)


def _whole_closed_run(cmd: QueryWorkflow, events: tuple[Event, ...]) -> str | None:
    """Why ``events`` are not one whole closed run of ``cmd``'s workflow, or None."""
    first = events[0]
    if not isinstance(first, WorkflowStarted):
        return f"starts with {type(first).__name__}, not WorkflowStarted"
    if cmd.run_id is not None and first.run_id != cmd.run_id:
        return f"is of run {first.run_id!r}, not of run {cmd.run_id!r}"
    if first.workflow_id != cmd.workflow_id:
        return f"is of workflow {first.workflow_id!r}"
    if any(event.run_id != first.run_id for event in events):
        return "holds events of more than one run"
    if outcome_of(events[-1]) is None:
        return "does not end with the run's terminal event"
    return None


def _problem(found: NonDeterminism | Missing | None) -> str:
    match found:
        case Missing(reason=reason):
            return reason
        case NonDeterminism(detail=detail):
            return f"its replay diverges from its history: {detail}"
        case _:
            return "it is blocked"


def _call_handler(reply: _Reply, executor: Executor, run_id: str, args: list[Any]) -> QueryAnswer:
    """Run the handler read-only: ``ctx`` in query mode, I/O refused, no await allowed."""
    name = reply.cmd.name
    known = tuple(sorted(executor.queries))
    handler = executor.queries.get(name)
    if handler is None:
        listed = ", ".join(known) if known else "none yet"
        return reply.error(
            QueryStatus.UNKNOWN_QUERY,
            f"run {run_id!r} has no query {name!r}; the queries its code has registered so "
            f"far: {listed} (built in: {', '.join(BUILTIN_QUERIES)})",
            run_id=run_id,
            known=known,
        )
    bad_args = _bind(handler, args)
    if bad_args is not None:
        return reply.error(
            QueryStatus.INVALID,
            f"query {name!r} {bad_args}",
            run_id=run_id,
            known=known,
        )
    ctx = executor.ctx
    ctx._begin_query(name)
    value: object = None
    failure: BaseException | None = None
    awaited: object = None
    with _sandbox.guard() as guard, running_code(None):
        try:
            value = handler(*args)
            if inspect.iscoroutine(value):
                value, awaited = _run_without_awaiting(value)
        except sdk.QueryViolation:
            pass  # recorded by ctx
        except Exception as err:  # noqa: BLE001 - any error the handler raises is its answer
            failure = err
    violation = ctx._end_query()
    refused = _refusal(violation, guard.violation, awaited, failure)
    if refused is not None:
        return reply.error(
            QueryStatus.REFUSED,
            f"query handler {name!r} {refused}: {_READ_ONLY}",
            run_id=run_id,
            known=known,
        )
    if failure is not None:
        error = failure_of(failure)
        return reply.error(
            QueryStatus.FAILED,
            f"query handler {name!r} raised {error.message}\n{error.traceback}".rstrip(),
            run_id=run_id,
            known=known,
        )
    return reply.ok(run_id, value, known)


def _bind(handler: Callable[..., Any], args: list[Any]) -> str | None:
    """Why ``handler`` cannot take ``args``, or None (None too when it has no signature)."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args)
    except TypeError as err:
        return f"takes {signature}; called with {len(args)} argument(s): {err}"
    return None


def _run_without_awaiting(coro: Coroutine[Any, Any, Any]) -> tuple[object, object]:
    """An ``async def`` handler's value if it returns without awaiting; else what it
    awaited (the coroutine is closed)."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return stop.value, None
    coro.close()
    return None, yielded if yielded is not None else _ASYNCIO


def _refusal(
    violation: str | None,
    sandbox: BaseException | None,
    awaited: object,
    failure: BaseException | None,
) -> str | None:
    if violation is not None:
        return f"called ctx.{violation}()"
    if sandbox is not None:
        return f"did I/O ({sandbox})"
    if awaited is not None:
        return f"awaited {awaited if awaited is _ASYNCIO else repr(awaited)}"
    if isinstance(failure, RuntimeError) and _NO_LOOP in str(failure):
        return f"awaited {_ASYNCIO}"
    return None


def _builtin(
    reply: _Reply,
    run: RunState | None,
    executor: Executor | None,
    *,
    closed: bool,
    run_id: str | None = None,
) -> QueryAnswer:
    found_id = run.run_id if run is not None else run_id
    assert found_id is not None
    if closed or run is None:
        view: dict[str, Any] = {
            "run_id": found_id,
            "status": "CLOSED",
            "blocked_reason": None,
            "stack": [],
            "waiting_on": [],
        }
    else:
        view = waiting_on(run, executor)
    if reply.cmd.name == STACK_TRACE_QUERY:
        return reply.ok(found_id, view["stack"], ())
    assert reply.cmd.name == WAITING_ON_QUERY
    return reply.ok(found_id, view, ())


def waiting_on(run: RunState, executor: Executor | None) -> dict[str, Any]:
    """What the open ``run`` waits for now, as JSON: its status (``RUNNING`` or ``BLOCKED``
    with the reason), the ``stack`` its code is suspended in (outermost first), and under
    ``waiting_on`` one item per thing outstanding — open children, activities, the signal
    and timer the code waits for, the execution timeout — the one the code's ``await`` is
    on first, marked ``awaited``."""
    op = None if executor is None else executor.waiting
    timer = None if executor is None else executor.waiting_timer
    items: list[dict[str, Any]] = []
    if isinstance(op, sdk.WaitSignalOp):
        deadline = run.timers.get(timer) if timer is not None else None
        items.append(
            {
                "kind": "signal",
                "awaited": True,
                "name": op.name,
                "deadline": None if deadline is None else _iso(deadline.fire_at),
            }
        )
    timeout_timer = execution_timeout_timer_id(run.started.workflow_id, run.run_id)
    for timer_id, scheduled in run.timers.items():
        if timer_id == timeout_timer:
            purpose = "execution timeout"
        elif timer_id == timer and isinstance(op, sdk.SleepOp):
            purpose = "sleep"
        elif executor is None:
            purpose = "timer"
        else:
            continue  # a signal wait's deadline (shown with it), or one nobody waits for
        items.append(
            {
                "kind": "timer",
                "awaited": purpose == "sleep",
                "timer_id": timer_id,
                "purpose": purpose,
                "fire_at": _iso(scheduled.fire_at),
            }
        )
    for child_id, child in run.open_children.items():
        items.append(
            {
                "kind": "child",
                "awaited": op == sdk.ChildResultOp(child_id),
                "workflow_id": child_id,
                "workflow_type": child.child_workflow_type,
                "since": _iso(
                    child.recorded_at  # a child carried in at a continue-as-new: since then
                    if isinstance(child, ChildWorkflowScheduled)
                    else run.started.recorded_at
                ),
            }
        )
    for activity_id, activity in run.activities.items():
        error = activity.last_error
        items.append(
            {
                "kind": "activity",
                "awaited": op == sdk.ActivityResultOp(activity_id),
                "activity_id": activity_id,
                "activity_type": activity.activity_type,
                "attempt": activity.attempt,
                "state": activity.status,
                "since": _iso(activity.scheduled.recorded_at),
                "next_retry_at": None if activity.retry_at is None else _iso(activity.retry_at),
                "last_error": None if error is None else error.message,
                "last_heartbeat_at": (
                    None if activity.last_heartbeat_at is None else _iso(activity.last_heartbeat_at)
                ),
            }
        )
    items.sort(key=lambda item: not item["awaited"])  # stable: the awaited one first
    return {
        "run_id": run.run_id,
        "status": "BLOCKED" if run.blocked is not None else "RUNNING",
        "blocked_reason": run.blocked,
        "stack": [] if executor is None else executor.stack(),
        "waiting_on": items,
    }


def _iso(at: datetime) -> str:
    return at.isoformat()
