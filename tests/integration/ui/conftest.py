"""The web UI over real views (SQLite and PostgreSQL) holding the API tests' dataset, plus a
few dead letters; commands are kept in memory and Kafka answers through a stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.integration.api.dataset import T0, populate

from aion_common.domain import Command
from aion_common.kafka.dead_letter import dead_letter_headers
from aion_common.settings import Settings
from aion_projector import connect, migrate, session_factory
from aion_projector.api import create_app
from aion_projector.api._cluster import ClusterSnapshot, EngineMember, PartitionState
from aion_projector.dead_letters import record_dead_letters

DLQ = "aion.dead-letter"


@dataclass
class MemorySink:
    """Keeps commands in memory."""

    sent: list[Command] = field(default_factory=list)

    async def send(self, command: Command) -> None:
        self.sent.append(command)


@dataclass
class FixedCluster:
    """A cluster view that answers one snapshot."""

    snapshot_: ClusterSnapshot

    async def snapshot(self) -> ClusterSnapshot:
        return self.snapshot_


CLUSTER = ClusterSnapshot(
    group="aion.engine",
    group_state="Stable",
    members=(EngineMember(name="engine-1", host="127.0.0.1", partitions=(0,)),),
    partitions=(
        PartitionState(
            partition=0, owner="engine-1", commands_end=40, engine_committed=37, events_end=30
        ),
    ),
)


def record(
    offset: int, *, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> ConsumerRecord[bytes, bytes]:
    """A consumed dead-letter record at ``DLQ`` partition 0."""
    return ConsumerRecord(
        topic=DLQ,
        partition=0,
        offset=offset,
        timestamp=int(T0.timestamp() * 1000) + offset,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value),
        headers=headers,
    )


def dead_letters() -> list[ConsumerRecord[bytes, bytes]]:
    """One aion dead letter (an undecodable event record) and one foreign record."""
    source = ConsumerRecord(
        topic="aion.events",
        partition=0,
        offset=17,
        timestamp=0,
        timestamp_type=0,
        key=b"order-9",
        value=b"\x00garbage",
        checksum=None,
        serialized_key_size=7,
        serialized_value_size=9,
        headers=[],
    )
    headers = list(dead_letter_headers(source, "bad marker byte 0x00", "DecodeError", at=T0))
    return [
        record(0, key=b"order-9", value=b"\x00garbage", headers=headers),
        record(1, key=None, value=b"hello", headers=[("x", b"y")]),
    ]


@pytest.fixture
async def ui_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = connect(database_url)
    await migrate(engine)
    await populate(session_factory(engine))
    async with session_factory(engine)() as session, session.begin():
        await record_dead_letters(session, dead_letters())
    yield engine
    await engine.dispose()


@dataclass
class Ui:
    """An HTTP client of the app, and what it sent."""

    http: httpx.AsyncClient
    sink: MemorySink


@pytest.fixture
async def ui(ui_engine: AsyncEngine) -> AsyncIterator[Ui]:
    sink = MemorySink()
    app = create_app(
        Settings(payload_limit_bytes=4096, partitions=2),
        session_factory=session_factory(ui_engine),
        command_sink=sink,
        cluster_view=FixedCluster(CLUSTER),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://aion.test") as http:
        yield Ui(http=http, sink=sink)
