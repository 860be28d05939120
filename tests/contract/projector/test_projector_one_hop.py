"""The projector's one-hop transactions (decision 58), SQLite files only: the projection's own
writers, run on a synchronous connection in one worker-thread hop, commit or roll back whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from projector_script import Script, completed, started
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from aion_common.domain import InvariantViolation
from aion_projector.changes import ApplyStats
from aion_projector.database import connect, migrate, session_factory
from aion_projector.one_hop import OneHopTransactions, one_hop_url
from aion_projector.projection import Projection
from aion_projector.queries import stored_offsets

TOPIC = "aion.events"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:////tmp/v.db", "sqlite+pysqlite:////tmp/v.db"),
        ("sqlite+aiosqlite:///views.db", "sqlite+pysqlite:///views.db"),
        ("sqlite+aiosqlite://", None),
        ("sqlite+aiosqlite:///:memory:", None),
        ("sqlite+aiosqlite:///file:v?mode=memory&uri=true", None),
        ("postgresql+asyncpg://u:p@h/db", None),
    ],
)
def test_only_sqlite_files_take_the_one_hop_path(url: str, expected: str | None) -> None:
    assert one_hop_url(url) == expected


async def test_a_projection_applied_in_one_hop_is_committed_with_its_offsets(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'views.db'}"
    engine = connect(url)
    await migrate(engine)
    target = one_hop_url(url)
    assert target is not None
    one_hop = OneHopTransactions(target)
    s = Script(partition=2)
    story = [s.batch("w-1", started("r-1")), s.batch("w-1", completed({"ok": 1}))]

    async def work(session: AsyncSession) -> ApplyStats:
        return await Projection(TOPIC).apply(session, story)

    try:
        stats = await one_hop.run(work)
        assert stats.applied == 2
        async with session_factory(engine)() as session:
            assert await stored_offsets(session, TOPIC) == {(TOPIC, 2): len(story)}
            status = await session.execute(text("SELECT status FROM workflows"))
            assert status.scalar_one() == "COMPLETED"
    finally:
        one_hop.dispose()
        await engine.dispose()


async def test_an_error_rolls_the_whole_transaction_back(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'views.db'}"
    engine = connect(url)
    await migrate(engine)
    one_hop = OneHopTransactions(one_hop_url(url) or "")
    s = Script()
    batch = s.batch("w-1", started("r-1"))

    async def work(session: AsyncSession) -> ApplyStats:
        await Projection(TOPIC).apply(session, [batch])
        raise InvariantViolation("refused after the writes")

    try:
        with pytest.raises(InvariantViolation):
            await one_hop.run(work)
        async with session_factory(engine)() as session:
            assert await stored_offsets(session, TOPIC) == {}
            count = await session.execute(text("SELECT count(*) FROM history"))
            assert count.scalar_one() == 0
    finally:
        one_hop.dispose()
        await engine.dispose()


async def test_work_that_suspends_is_refused(tmp_path: Path) -> None:
    one_hop = OneHopTransactions(f"sqlite+pysqlite:///{tmp_path / 'views.db'}")

    async def work(session: AsyncSession) -> None:
        await asyncio.sleep(0)

    try:
        with pytest.raises(RuntimeError, match="suspended"):
            await one_hop.run(work)
    finally:
        one_hop.dispose()
