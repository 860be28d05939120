"""Read endpoints: list, describe, history, tree, registry and the long-polled result."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from aion_common.domain import validate_id
from aion_common.kafka import partition_for
from aion_projector.api._endings import Bell
from aion_projector.api._models import (
    ArchivedHistoryOut,
    ArchivedIncarnationOut,
    Description,
    HistoryEventOut,
    HistoryPage,
    RefusalList,
    RefusalOut,
    RegistryOut,
    RegistryPage,
    ResultOut,
    SummaryOut,
    TreeOut,
    WorkflowList,
    json_value,
)
from aion_projector.api._paths import WORKFLOW
from aion_projector.api._problems import PROBLEM_MEDIA_TYPE, ProblemError
from aion_projector.api._state import ApiState, state
from aion_projector.archive import read_history
from aion_projector.changes import RunClosing
from aion_projector.queries import (
    HistoryEntry,
    RunView,
    WorkflowDescription,
    WorkflowFilter,
    child_tree,
    command_applied,
    describe,
    history,
    list_workflows,
    refusal,
    refusals,
    registry,
    result_run,
    run_status,
)
from aion_projector.schema import RunStatus

__all__ = [
    "CURSOR_PATTERN",
    "MAX_LIST",
    "MAX_WAIT",
    "engine_absence",
    "router",
    "views_caught_up",
]

CURSOR_PATTERN = "^[A-Za-z0-9_=-]+$"

MAX_LIST = 500
MAX_HISTORY = 1000
MAX_DEPTH = 10
MAX_WAIT = 60.0
MAX_REFUSALS = 100
# After a run's ending is on the log, the projector writes it to the views within a few
# milliseconds: read them again after 2, 4, 8 … 128 ms, then go back to waiting.
_CATCH_UP_FIRST_S = 0.002
_CATCH_UP_LAST_S = 0.128
# How long after a result answered from the log a read of that workflow may wait for the views
# to hold it: the projector follows within milliseconds, but a stack just started (its group
# still joining) or a busy machine can hold it back for seconds.
_VIEWS_BEHIND_MAX_S = 15.0

router = APIRouter(prefix="/v1", tags=["workflows"])
State = Annotated[ApiState, Depends(state)]
WorkflowId = Annotated[str, Path(min_length=1, max_length=255, description="Workflow id.")]


async def _not_found(st: ApiState, workflow_id: str) -> ProblemError:
    """The 404 for ``workflow_id``; when the engine refused a command to it (a start of an
    unknown type, say), the detail says so and the problem carries the newest refusal."""
    async with st.sessions() as session:
        newest = await refusals(session, workflow_id, limit=1)
    detail = f"workflow {workflow_id!r} is not in the views"
    if not newest:
        return ProblemError(404, "not-found", detail)
    found = RefusalOut.of(newest[0])
    what = "its start" if found.command_type == "StartWorkflow" else f"a {found.command_type}"
    detail = f"{detail}; {what} was refused: {found.code}: {found.reason}"
    return ProblemError(404, "not-found", detail, refusal=found)


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
    id_prefix: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024, pattern=CURSOR_PATTERN)] = None,
    before: Annotated[str | None, Query(max_length=1024, pattern=CURSOR_PATTERN)] = None,
) -> WorkflowList:
    """Keyset pagination: pass the answer's ``next_cursor`` as ``cursor`` for the next page
    (older workflows), or its ``prev_cursor`` as ``before`` to go back. With ``id_prefix`` the
    list holds the ids starting with it, in id order."""
    if id_prefix is not None:
        validate_id(id_prefix, what="id prefix")
    where = WorkflowFilter(
        workflow_type=workflow_type,
        status=None if status is None else status.value,
        parent_workflow_id=parent,
        started_from=_utc(started_from),
        started_before=_utc(started_before),
        id_prefix=id_prefix,
    )
    async with st.sessions() as session:
        page = await list_workflows(
            session, where, limit=limit, after_cursor=cursor, before_cursor=before
        )
    return WorkflowList(
        items=[SummaryOut.of(s) for s in page.items],
        next_cursor=page.next_cursor,
        prev_cursor=page.prev_cursor,
    )


async def _describe(st: ApiState, workflow_id: str) -> WorkflowDescription | None:
    async with st.sessions() as session:
        return await describe(session, workflow_id)


@router.get(WORKFLOW, summary="Describe a workflow")
async def describe_route(st: State, workflow_id: WorkflowId) -> Description:
    """Status, current run, the run chain (oldest first), and children with their outcomes."""
    validate_id(workflow_id)
    await views_caught_up(st, workflow_id)
    found = await _describe(st, workflow_id)
    if found is None:
        raise await _not_found(st, workflow_id)
    return Description.of(found)


@router.get(f"{WORKFLOW}/history", summary="A workflow's history")
async def history_route(
    st: State,
    workflow_id: WorkflowId,
    from_seq: Annotated[int, Query(ge=1, le=2**62)] = 1,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 200,
) -> HistoryPage:
    """Events from ``from_seq`` on, across every run; 404 if the workflow is unknown."""
    validate_id(workflow_id)
    await views_caught_up(st, workflow_id)
    async with st.sessions() as session:
        entries = await history(session, workflow_id, from_seq=from_seq, limit=limit)
        missing = not entries and await describe(session, workflow_id) is None
    if missing:
        raise await _not_found(st, workflow_id)
    more = len(entries) == limit
    return HistoryPage(
        workflow_id=workflow_id,
        events=[HistoryEventOut.of(e) for e in entries],
        next_from_seq=entries[-1].seq + 1 if more else None,
    )


@router.get(f"{WORKFLOW}/archived-history", summary="A purged workflow's archived history")
async def archived_history_route(st: State, workflow_id: WorkflowId) -> ArchivedHistoryOut:
    """Every purged incarnation of the id the archive holds (retention ran out: the views
    deleted it after archiving); 404 when there is none, or no archive is configured."""
    validate_id(workflow_id)
    archive = st.archive
    if archive is None:
        raise ProblemError(
            404, "not-found", "no archive is configured (AION_ARCHIVE): purged histories are gone"
        )
    found = await asyncio.to_thread(read_history, archive, workflow_id)
    if not found:
        raise ProblemError(404, "not-found", f"workflow {workflow_id!r} has no archived history")
    return ArchivedHistoryOut(
        workflow_id=workflow_id,
        incarnations=[
            ArchivedIncarnationOut(
                purged_at=item.purged_at,
                location=item.location,
                events=[
                    HistoryEventOut.of(
                        HistoryEntry(**{k: e[k] for k in HistoryEntry.__dataclass_fields__})
                    )
                    for e in item.events
                ],
            )
            for item in found
        ],
    )


@router.get(f"{WORKFLOW}/tree", summary="A workflow's child tree")
async def tree_route(
    st: State,
    workflow_id: WorkflowId,
    depth: Annotated[int, Query(ge=0, le=MAX_DEPTH)] = 3,
) -> TreeOut:
    """The workflow and the children its runs scheduled, ``depth`` levels down."""
    validate_id(workflow_id)
    await views_caught_up(st, workflow_id)
    async with st.sessions() as session:
        root = await child_tree(session, workflow_id, depth=depth)
    if root is None:
        raise await _not_found(st, workflow_id)
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


@router.get(f"{WORKFLOW}/refusals", summary="Commands the engine refused")
async def refusals_route(
    st: State,
    workflow_id: WorkflowId,
    limit: Annotated[int, Query(ge=1, le=MAX_REFUSALS)] = 20,
) -> RefusalList:
    """Commands sent to ``workflow_id`` that the engine refused (a start of an unknown type,
    a signal to a closed workflow, …), newest first. The workflow need not exist: an empty
    list is not an error."""
    validate_id(workflow_id)
    async with st.sessions() as session:
        found = await refusals(session, workflow_id, limit=limit)
    return RefusalList(workflow_id=workflow_id, items=[RefusalOut.of(r) for r in found])


def _refused(found: RefusalOut) -> ProblemError:
    return ProblemError(
        409,
        "command-refused",
        f"{found.code}: {found.reason}",
        refusal=found,
    )


def _pending(workflow_id: str, reason: str | None) -> ResultOut:
    return ResultOut(
        workflow_id=workflow_id, run_id=None, status="PENDING", closed=False, pending_reason=reason
    )


def _closed(status: str) -> bool:
    """Ended for good: not running, not blocked, not continued into a next run."""
    return not RunStatus(status).is_open and status != RunStatus.CONTINUED_AS_NEW


def _result(workflow_id: str, run: RunView | RunClosing) -> ResultOut:
    closed = _closed(run.status)
    blocked = run.status == RunStatus.BLOCKED
    return ResultOut(
        workflow_id=workflow_id,
        run_id=run.run_id,
        status=RunStatus.RUNNING if run.status == RunStatus.CONTINUED_AS_NEW else run.status,
        closed=closed,
        result=json_value(run.result) if closed else None,
        error_message=run.error_message if closed or blocked else None,
        error_details=json_value(run.error_details) if closed else None,
        error_type=run.error_type if closed or blocked else None,
        error_traceback=run.error_traceback if closed or blocked else None,
    )


@router.get(
    f"{WORKFLOW}/result",
    summary="Wait for a workflow's result",
    responses={
        202: {"model": ResultOut, "description": "Still running when the wait ended."},
        409: {
            "description": "The engine refused the command named by ``command_id``.",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
    },
)
async def result_route(
    *,
    st: State,
    response: Response,
    workflow_id: WorkflowId,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait.")] = 0,
    command_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="The start (or other) command this wait is about: its refusal is "
            "answered as a 409 ``command-refused`` problem, and a result is only given once "
            "the command took effect.",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="The run a start opened (the ``run_id`` its 202 answered): the result "
            "is that run's chain's (its last run after any continue-as-new), never another "
            "start's of the same workflow id.",
        ),
    ] = None,
) -> ResultOut:
    """Long-poll until the workflow's run closes or ``wait`` seconds pass: answered within
    milliseconds of the run's end, from its ending on the events topic, which the API follows
    (a describe, history or tree read of the workflow after that waits until the views hold
    it too; lists follow within milliseconds).

    200: closed — ``status`` is COMPLETED, FAILED, CANCELLED, TERMINATED or TIMED_OUT, with
    ``result`` or ``error_message``/``error_details``/``error_type``/``error_traceback``. 202:
    still running after the wait (``closed`` false, ``Retry-After`` set): ask again; answered
    at once, with ``error_message`` the reason, when the run is BLOCKED (its code cannot go on
    until it is moved to code that can). 404: the views have not seen the workflow by the end
    of the wait (a workflow just started may take a moment to appear, so waiting covers that);
    if the engine refused a command to it, the problem says so.

    The run is the current one, or with ``run_id`` the chain that run began. With
    ``command_id``: 409 ``command-refused`` (the problem's ``refusal`` holds the code and
    reason) as soon as the engine's refusal of that command is in the views; 202 with status
    ``PENDING`` while the command has neither taken effect nor been refused — with
    ``pending_reason`` saying why when no engine is running for the workflow's partition.
    """
    validate_id(workflow_id)
    for given, what in ((command_id, "command id"), (run_id, "run id")):
        if given is not None:
            validate_id(given, what=what)
    deadline = time.monotonic() + wait
    pace = _Pace(interval=st.poll_interval)
    followed = set() if run_id is None else {run_id}  # the runs whose ending answers
    with _bell(st, workflow_id) as rang:  # listening before the first read: no ring missed
        while True:
            found, run = await _outcome(st, workflow_id, command_id, run_id)
            if run is not None and _closed(run.status):
                return _result(workflow_id, run)
            if run is not None and run.status == RunStatus.BLOCKED:
                break  # waiting on would wait for an operator
            if run is not None:
                followed.add(run.run_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not rang.is_set() and await pace.pause(rang, remaining):
                continue
            if rang.is_set():  # answered from the ending itself, before the views have it
                # No run asked for and none in the views yet: the run that ended is the one.
                anyone = command_id is None and run_id is None and run is None
                ended = _ending(rang.take(), followed, anyone=anyone)
                if ended is not None and st.endings is not None:
                    st.endings.answered(workflow_id, ended.run_id)
                    return _result(workflow_id, ended)
                pace.catch_up = _CATCH_UP_FIRST_S  # the views follow the log: read them again
    if not found and command_id is None and run_id is None:
        raise await _not_found(st, workflow_id)
    response.status_code = 202
    response.headers["Retry-After"] = "1"
    if run is None:
        return _pending(workflow_id, await engine_absence(st, workflow_id))
    return _result(workflow_id, run)


@dataclass(slots=True)
class _Pace:
    """When a result long-poll reads the views again: after a ring it cannot answer from,
    at once and then after 2, 4 … 128 ms (``catch_up``); otherwise at the next ring or
    ``interval`` (doubling to 1 s), whichever comes first."""

    interval: float
    catch_up: float | None = None

    async def pause(self, rang: Bell, remaining: float) -> bool:
        """Wait until the next read; True when it is a catch-up read (no ring waited for)."""
        if self.catch_up is not None and self.catch_up <= _CATCH_UP_LAST_S:
            await asyncio.sleep(min(self.catch_up, remaining))
            self.catch_up *= 2
            return True
        self.catch_up = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rang.wait(), min(self.interval, remaining))
        self.interval = min(self.interval * 2, 1.0)
        return False


def _bell(st: ApiState, workflow_id: str) -> contextlib.AbstractContextManager[Bell]:
    """Rung when a run of ``workflow_id`` ends or blocks on the log (one that never rings
    without the API's reader of run endings)."""
    if st.endings is None:
        return contextlib.nullcontext(Bell())
    return st.endings.watch(workflow_id)


def _ending(
    endings: list[RunClosing | None], followed: set[str], *, anyone: bool
) -> RunClosing | None:
    """The ending that answers the wait: a run in ``followed`` (or with ``anyone``, any run)
    ended for good. A continue-as-new of a followed run has its next run followed."""
    for closing in endings:
        if closing is None or not (anyone or closing.run_id in followed):
            continue
        if closing.next_run_id is not None:
            followed.add(closing.next_run_id)
            continue
        return closing
    return None


async def views_caught_up(st: ApiState, workflow_id: str) -> None:
    """Wait until the views hold the run of ``workflow_id`` a result was answered for from
    the log (decision 64), at most until ``_VIEWS_BEHIND_MAX_S`` after that answer: a
    describe, a history or a tree read right after ``result()`` then shows the run closed
    too."""
    if st.endings is None:
        return
    ahead = st.endings.ahead_of_views(workflow_id)
    if ahead is None:
        return
    run_id, answered_at = ahead
    deadline = answered_at + _VIEWS_BEHIND_MAX_S
    pause = _CATCH_UP_FIRST_S
    while time.monotonic() < deadline:
        async with st.sessions() as session:
            status = await run_status(session, workflow_id, run_id)
        if status is not None and not RunStatus(status).is_open:
            break
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)
    st.endings.caught_up(workflow_id)


async def _outcome(
    st: ApiState, workflow_id: str, command_id: str | None, run_id: str | None
) -> tuple[bool, RunView | None]:
    """Whether the views hold the workflow, and the run the caller waits for (None while the
    command has not taken effect); raises the 409 problem if the engine refused
    ``command_id``."""

    async def read(session: AsyncSession) -> tuple[bool, RunView | None]:
        if command_id is not None:
            refused = await refusal(session, workflow_id, command_id)
            if refused is not None:
                raise _refused(RefusalOut.of(refused))
        found, run = await result_run(session, workflow_id, run_id)
        if run is None or run_id is not None:
            return found, run
        if command_id is not None and not await command_applied(session, workflow_id, command_id):
            return found, None
        return found, run

    if st.one_hop is not None:
        return await st.one_hop.run(read)
    async with st.sessions() as session:
        return await read(session)


async def engine_absence(st: ApiState, workflow_id: str) -> str | None:
    """``no engine is running for partition N`` when the engine group holds nobody for the
    workflow's partition (as far as Kafka said within the cluster view's cache), else None."""
    if st.cluster is None:
        return None
    snapshot = await st.cluster.snapshot()
    if snapshot.error is not None:
        return None  # cannot tell: say nothing rather than something wrong
    partition = partition_for(workflow_id, st.settings.partitions)
    owner = next((p.owner for p in snapshot.partitions if p.partition == partition), None)
    if owner is not None:
        return None
    return f"no engine is running for partition {partition}"
