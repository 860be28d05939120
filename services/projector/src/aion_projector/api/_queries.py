"""Queries and "waiting on": asked of the engine that owns the workflow, answered over the
replies topic (see :mod:`._answers`).

``POST /v1/workflows/{id}/queries/{name}`` runs a query handler of the workflow's code;
``GET /v1/workflows/{id}/waiting`` asks the engine's built-in ``__waiting_on`` (what the open
run waits for, and the source line its code is suspended at).

An open run is asked as it is in the engine's memory. A closed run (the views say so, or the
engine answers ``RUN_CLOSED`` because the views lag behind it) is asked again with its whole
history, read from the views, which the engine replays: the engine keeps only a closed run's
start and terminal (decision 36).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query

from aion_common.codecs.event_json import decode_event
from aion_common.domain import (
    WAITING_ON_QUERY,
    Event,
    EventBatch,
    InvalidInput,
    Payload,
    PayloadTooLarge,
    QueryAnswer,
    QueryStatus,
    QueryWorkflow,
    validate_id,
    validate_query_name,
)
from aion_projector.api._models import QueryOut, QueryRequest, WaitingOut
from aion_projector.api._paths import SEGMENT, WORKFLOW
from aion_projector.api._problems import PROBLEM_MEDIA_TYPE, ProblemError
from aion_projector.api._state import ApiState, state
from aion_projector.operations import run_history
from aion_projector.queries import RunView, describe
from aion_projector.schema import RunStatus

__all__ = [
    "DEFAULT_QUERY_TIMEOUT",
    "MAX_QUERY_TIMEOUT",
    "ask",
    "query_args",
    "router",
    "waiting",
]

DEFAULT_QUERY_TIMEOUT: Final = 5.0
MAX_QUERY_TIMEOUT: Final = 60.0
_HISTORY_PAGE = 1000
_VIEW_POLL_S = 0.1

router = APIRouter(prefix="/v1", tags=["queries"])
State = Annotated[ApiState, Depends(state)]
WorkflowId = Annotated[str, Path(min_length=1, max_length=255, description="Workflow id.")]
QueryName = Annotated[str, Path(min_length=1, max_length=128, description="Query name.")]
Within = Annotated[
    float,
    Query(
        alias="timeout",
        gt=0,
        le=MAX_QUERY_TIMEOUT,
        description="Seconds to wait for the engine's answer.",
    ),
]

# How each answer that is not a result becomes a problem: (HTTP status, problem kind).
_PROBLEMS: Final = {
    QueryStatus.NOT_FOUND: (404, "not-found"),
    QueryStatus.UNKNOWN_QUERY: (404, "unknown-query"),
    QueryStatus.RUN_CLOSED: (409, "workflow-closed"),
    QueryStatus.BLOCKED: (409, "workflow-blocked"),
    QueryStatus.FAILED: (422, "query-failed"),
    QueryStatus.REFUSED: (422, "query-refused"),
    QueryStatus.CANNOT_REPLAY: (409, "cannot-replay"),
    QueryStatus.INVALID: (400, "invalid-input"),
}


async def ask(
    st: ApiState,
    workflow_id: str,
    name: str,
    args: list[Any],
    *,
    run_id: str | None = None,
    within: float = DEFAULT_QUERY_TIMEOUT,
) -> QueryAnswer:
    """Ask query ``name`` of the workflow's current run (or of ``run_id``), replaying a
    closed run from its history, waiting ``within`` seconds at most; raises the problem for
    anything but an answer."""
    validate_id(workflow_id)
    if run_id is not None:
        validate_id(run_id, what="run id")
    validate_query_name(name)
    if st.queries is None:
        raise ProblemError(503, "unavailable", "this API process does not ask queries")
    payload = Payload.from_json(args, limit=st.settings.payload_limit_bytes)
    deadline = time.monotonic() + within
    query = _Query(workflow_id, name, payload, run_id)
    closed = await _closed_run(st, workflow_id, run_id)
    answer = await _send(st, query, closed, deadline)
    if answer is not None and answer.status is QueryStatus.RUN_CLOSED and closed is None:
        # the engine has closed the run and the views have not caught up yet
        closed = await _wait_closed(st, workflow_id, answer.run_id or run_id, deadline)
        if closed is None:
            if run_id is not None and not await _known_run(st, workflow_id, run_id):
                raise ProblemError(
                    404, "not-found", f"workflow {workflow_id!r} has no run {run_id!r}"
                )
            raise ProblemError(
                409,
                "workflow-closed",
                f"{answer.message}; the views do not show that run closed yet: ask again",
            )
        answer = await _send(st, query, closed, deadline)
    if answer is None:
        raise ProblemError(
            504,
            "query-timeout",
            f"no engine answered query {name!r} of workflow {workflow_id!r} within "
            f"{within:g} s: the engine owning its partition may be down or taking the "
            "partition over (see /registry); ask again",
        )
    if answer.status is not QueryStatus.ANSWERED:
        status, kind = _PROBLEMS[answer.status]
        raise ProblemError(status, kind, answer.message, known_queries=answer.known_queries)
    return answer


async def _closed_run(st: ApiState, workflow_id: str, run_id: str | None) -> RunView | None:
    """The run asked about if the views hold it closed (its history can be replayed)."""
    async with st.sessions() as session:
        found = await describe(session, workflow_id)
    if found is None:
        return None
    run = (
        found.current_run
        if run_id is None
        else next((r for r in found.runs if r.run_id == run_id), None)
    )
    if run is None or RunStatus(run.status).is_open:
        return None
    return run


async def _known_run(st: ApiState, workflow_id: str, run_id: str) -> bool:
    async with st.sessions() as session:
        found = await describe(session, workflow_id)
    return found is not None and any(r.run_id == run_id for r in found.runs)


async def _wait_closed(
    st: ApiState, workflow_id: str, run_id: str | None, deadline: float
) -> RunView | None:
    """The run once the views show it closed (None if they do not before ``deadline``)."""
    while time.monotonic() < deadline:
        run = await _closed_run(st, workflow_id, run_id)
        if run is not None:
            return run
        await asyncio.sleep(_VIEW_POLL_S)
    return None


@dataclass(frozen=True, slots=True)
class _Query:
    workflow_id: str
    name: str
    args: Payload
    run_id: str | None


async def _send(
    st: ApiState, asked: _Query, closed: RunView | None, deadline: float
) -> QueryAnswer | None:
    """Send the query (with the history of ``closed``); its answer, None if none in time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    workflow_id = asked.workflow_id
    history = None if closed is None else await _history(st, workflow_id, closed.run_id)
    query = QueryWorkflow(
        command_id=str(uuid.uuid4()),
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        name=asked.name,
        args=asked.args,
        deadline=datetime.now(UTC) + timedelta(seconds=remaining),
        run_id=asked.run_id if closed is None else closed.run_id,
        history=history,
    )
    assert st.queries is not None
    try:
        return await st.queries.ask(query, remaining)
    except PayloadTooLarge as err:
        raise ProblemError(
            413,
            "payload-too-large",
            f"run {query.run_id!r} of workflow {workflow_id!r} is closed and its history is "
            f"too large to send to the engine for replaying ({err}); query its runs while "
            "they are open",
        ) from err


async def _history(st: ApiState, workflow_id: str, run_id: str) -> EventBatch:
    """Every event of a closed run, from the views."""
    events: list[Event] = []
    from_seq = 1
    async with st.sessions() as session:
        while True:
            page = await run_history(
                session, workflow_id, run_id, from_seq=from_seq, limit=_HISTORY_PAGE
            )
            events.extend(
                decode_event(
                    entry.event_type,
                    workflow_id=workflow_id,
                    run_id=entry.run_id,
                    seq=entry.seq,
                    recorded_at=entry.recorded_at,
                    command_id=entry.command_id,
                    body=entry.body,
                )
                for entry in page
            )
            if len(page) < _HISTORY_PAGE:
                break
            from_seq = page[-1].seq + 1
    if not events:
        raise ProblemError(404, "not-found", f"run {run_id!r} has no history in the views")
    return EventBatch(
        workflow_id=workflow_id, command_id=run_id, writer="api", events=tuple(events)
    )


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


_NO_ANSWER = _problem("``query-timeout``: no engine answered within the timeout.")


@router.post(
    f"{WORKFLOW}/queries/{{name:{SEGMENT}}}",
    summary="Query a workflow",
    responses={
        409: _problem("``workflow-blocked``, ``cannot-replay``, ``workflow-closed``."),
        504: _NO_ANSWER,
    },
)
async def query_route(
    st: State,
    workflow_id: WorkflowId,
    name: QueryName,
    body: Annotated[QueryRequest | None, Body()] = None,
) -> QueryOut:
    """Run query handler ``name`` (``@workflow.query``) of the workflow's current run, or of
    ``run_id``, with ``args`` as its positional arguments; its history is not changed. A
    closed run is answered by replaying its code. Problems: ``not-found`` (no such workflow
    or run), ``unknown-query`` (``known_queries`` lists those its code registered),
    ``query-refused`` (the handler awaited, decided or did I/O: handlers are read-only),
    ``query-failed`` (it raised), ``workflow-blocked``, ``cannot-replay``, ``query-timeout``
    (504: no engine answered in time)."""
    body = body or QueryRequest()
    answer = await ask(
        st,
        workflow_id,
        name,
        body.args,
        run_id=body.run_id,
        within=body.timeout or DEFAULT_QUERY_TIMEOUT,
    )
    return QueryOut.of(answer)


@router.get(
    f"{WORKFLOW}/waiting",
    summary="What a workflow waits on now",
    responses={409: _problem("``cannot-replay``."), 504: _NO_ANSWER},
)
async def waiting_route(
    st: State, workflow_id: WorkflowId, within: Within = DEFAULT_QUERY_TIMEOUT
) -> WaitingOut:
    """What the current run is blocked on right now — open children (id, type), timers (fire
    time), the signal it waits for (name, deadline), activities (type, attempt, state, next
    retry) — the one its code awaits first (``awaited``), and ``stack``: the source line each
    frame of its code is suspended at, outermost first. Asked of the engine (504
    ``query-timeout`` when none answers); a closed run waits on nothing."""
    return await waiting(st, workflow_id, within=within)


async def waiting(
    st: ApiState, workflow_id: str, *, within: float = DEFAULT_QUERY_TIMEOUT
) -> WaitingOut:
    """What the workflow's current run waits on (nothing once it closed: no engine asked)."""
    validate_id(workflow_id)
    async with st.sessions() as session:
        found = await describe(session, workflow_id)
    if found is not None and not RunStatus(found.summary.status).is_open:
        run = found.current_run
        return WaitingOut.closed(workflow_id, run.run_id, found.summary.status)
    answer = await ask(st, workflow_id, WAITING_ON_QUERY, [], within=within)
    return WaitingOut.of(workflow_id, answer)


def query_args(text: str) -> list[Any]:
    """Arguments typed in a form: a JSON array, or one JSON value (one argument); empty:
    none. :class:`InvalidInput` if it is not JSON."""
    if not text.strip():
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"the arguments are not JSON: {err}") from err
    return value if isinstance(value, list) else [value]
