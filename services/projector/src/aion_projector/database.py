"""Connecting to the views' database, and migrating it with the Alembic scripts shipped here.

``await migrate(engine)`` brings the schema to head on start (SQLite or PostgreSQL, async
drivers); ``await reset(engine)`` drops every projector table, offsets included, and migrates
again: the table half of ``--rebuild``, after which the consumer replays from offset zero.
"""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["connect", "migrate", "reset", "session_factory", "sqlite_pragmas"]

# Serialises concurrent migrations of one PostgreSQL database (two projectors starting at once).
_MIGRATION_LOCK = 0x6A10_0001


def connect(url: str, **options: Any) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL and a busy timeout for a reader beside us."""
    engine = create_async_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL, ``synchronous=NORMAL`` and a busy timeout on every new SQLite connection."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
    finally:
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (the read API returns plain data)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "aion_projector:migrations")
    config.attributes["connection"] = connection
    return config


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


def _upgrade(connection: Connection) -> None:
    _lock(connection)
    command.upgrade(_config(connection), "head")


def _downgrade_and_upgrade(connection: Connection) -> None:
    _lock(connection)
    config = _config(connection)
    command.downgrade(config, "base")
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the views' schema to the newest revision (idempotent)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def reset(engine: AsyncEngine) -> None:
    """Drop every view table and stored offset and recreate them empty, in one transaction."""
    async with engine.begin() as connection:
        await connection.run_sync(_downgrade_and_upgrade)
