"""The read side of the views: what the HTTP API and the CLI show.

Lists use keyset pagination, newest first by ``(started_at, workflow_id)``: the cursor is that
pair, opaque to callers, so a page costs an index range scan however deep it is.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Table, and_, bindparam, collate, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from aion_common.domain import InvalidInput
from aion_projector.schema import (
    OPEN_ACTIVITY_STATES,
    ActivityRow,
    ChildLinkRow,
    HeldEventRow,
    HistoryRow,
    OffsetRow,
    RefusalRow,
    RegistryRow,
    WorkflowRow,
    WorkflowRunRow,
)

__all__ = [
    "ChildView",
    "HistoryEntry",
    "Refusal",
    "RegistryEntry",
    "RunView",
    "TreeNode",
    "WorkflowDescription",
    "WorkflowFilter",
    "WorkflowPage",
    "WorkflowSummary",
    "child_tree",
    "command_applied",
    "command_run",
    "describe",
    "history",
    "list_workflows",
    "prefix_bound",
    "refusal",
    "refusals",
    "registry",
    "result_run",
    "run_status",
    "stored_offsets",
]

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowFilter:
    """Which workflows a list returns; every criterion given must hold."""

    workflow_type: str | None = None
    status: str | None = None
    parent_workflow_id: str | None = None
    started_from: datetime | None = None
    started_before: datetime | None = None
    id_prefix: str | None = None
    """Ids starting with this; the list is then ordered by id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowSummary:
    """A workflow as lists show it: its current run and where it stands."""

    workflow_id: str
    current_run_id: str
    first_run_id: str
    workflow_type: str
    status: str
    parent_workflow_id: str | None
    parent_run_id: str | None
    started_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    last_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowPage:
    """One page of a list, and the cursors of the next (older) and previous (newer) pages;
    None where there is no such page."""

    items: tuple[WorkflowSummary, ...]
    next_cursor: str | None
    prev_cursor: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    """One run in a workflow's chain; ``result`` and details are JSON text."""

    run_id: str
    first_run_id: str
    workflow_type: str
    status: str
    previous_run_id: str | None
    next_run_id: str | None
    package_version: str
    started_at: datetime
    closed_at: datetime | None
    result: str | None
    error_message: str | None
    error_details: str | None
    error_type: str | None = None
    error_traceback: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildView:
    """A child a run scheduled, and its outcome once recorded."""

    parent_run_id: str
    child_workflow_id: str
    child_workflow_type: str
    state: str
    scheduled_at: datetime
    closed_at: datetime | None
    result: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityView:
    """An open activity of the current run: its attempt, last failure, next retry, heartbeat."""

    activity_id: str
    activity_type: str
    task_queue: str
    state: str
    attempt: int
    scheduled_at: datetime
    started_at: datetime | None
    worker: str | None
    last_heartbeat_at: datetime | None
    heartbeat_details: str | None
    last_error_type: str | None
    last_error_message: str | None
    next_attempt_at: datetime | None
    timeout: str | None
    cancel_requested: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowDescription:
    """Everything ``describe`` shows: summary, the run chain oldest first, children, held
    events, and the current run's open activities (the oldest :data:`PENDING_ACTIVITIES_SHOWN`)."""

    summary: WorkflowSummary
    runs: tuple[RunView, ...]
    children: tuple[ChildView, ...]
    held_events: int
    pending_activities: tuple[ActivityView, ...] = ()

    @property
    def current_run(self) -> RunView:
        """The run the summary points at."""
        return next(r for r in self.runs if r.run_id == self.summary.current_run_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    """One stored event: envelope columns and its own fields (``body``, JSON text)."""

    seq: int
    run_id: str
    event_type: str
    recorded_at: datetime
    command_id: str
    body: str

    def fields(self) -> Any:
        """The body decoded."""
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeNode:
    """A workflow and the children its runs scheduled, to the depth asked for."""

    workflow_id: str
    workflow_type: str | None
    status: str | None
    children: list[TreeNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryEntry:
    """Which engine instance owns a run, on which partition, running which package version."""

    workflow_id: str
    run_id: str
    workflow_type: str
    package_version: str
    status: str
    partition: int
    owner: str
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A command the engine refused: its code (``RefusalCode``) and why."""

    workflow_id: str
    command_id: str
    command_type: str
    code: str
    reason: str
    refused_at: datetime


def _t(model: Any) -> Table:
    table: Table = model.__table__
    return table


_W, _RUNS, _HIST = _t(WorkflowRow), _t(WorkflowRunRow), _t(HistoryRow)
_CHILD, _REG, _HELD, _OFF = _t(ChildLinkRow), _t(RegistryRow), _t(HeldEventRow), _t(OffsetRow)
_ACT = _t(ActivityRow)
PENDING_ACTIVITIES_SHOWN = 100
_REFUSED = _t(RefusalRow)


_ID_ORDER = "i"


def _encode_cursor(summary: WorkflowSummary, *, by_id: bool) -> str:
    key = [_ID_ORDER, summary.workflow_id] if by_id else [summary.started_at.isoformat()]
    raw = orjson.dumps(key if by_id else [*key, summary.workflow_id])
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_cursor(cursor: str, *, by_id: bool) -> tuple[datetime | None, str]:
    """``(started_at, workflow_id)``; ``started_at`` is None for an id-ordered list's cursor."""
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if by_id and len(key) == 2 and key[0] == _ID_ORDER:  # noqa: PLR2004 - [kind, id]
            return None, str(key[1])
        if not by_id and len(key) == 2 and key[0] != _ID_ORDER:  # noqa: PLR2004 - [time, id]
            return datetime.fromisoformat(key[0]), str(key[1])
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as err:
        raise InvalidInput(f"cursor {cursor[:40]!r} is not one this API issued") from err
    raise InvalidInput(f"cursor {cursor[:40]!r} is not one this API issued for this list")


def _summary(row: Any) -> WorkflowSummary:
    return WorkflowSummary(**{c.name: row[c.name] for c in _W.columns})


def prefix_bound(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (code point order),
    or None when there is none (a prefix of U+10FFFF characters only)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < sys.maxunicode:
            return "".join(chars) + chr(last + 1)
    return None


def _id_column(session: AsyncSession) -> Any:
    """``workflow_id`` compared in code point order: SQLite's BINARY collation already is;
    PostgreSQL's may be a locale's, so it compares ``COLLATE "C"`` (indexed, migration 0003)."""
    if session.get_bind().dialect.name == "postgresql":
        return collate(_W.c.workflow_id, "C")
    return _W.c.workflow_id


def _conditions(where: WorkflowFilter, id_column: Any) -> list[Any]:
    conditions: list[Any] = []
    if where.workflow_type is not None:
        conditions.append(_W.c.workflow_type == where.workflow_type)
    if where.status is not None:
        conditions.append(_W.c.status == where.status)
    if where.parent_workflow_id is not None:
        conditions.append(_W.c.parent_workflow_id == where.parent_workflow_id)
    if where.started_from is not None:
        conditions.append(_W.c.started_at >= where.started_from)
    if where.started_before is not None:
        conditions.append(_W.c.started_at < where.started_before)
    if where.id_prefix:
        conditions.append(id_column >= where.id_prefix)
        upper = prefix_bound(where.id_prefix)
        if upper is not None:
            conditions.append(id_column < upper)
    return conditions


async def list_workflows(
    session: AsyncSession,
    where: WorkflowFilter | None = None,
    *,
    limit: int = 100,
    after_cursor: str | None = None,
    before_cursor: str | None = None,
) -> WorkflowPage:
    """A page of workflows matching ``where``: newest started first, or by id when the filter
    has an ``id_prefix`` (a range scan of the id index, not a walk of the time index).

    Keyset pagination both ways: ``after_cursor`` (a page's ``next_cursor``) continues towards
    older workflows, ``before_cursor`` (its ``prev_cursor``) goes back. Nothing is counted.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1 to {MAX_PAGE}, got {limit}")
    if after_cursor is not None and before_cursor is not None:
        raise InvalidInput("give after_cursor or before_cursor, not both")
    where = where or WorkflowFilter()
    by_id = bool(where.id_prefix)
    id_column = _id_column(session)
    backwards = before_cursor is not None
    cursor = before_cursor if backwards else after_cursor
    beyond = None
    if cursor is not None:
        started, workflow_id = _decode_cursor(cursor, by_id=by_id)
        beyond = _beyond(started, workflow_id, id_column, backwards=backwards)
        where = _within_cursor(where, started, backwards=backwards)
    conditions = _conditions(where, id_column)
    if beyond is not None:
        conditions.append(beyond)
    # Newest first (by time), or ascending ids; walked the other way to go back a page.
    if by_id:
        order = [id_column.desc() if backwards else id_column.asc()]
    elif backwards:
        order = [_W.c.started_at.asc(), _W.c.workflow_id.asc()]
    else:
        order = [_W.c.started_at.desc(), _W.c.workflow_id.desc()]
    statement = select(_W).where(*conditions).order_by(*order).limit(limit + 1)
    rows = [_summary(r) for r in (await session.execute(statement)).mappings()]
    more = len(rows) > limit
    items = rows[:limit]
    if backwards:
        items.reverse()
    if not items:
        return WorkflowPage(items=(), next_cursor=None, prev_cursor=None)
    newer = more if backwards else cursor is not None
    older = backwards or more
    return WorkflowPage(
        items=tuple(items),
        next_cursor=_encode_cursor(items[-1], by_id=by_id) if older else None,
        prev_cursor=_encode_cursor(items[0], by_id=by_id) if newer else None,
    )


def _within_cursor(
    where: WorkflowFilter, started: datetime | None, *, backwards: bool
) -> WorkflowFilter:
    """Drop the time bound the cursor's own bound makes redundant: given both, SQLite ranged
    the index on the filter's bound and walked from there to the cursor (a time-range page
    90,000 rows deep took twice the first)."""
    if started is None:
        return where
    if backwards and where.started_from is not None and started >= where.started_from:
        return dataclasses.replace(where, started_from=None)
    if not backwards and where.started_before is not None and started < where.started_before:
        return dataclasses.replace(where, started_before=None)
    return where


def _beyond(started: datetime | None, workflow_id: str, id_column: Any, *, backwards: bool) -> Any:
    """Rows after the cursor's row in the list's order (before it when ``backwards``)."""
    if started is None:
        return id_column < workflow_id if backwards else id_column > workflow_id
    # The bare bound on started_at comes first so that the index range starts at the cursor:
    # measured on SQLite, the OR alone was walked from the index's end (a page 90,000 rows
    # deep took 4x the first's).
    if backwards:
        return and_(
            _W.c.started_at >= started,
            or_(_W.c.started_at > started, _W.c.workflow_id > workflow_id),
        )
    return and_(
        _W.c.started_at <= started,
        or_(_W.c.started_at < started, _W.c.workflow_id < workflow_id),
    )


async def describe(session: AsyncSession, workflow_id: str) -> WorkflowDescription | None:
    """The workflow's summary, run chain and children, or None if the views do not hold it."""
    row = (await session.execute(select(_W).where(_W.c.workflow_id == workflow_id))).mappings()
    found = row.first()
    if found is None:
        return None
    runs = await session.execute(
        select(_RUNS).where(_RUNS.c.workflow_id == workflow_id).order_by(_RUNS.c.start_seq)
    )
    children = await session.execute(
        select(_CHILD)
        .where(_CHILD.c.parent_workflow_id == workflow_id)
        .order_by(_CHILD.c.scheduled_seq)
    )
    held = await session.execute(select(_HELD.c.seq).where(_HELD.c.workflow_id == workflow_id))
    activities = await session.execute(
        select(_ACT)
        .where(
            _ACT.c.workflow_id == workflow_id,
            _ACT.c.run_id == found["current_run_id"],
            _ACT.c.state.in_(OPEN_ACTIVITY_STATES),
        )
        .order_by(_ACT.c.scheduled_seq)
        .limit(PENDING_ACTIVITIES_SHOWN)
    )
    run_fields = RunView.__dataclass_fields__
    child_fields = ChildView.__dataclass_fields__
    activity_fields = ActivityView.__dataclass_fields__
    return WorkflowDescription(
        summary=_summary(found),
        runs=tuple(RunView(**{k: r[k] for k in run_fields}) for r in runs.mappings()),
        children=tuple(ChildView(**{k: r[k] for k in child_fields}) for r in children.mappings()),
        held_events=len(held.all()),
        pending_activities=tuple(
            ActivityView(**{k: r[k] for k in activity_fields}) for r in activities.mappings()
        ),
    )


async def history(
    session: AsyncSession, workflow_id: str, *, from_seq: int = 1, limit: int = 1000
) -> list[HistoryEntry]:
    """Up to ``limit`` events of ``workflow_id`` from ``from_seq`` on, in seq order."""
    if not 1 <= limit <= MAX_PAGE * 10:
        raise InvalidInput(f"limit must be 1 to {MAX_PAGE * 10}, got {limit}")
    statement = (
        select(_HIST)
        .where(_HIST.c.workflow_id == workflow_id, _HIST.c.seq >= from_seq)
        .order_by(_HIST.c.seq)
        .limit(limit)
    )
    fields = HistoryEntry.__dataclass_fields__
    result = await session.execute(statement)
    return [HistoryEntry(**{k: r[k] for k in fields}) for r in result.mappings()]


async def child_tree(session: AsyncSession, workflow_id: str, *, depth: int = 3) -> TreeNode | None:
    """``workflow_id`` and its descendants to ``depth`` levels: one query per level."""
    root_row = (
        (await session.execute(select(_W).where(_W.c.workflow_id == workflow_id)))
        .mappings()
        .first()
    )
    if root_row is None:
        return None
    root = TreeNode(
        workflow_id=workflow_id, workflow_type=root_row["workflow_type"], status=root_row["status"]
    )
    level = {workflow_id: root}
    seen = {workflow_id}
    for _ in range(depth):
        if not level:
            break
        statement = (
            select(
                _CHILD.c.parent_workflow_id,
                _CHILD.c.child_workflow_id,
                _W.c.workflow_type,
                _W.c.status,
                _CHILD.c.child_workflow_type,
            )
            .outerjoin(_W, _W.c.workflow_id == _CHILD.c.child_workflow_id)
            .where(_CHILD.c.parent_workflow_id.in_(sorted(level)))
            .order_by(_CHILD.c.parent_workflow_id, _CHILD.c.scheduled_seq)
        )
        next_level: dict[str, TreeNode] = {}
        for parent_id, child_id, wtype, status, scheduled_type in await session.execute(statement):
            if child_id in seen:
                continue
            seen.add(child_id)
            node = TreeNode(
                workflow_id=child_id, workflow_type=wtype or scheduled_type, status=status
            )
            level[parent_id].children.append(node)
            next_level[child_id] = node
        level = next_level
    return root


async def registry(
    session: AsyncSession,
    *,
    workflow_id: str | None = None,
    partition: int | None = None,
    owner: str | None = None,
    status: str | None = None,
    limit: int = 1000,
) -> list[RegistryEntry]:
    """Registry rows matching every criterion given, by workflow id and run id."""
    conditions: list[Any] = []
    if workflow_id is not None:
        conditions.append(_REG.c.workflow_id == workflow_id)
    if partition is not None:
        conditions.append(_REG.c.partition == partition)
    if owner is not None:
        conditions.append(_REG.c.owner == owner)
    if status is not None:
        conditions.append(_REG.c.status == status)
    statement = (
        select(_REG).where(*conditions).order_by(_REG.c.workflow_id, _REG.c.run_id).limit(limit)
    )
    fields = RegistryEntry.__dataclass_fields__
    result = await session.execute(statement)
    return [RegistryEntry(**{k: r[k] for k in fields}) for r in result.mappings()]


async def stored_offsets(
    session: AsyncSession, topic: str | None = None
) -> dict[tuple[str, int], int]:
    """The next offset to consume per (topic, partition), as last committed with the views."""
    statement = select(_OFF.c.topic, _OFF.c.partition, _OFF.c.next_offset)
    if topic is not None:
        statement = statement.where(_OFF.c.topic == topic)
    result = await session.execute(statement)
    return {(t, p): o for t, p, o in result}


_REFUSAL_FIELDS = tuple(Refusal.__dataclass_fields__)


async def refusals(session: AsyncSession, workflow_id: str, *, limit: int = 100) -> list[Refusal]:
    """The newest ``limit`` refusals of commands to ``workflow_id``, newest first."""
    statement = (
        select(*(_REFUSED.c[k] for k in _REFUSAL_FIELDS))
        .where(_REFUSED.c.workflow_id == workflow_id)
        .order_by(_REFUSED.c.refused_at.desc(), _REFUSED.c.command_id)
        .limit(limit)
    )
    result = await session.execute(statement)
    return [Refusal(**dict(r)) for r in result.mappings()]


# A result wait's reads (one per ring of a long-poll) are built once, not per call: building
# a statement and its cache key cost about what running it on SQLite does.
_REFUSAL_OF = select(*(_REFUSED.c[k] for k in _REFUSAL_FIELDS)).where(
    _REFUSED.c.workflow_id == bindparam("workflow_id"),
    _REFUSED.c.command_id == bindparam("command_id"),
)
_COMMAND_RUN = (
    select(_HIST.c.run_id)
    .where(_HIST.c.workflow_id == bindparam("workflow_id"))
    .where(_HIST.c.command_id == bindparam("command_id"))
    .order_by(_HIST.c.seq)
    .limit(1)
)
_CURRENT_RUN = (
    select(_RUNS)
    .where(_RUNS.c.workflow_id == bindparam("workflow_id"))
    .join(_W, and_(_W.c.workflow_id == _RUNS.c.workflow_id, _W.c.current_run_id == _RUNS.c.run_id))
)
_LAST_RUN_OF_CHAIN = (
    select(_RUNS)
    .where(_RUNS.c.workflow_id == bindparam("workflow_id"))
    .where(_RUNS.c.first_run_id == bindparam("first_run_id"))
    .order_by(_RUNS.c.start_seq.desc())
    .limit(1)
)


async def refusal(session: AsyncSession, workflow_id: str, command_id: str) -> Refusal | None:
    """The refusal of command ``command_id`` to ``workflow_id``, if the engine refused it."""
    params = {"workflow_id": workflow_id, "command_id": command_id}
    row = (await session.execute(_REFUSAL_OF, params)).mappings().first()
    return None if row is None else Refusal(**dict(row))


async def command_applied(session: AsyncSession, workflow_id: str, command_id: str) -> bool:
    """Whether an event of ``workflow_id`` was recorded for command ``command_id``."""
    return await command_run(session, workflow_id, command_id) is not None


async def command_run(session: AsyncSession, workflow_id: str, command_id: str) -> str | None:
    """The run of the first event recorded for command ``command_id``, or None if none was."""
    params = {"workflow_id": workflow_id, "command_id": command_id}
    found = (await session.execute(_COMMAND_RUN, params)).first()
    return None if found is None else str(found[0])


async def result_run(
    session: AsyncSession, workflow_id: str, first_run_id: str | None = None
) -> tuple[bool, RunView | None]:
    """What a result wait reads: whether the views hold the run asked for, and that run —
    the current run of ``workflow_id``, or with ``first_run_id`` the last run of the chain that
    run began. One query where a describe makes five."""
    if first_run_id is None:
        result = await session.execute(_CURRENT_RUN, {"workflow_id": workflow_id})
    else:
        params = {"workflow_id": workflow_id, "first_run_id": first_run_id}
        result = await session.execute(_LAST_RUN_OF_CHAIN, params)
    found = result.mappings().first()
    if found is None:
        return False, None
    return True, RunView(**{k: found[k] for k in RunView.__dataclass_fields__})


async def run_status(session: AsyncSession, workflow_id: str, run_id: str) -> str | None:
    """The status of run ``run_id`` of ``workflow_id``, or None if the views do not hold it."""
    statement = select(_RUNS.c.status).where(
        _RUNS.c.workflow_id == workflow_id, _RUNS.c.run_id == run_id
    )
    found = (await session.execute(statement)).first()
    return None if found is None else str(found[0])
