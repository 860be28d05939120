"""Contract: a purge (retention ran out) archives the workflow's history and deletes every row
of it, on SQLite and PostgreSQL alike; the freed id starts again at seq 1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from projector_script import (
    TOPIC,
    Script,
    child_completed,
    child_scheduled,
    completed,
    dump,
    purged,
    signal,
    started,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aion_projector import Projection, describe, history, stored_offsets
from aion_projector.archive import Archive, DirectoryArchive, S3Archive, read_history

Sessions = async_sessionmaker[AsyncSession]


def _rows_naming(tables: dict[str, list[tuple[object, ...]]], workflow_id: str) -> list[str]:
    return [
        f"{name}: {row}"
        for name, rows in tables.items()
        for row in rows
        if workflow_id in row and name != "projector_offsets"
    ]


def _history_of(s: Script, workflow_id: str) -> list[tuple[int, int, object]]:
    return [
        s.batch(workflow_id, started("r1")),
        s.batch(workflow_id, child_scheduled("kid")),
        s.batch(workflow_id, signal()),
        s.batch(workflow_id, child_completed("kid", 1), completed({"done": True})),
    ]


async def test_a_purge_archives_the_history_and_deletes_every_row(
    sessions: Sessions, engine: AsyncEngine, tmp_path: Path
) -> None:
    archive = DirectoryArchive(tmp_path / "archive")
    projection = Projection(TOPIC, archive=archive)
    s = Script()
    deliveries = [*_history_of(s, "w/1"), *_history_of(s, "keep")]
    async with sessions() as session:
        await projection.apply(session, deliveries)
    before = await dump(engine)
    assert _rows_naming(before, "w/1")
    purge = s.batch("w/1", purged())
    async with sessions() as session:
        stats = await projection.apply(session, [purge])
    assert stats.purged == 1
    after = await dump(engine)
    assert _rows_naming(after, "w/1") == []
    assert _rows_naming(after, "keep") == _rows_naming(before, "keep")
    async with sessions() as session:
        assert await describe(session, "w/1") is None
        assert await stored_offsets(session) == {(TOPIC, 0): purge[1] + 1}
    (archived,) = read_history(archive, "w/1")
    assert [e["seq"] for e in archived.events] == [1, 2, 3, 4, 5, 6]
    assert archived.events[-1]["event_type"] == "WorkflowPurged"
    assert archived.events[0]["event_type"] == "WorkflowStarted"
    assert archived.purged_at == purge[2].events[0].recorded_at  # type: ignore[attr-defined]

    # the freed id starts a new history at seq 1, in the same apply as a re-delivered purge
    s.seqs["w/1"] = 0
    again = s.batch("w/1", started("r2"))
    async with sessions() as session:
        await projection.apply(session, [purge, again])
        assert [e.seq for e in await history(session, "w/1")] == [1]
        summary = await describe(session, "w/1")
        assert summary is not None
        assert summary.summary.current_run_id == "r2"
    # the re-delivered purge found no rows of the old incarnation: the archive is unchanged
    (still,) = read_history(archive, "w/1")
    assert len(still.events) == 6


@pytest.fixture(params=["directory", "s3"])
def any_archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    if request.param == "directory":
        yield DirectoryArchive(tmp_path / "archive")
        return
    yield from _s3_archive()


def _s3_archive() -> Iterator[Archive]:
    """An S3 bucket on moto's server (a real HTTP endpoint on 127.0.0.1)."""
    import os

    import boto3  # type: ignore[import-untyped]
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="aion-archive")
        yield S3Archive("aion-archive", "histories", endpoint_url=endpoint)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_each_purged_incarnation_is_archived_apart(
    sessions: Sessions, any_archive: Archive
) -> None:
    projection = Projection(TOPIC, archive=any_archive)
    s = Script()
    async with sessions() as session:
        await projection.apply(session, [*_history_of(s, "order-7"), s.batch("order-7", purged())])
    s.seqs["order-7"] = 0
    async with sessions() as session:
        await projection.apply(
            session,
            [
                s.batch("order-7", started("r9")),
                s.batch("order-7", completed(2)),
                s.batch("order-7", purged()),
            ],
        )
    first, second = read_history(any_archive, "order-7")
    assert [e["event_type"] for e in first.events][-1] == "WorkflowPurged"
    assert [e["run_id"] for e in second.events] == ["r9", "r9", "r9"]
    assert first.purged_at < second.purged_at
