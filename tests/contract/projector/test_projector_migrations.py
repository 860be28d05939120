"""Contract: the shipped migrations build exactly the schema the models describe, on every
backend, and reset/migrate are repeatable."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from aion_projector import migrate, reset
from aion_projector.schema import POSTGRESQL_ONLY_INDEXES, Base


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [
            change
            for change in compare_metadata(context, Base.metadata)
            if not (
                connection.dialect.name == "postgresql"
                and change[0] == "remove_index"
                and change[1].name in POSTGRESQL_ONLY_INDEXES
            )
        ]

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_migrate_and_reset_are_repeatable(engine: AsyncEngine) -> None:
    await migrate(engine)
    await reset(engine)
    await migrate(engine)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda c: set(c.dialect.get_table_names(c)))
    assert {t.name for t in Base.metadata.sorted_tables} <= names
