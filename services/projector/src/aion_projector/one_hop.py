"""SQLite transactions in one thread hop (decision 58).

The async SQLite driver (aiosqlite) runs every driver call — open a cursor, execute, fetch,
close, commit — on its own thread and wakes the event loop for each answer: about 26 hops
for the eight statements of a one-record transaction, which was 60 % of the projector's CPU
for it (measured: 4.8 ms → 1.9 ms per one-record transaction when the same statements run on
a plain ``sqlite3`` connection). :class:`OneHopTransactions` runs a whole transaction on a
synchronous pysqlite engine in a worker thread instead: one hop, and the statements run while
the event loop goes on fetching.

The work is the same coroutine code the async path runs (``Projection.apply`` and friends),
given a session whose ``execute`` never suspends, and driven to its end without an event loop;
work that does suspend (the archive written in a purge goes through ``asyncio.to_thread``) is
not for this path — the caller keeps those on the async engine. Errors are SQLAlchemy's own
(``sqlalchemy.exc``, the driver's error as ``orig``) and the transaction rolls back on any, as
on the async path; the projector's offsets in the same transaction keep it exactly-once.

Two users: the projector's writes, and the API's result wait, whose reads of the views (the
refusal, the run, whether the command took effect) run in one hop too when the database is an
SQLite file (``ApiState.one_hop``, wired by ``run_api``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from aion_projector.database import sqlite_pragmas

__all__ = ["OneHopTransactions", "one_hop_url"]

T = TypeVar("T")
Work = Callable[[AsyncSession], Coroutine[Any, Any, T]]


def one_hop_url(url: str) -> str | None:
    """The pysqlite URL for ``url`` when it names an SQLite *file*; None otherwise (another
    database, or an in-memory one a second engine would not share)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    return "sqlite+pysqlite://" + url.split("://", 1)[1]


class _Session:
    """The part of :class:`AsyncSession` the projection's writers use (Core statements only),
    over a sync connection: no ORM session in between, a third of the CPU per statement."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def in_transaction(self) -> bool:
        return True

    def get_bind(self) -> Engine:
        return self._connection.engine

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._connection.execute(*args, **kwargs)


class OneHopTransactions:
    """Runs transactions on an SQLite file through a synchronous engine, one thread hop each."""

    def __init__(self, url: str) -> None:
        """``url``: from :func:`one_hop_url`."""
        self._engine = create_engine(url)
        event.listen(self._engine, "connect", sqlite_pragmas)

    async def run(self, work: Work[T]) -> T:
        """Run ``work`` in one transaction (committed if it returns, rolled back if it raises)."""
        return await asyncio.to_thread(self._run, work)

    def _run(self, work: Work[T]) -> T:
        with self._engine.begin() as connection:
            return _drive(work(cast(AsyncSession, _Session(connection))))

    def dispose(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("work given to OneHopTransactions suspended; it must not await I/O")
