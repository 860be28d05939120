"""Read endpoints: list, describe, history, tree, registry and the long-polled result."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from aion_common.domain import validate_id
from aion_projector.api._models import (
    Description,
    HistoryEventOut,
    HistoryPage,
    RegistryOut,
    RegistryPage,
    ResultOut,
    SummaryOut,
    TreeOut,
    WorkflowList,
    json_value,
)
from aion_projector.api._problems import ProblemError
from aion_projector.api._state import ApiState, state
from aion_projector.queries import (
    WorkflowDescription,
    WorkflowFilter,
    child_tree,
    describe,
    history,
    list_workflows,
    registry,
)
from aion_projector.schema import RunStatus

__all__ = ["MAX_LIST", "MAX_WAIT", "router"]

MAX_LIST = 500
MAX_HISTORY = 1000
MAX_DEPTH = 10
MAX_WAIT = 60.0

router = APIRouter(prefix="/v1", tags=["workflows"])
State = Annotated[ApiState, Depends(state)]
WorkflowId = Annotated[str, Path(min_length=1, max_length=255, description="Workflow id.")]


def _not_found(workflow_id: str) -> ProblemError:
    return ProblemError(404, "not-found", f"workflow {workflow_id!r} is not in the views")


def _utc(value: datetime | None) -> datetime | None:
    """Times without a zone are taken as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.get("/workflows", summary="List workflows, newest started first")
async def list_route(
    *,
    st: State,
    workflow_type: Annotated[str | None, Query(alias="type", max_length=128)] = None,
    status: RunStatus | None = None,
    parent: Annotated[str | None, Query(max_length=255)] = None,
    started_from: datetime | None = None,
    started_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024, pattern="^[A-Za-z0-9_=-]+$")] = None,
) -> WorkflowList:
    """Keyset pagination: pass the answer's ``next_cursor`` as ``cursor`` for the next page."""
    where = WorkflowFilter(
        workflow_type=workflow_type,
        status=None if status is None else status.value,
        parent_workflow_id=parent,
        started_from=_utc(started_from),
        started_before=_utc(started_before),
    )
    async with st.sessions() as session:
        page = await list_workflows(session, where, limit=limit, after_cursor=cursor)
    return WorkflowList(items=[SummaryOut.of(s) for s in page.items], next_cursor=page.next_cursor)


async def _describe(st: ApiState, workflow_id: str) -> WorkflowDescription | None:
    async with st.sessions() as session:
        return await describe(session, workflow_id)


@router.get("/workflows/{workflow_id}", summary="Describe a workflow")
async def describe_route(st: State, workflow_id: WorkflowId) -> Description:
    """Status, current run, the run chain (oldest first), and children with their outcomes."""
    validate_id(workflow_id)
    found = await _describe(st, workflow_id)
    if found is None:
        raise _not_found(workflow_id)
    return Description.of(found)


@router.get("/workflows/{workflow_id}/history", summary="A workflow's history")
async def history_route(
    st: State,
    workflow_id: WorkflowId,
    from_seq: Annotated[int, Query(ge=1, le=2**62)] = 1,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 200,
) -> HistoryPage:
    """Events from ``from_seq`` on, across every run; 404 if the workflow is unknown."""
    validate_id(workflow_id)
    async with st.sessions() as session:
        entries = await history(session, workflow_id, from_seq=from_seq, limit=limit)
        if not entries and await describe(session, workflow_id) is None:
            raise _not_found(workflow_id)
    more = len(entries) == limit
    return HistoryPage(
        workflow_id=workflow_id,
        events=[HistoryEventOut.of(e) for e in entries],
        next_from_seq=entries[-1].seq + 1 if more else None,
    )


@router.get("/workflows/{workflow_id}/tree", summary="A workflow's child tree")
async def tree_route(
    st: State,
    workflow_id: WorkflowId,
    depth: Annotated[int, Query(ge=0, le=MAX_DEPTH)] = 3,
) -> TreeOut:
    """The workflow and the children its runs scheduled, ``depth`` levels down."""
    validate_id(workflow_id)
    async with st.sessions() as session:
        root = await child_tree(session, workflow_id, depth=depth)
    if root is None:
        raise _not_found(workflow_id)
    return TreeOut.of(root)


@router.get("/registry", summary="Which engine owns which run", tags=["registry"])
async def registry_route(
    *,
    st: State,
    workflow_id: Annotated[str | None, Query(max_length=255)] = None,
    partition: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    owner: Annotated[str | None, Query(max_length=255)] = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> RegistryPage:
    """Registry rows matching every filter given, by workflow id and run id."""
    async with st.sessions() as session:
        rows = await registry(
            session,
            workflow_id=workflow_id,
            partition=partition,
            owner=owner,
            status=None if status is None else status.value,
            limit=limit,
        )
    return RegistryPage(items=[RegistryOut.of(r) for r in rows])


def _result(workflow_id: str, found: WorkflowDescription) -> ResultOut:
    run = found.current_run
    closed = found.summary.status != RunStatus.RUNNING
    return ResultOut(
        workflow_id=workflow_id,
        run_id=run.run_id,
        status=found.summary.status,
        closed=closed,
        result=json_value(run.result) if closed else None,
        error_message=run.error_message if closed else None,
        error_details=json_value(run.error_details) if closed else None,
    )


@router.get(
    "/workflows/{workflow_id}/result",
    summary="Wait for a workflow's result",
    responses={202: {"model": ResultOut, "description": "Still running when the wait ended."}},
)
async def result_route(
    st: State,
    response: Response,
    workflow_id: WorkflowId,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait.")] = 0,
) -> ResultOut:
    """Long-poll the views until the workflow's current run closes or ``wait`` seconds pass.

    200: closed — ``status`` is COMPLETED, FAILED, CANCELLED or TIMED_OUT, with ``result`` or
    ``error_message``/``error_details``. 202: still running after the wait (``closed`` false,
    ``Retry-After`` set): ask again. 404: the views have not seen the workflow by the end of
    the wait (a workflow just started may take a moment to appear, so waiting covers that).
    """
    validate_id(workflow_id)
    deadline = time.monotonic() + wait
    interval = st.poll_interval
    while True:
        found = await _describe(st, workflow_id)
        if found is not None and found.summary.status != RunStatus.RUNNING:
            return _result(workflow_id, found)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, 1.0)
    if found is None:
        raise _not_found(workflow_id)
    response.status_code = 202
    response.headers["Retry-After"] = "1"
    return _result(workflow_id, found)
