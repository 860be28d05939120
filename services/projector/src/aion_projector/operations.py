"""Read views for operators (the web UI's registry and dead-letter pages): workflow types,
package versions of open runs, the newest refusals and dead letters.

Every list here is bounded and walks an index: keyset cursors, never a count or an offset.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Table, and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from aion_common.domain import InvalidInput
from aion_projector.queries import MAX_PAGE, HistoryEntry, Refusal
from aion_projector.schema import (
    OPEN_STATUSES,
    DeadLetterRow,
    HistoryRow,
    RefusalRow,
    RegistryRow,
)

__all__ = [
    "DeadLetterEntry",
    "DeadLetterPage",
    "EngineVersions",
    "PendingTimer",
    "RefusalPage",
    "VersionCount",
    "dead_letters",
    "open_run_versions",
    "open_runs_on",
    "pending_timers",
    "recent_refusals",
    "run_history",
    "versions_by_engine",
    "workflow_types",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionCount:
    """How many open runs of ``workflow_type`` run on ``package_version``."""

    workflow_type: str
    package_version: str
    open_runs: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterEntry:
    """A dead-lettered record and why (``source_*``/``error`` None if its headers were bad)."""

    topic: str
    partition: int
    offset: int
    dead_lettered_at: datetime
    workflow_id: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    error: str | None
    reason: str
    value_size: int
    preview: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterPage:
    """Dead letters newest first; ``next_cursor`` continues with older ones."""

    items: tuple[DeadLetterEntry, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalPage:
    """Refusals of every workflow, newest first; ``next_cursor`` continues with older ones."""

    items: tuple[Refusal, ...]
    next_cursor: str | None


def _t(model: Any) -> Table:
    table: Table = model.__table__
    return table


_REG, _REFUSED, _DLQ = _t(RegistryRow), _t(RefusalRow), _t(DeadLetterRow)
_HIST = _t(HistoryRow)


async def workflow_types(session: AsyncSession, *, limit: int = 200) -> list[str]:
    """The distinct workflow types in the views, in order, at most ``limit``.

    A loose index scan (one index probe per type, a recursive CTE that SQLite and PostgreSQL
    both run), so it costs the number of types, not of workflows.
    """
    sql = text(
        "WITH RECURSIVE types(name, n) AS ("
        " SELECT MIN(workflow_type), 1 FROM workflows"
        " UNION ALL"
        " SELECT (SELECT MIN(workflow_type) FROM workflows WHERE workflow_type > types.name),"
        " n + 1 FROM types WHERE types.name IS NOT NULL AND n < :limit"
        ") SELECT name FROM types WHERE name IS NOT NULL"
    )
    result = await session.execute(sql, {"limit": limit})
    return [name for (name,) in result]


async def open_run_versions(session: AsyncSession, *, limit: int = 500) -> list[VersionCount]:
    """Package versions the open runs are on, by type: what the engines must have loaded.

    Read from the registry's (status, type, version) index alone.
    """
    count = func.count().label("open_runs")
    statement = (
        select(_REG.c.workflow_type, _REG.c.package_version, count)
        .where(_REG.c.status.in_(OPEN_STATUSES))
        .group_by(_REG.c.workflow_type, _REG.c.package_version)
        .order_by(_REG.c.workflow_type, _REG.c.package_version)
        .limit(limit)
    )
    result = await session.execute(statement)
    return [VersionCount(workflow_type=t, package_version=v, open_runs=n) for t, v, n in result]


def _encode(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode("ascii")


def _decode(cursor: str, size: int) -> list[Any]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as err:
        raise InvalidInput(f"cursor {cursor[:40]!r} is not one this API issued") from err
    if not isinstance(key, list) or len(key) != size:
        raise InvalidInput(f"cursor {cursor[:40]!r} is not one this API issued for this list")
    return key


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1 to {MAX_PAGE}, got {limit}")


async def recent_refusals(
    session: AsyncSession, *, limit: int = 50, after_cursor: str | None = None
) -> RefusalPage:
    """Refused commands of every workflow, newest first (keyset on the refused-at index)."""
    _check_limit(limit)
    columns = [_REFUSED.c[k] for k in Refusal.__dataclass_fields__]
    conditions: list[Any] = []
    if after_cursor is not None:
        at, workflow_id, command_id = _decode(after_cursor, 3)
        try:
            when = datetime.fromisoformat(str(at))
        except ValueError as err:
            raise InvalidInput(f"cursor {after_cursor[:40]!r} is not one this API issued") from err
        conditions.append(_REFUSED.c.refused_at <= when)  # the index range starts here
        conditions.append(
            or_(
                _REFUSED.c.refused_at < when,
                _REFUSED.c.workflow_id < workflow_id,
                and_(_REFUSED.c.workflow_id == workflow_id, _REFUSED.c.command_id < command_id),
            )
        )
    statement = (
        select(*columns)
        .where(*conditions)
        .order_by(
            _REFUSED.c.refused_at.desc(),
            _REFUSED.c.workflow_id.desc(),
            _REFUSED.c.command_id.desc(),
        )
        .limit(limit + 1)
    )
    rows = [Refusal(**dict(r)) for r in (await session.execute(statement)).mappings()]
    items = tuple(rows[:limit])
    last = items[-1] if len(rows) > limit else None
    cursor = (
        None
        if last is None
        else _encode([last.refused_at.isoformat(), last.workflow_id, last.command_id])
    )
    return RefusalPage(items=items, next_cursor=cursor)


async def dead_letters(
    session: AsyncSession, *, limit: int = 50, after_cursor: str | None = None
) -> DeadLetterPage:
    """Dead letters newest first (keyset on the dead-lettered-at index)."""
    _check_limit(limit)
    conditions: list[Any] = []
    if after_cursor is not None:
        at, partition, offset = _decode(after_cursor, 3)
        try:
            when = datetime.fromisoformat(str(at))
            partition, offset = int(partition), int(offset)
        except (ValueError, TypeError) as err:
            raise InvalidInput(f"cursor {after_cursor[:40]!r} is not one this API issued") from err
        conditions.append(_DLQ.c.dead_lettered_at <= when)  # the index range starts here
        conditions.append(
            or_(
                _DLQ.c.dead_lettered_at < when,
                _DLQ.c.partition < partition,
                and_(_DLQ.c.partition == partition, _DLQ.c.offset < offset),
            )
        )
    statement = (
        select(_DLQ)
        .where(*conditions)
        .order_by(_DLQ.c.dead_lettered_at.desc(), _DLQ.c.partition.desc(), _DLQ.c.offset.desc())
        .limit(limit + 1)
    )
    fields = DeadLetterEntry.__dataclass_fields__
    result = (await session.execute(statement)).mappings()
    rows = [DeadLetterEntry(**{k: r[k] for k in fields}) for r in result]
    items = tuple(rows[:limit])
    last = items[-1] if len(rows) > limit else None
    cursor = (
        None
        if last is None
        else _encode([last.dead_lettered_at.isoformat(), last.partition, last.offset])
    )
    return DeadLetterPage(items=items, next_cursor=cursor)


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingTimer:
    """A timer a run scheduled that has not fired."""

    timer_id: str
    fire_at: str
    scheduled_seq: int


async def run_history(
    session: AsyncSession, workflow_id: str, run_id: str, *, from_seq: int = 1, limit: int = 500
) -> list[HistoryEntry]:
    """Up to ``limit`` events of one run of ``workflow_id`` from ``from_seq`` on, in seq order."""
    _check_limit(limit)
    statement = (
        select(_HIST)
        .where(
            _HIST.c.workflow_id == workflow_id,
            _HIST.c.seq >= from_seq,
            _HIST.c.run_id == run_id,
        )
        .order_by(_HIST.c.seq)
        .limit(limit)
    )
    fields = HistoryEntry.__dataclass_fields__
    result = await session.execute(statement)
    return [HistoryEntry(**{k: r[k] for k in fields}) for r in result.mappings()]


async def pending_timers(
    session: AsyncSession, workflow_id: str, run_id: str
) -> list[PendingTimer]:
    """Timers run ``run_id`` scheduled and that have not fired, by when they were scheduled."""
    statement = (
        select(_HIST.c.seq, _HIST.c.event_type, _HIST.c.body)
        .where(
            _HIST.c.workflow_id == workflow_id,
            _HIST.c.run_id == run_id,
            _HIST.c.event_type.in_(("TimerScheduled", "TimerFired")),
        )
        .order_by(_HIST.c.seq)
    )
    scheduled: dict[str, PendingTimer] = {}
    for seq, event_type, body in await session.execute(statement):
        fields = orjson.loads(body)
        timer_id = str(fields.get("timer_id"))
        if event_type == "TimerScheduled":
            scheduled[timer_id] = PendingTimer(
                timer_id=timer_id, fire_at=str(fields.get("fire_at")), scheduled_seq=seq
            )
        else:
            scheduled.pop(timer_id, None)
    return list(scheduled.values())


async def open_runs_on(
    session: AsyncSession, workflow_type: str, package_version: str, *, limit: int = 10
) -> tuple[int, list[str]]:
    """How many open runs of ``workflow_type`` are on ``package_version``, and the workflow
    ids of up to ``limit`` of them (what a package deletion is refused with)."""
    where = (
        _REG.c.status.in_(OPEN_STATUSES),
        _REG.c.workflow_type == workflow_type,
        _REG.c.package_version == package_version,
    )
    total = await session.scalar(select(func.count()).select_from(_REG).where(*where))
    ids = await session.scalars(
        select(_REG.c.workflow_id).where(*where).order_by(_REG.c.workflow_id).limit(limit)
    )
    return int(total or 0), list(ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineVersions:
    """The versions one engine instance runs open runs on (it has their code loaded)."""

    owner: str
    versions: tuple[VersionCount, ...]


async def versions_by_engine(session: AsyncSession, *, limit: int = 500) -> list[EngineVersions]:
    """Per engine instance (the writer of the run's last batch), the package versions of the
    open runs it owns, by type."""
    count = func.count().label("open_runs")
    statement = (
        select(_REG.c.owner, _REG.c.workflow_type, _REG.c.package_version, count)
        .where(_REG.c.status.in_(OPEN_STATUSES))
        .group_by(_REG.c.owner, _REG.c.workflow_type, _REG.c.package_version)
        .order_by(_REG.c.owner, _REG.c.workflow_type, _REG.c.package_version)
        .limit(limit)
    )
    grouped: dict[str, list[VersionCount]] = {}
    for owner, workflow_type, version, runs in await session.execute(statement):
        grouped.setdefault(owner, []).append(
            VersionCount(workflow_type=workflow_type, package_version=version, open_runs=runs)
        )
    return [EngineVersions(owner=o, versions=tuple(v)) for o, v in grouped.items()]
