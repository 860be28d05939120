"""The API over real views (SQLite and PostgreSQL) and a command sink on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aion_common.codecs import Codec
from aion_common.domain import Command
from aion_common.kafka import Topics, ensure_topics
from aion_common.settings import Settings
from aion_projector import connect, migrate, session_factory
from aion_projector.api import KafkaCommandSink, create_app
from aion_projector.one_hop import OneHopTransactions, one_hop_url

from .dataset import populate

Sessions = async_sessionmaker[AsyncSession]


@dataclass
class MemorySink:
    """Keeps commands in memory: for read-side tests that need no broker."""

    sent: list[Command] = field(default_factory=list)

    async def send(self, command: Command) -> None:
        self.sent.append(command)


@pytest.fixture
async def views_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = connect(database_url)
    await migrate(engine)
    await populate(session_factory(engine))
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_views(sqlite_url: str) -> AsyncIterator[Sessions]:
    engine = connect(sqlite_url)
    await migrate(engine)
    await populate(session_factory(engine))
    yield session_factory(engine)
    await engine.dispose()


def _client(app: FastAPI, token: str | None = None) -> httpx.AsyncClient:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://aion.test",
        headers=headers,
    )


@pytest.fixture
async def api(views_engine: AsyncEngine, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API on each backend (read-side tests), commands kept in memory; on SQLite a result
    wait reads through one-hop transactions, as ``run_api`` wires it for an SQLite file."""
    target = one_hop_url(database_url)
    one_hop = None if target is None else OneHopTransactions(target)
    app = create_app(
        Settings(payload_limit_bytes=4096),
        session_factory=session_factory(views_engine),
        command_sink=MemorySink(),
        poll_interval=0.02,
        one_hop=one_hop,
    )
    try:
        async with _client(app) as client:
            yield client
    finally:
        if one_hop is not None:
            one_hop.dispose()


@pytest.fixture
async def kafka_api(
    aion_settings: Settings, sqlite_views: Sessions
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """The API on SQLite whose commands go to ``<prefix>.commands`` on the real broker."""
    await ensure_topics(aion_settings, Topics(aion_settings.topic_prefix))
    async with KafkaCommandSink(aion_settings) as sink:
        app = create_app(aion_settings, session_factory=sqlite_views, command_sink=sink)
        async with _client(app) as client:
            yield client, aion_settings


async def consume_commands(settings: Settings, count: int, timeout: float = 30) -> list[Command]:
    """The first ``count`` commands on ``<prefix>.commands`` (every partition), decoded."""
    consumer = AIOKafkaConsumer(
        Topics(settings.topic_prefix).commands,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    codec = Codec()
    found: list[Command] = []
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    found.extend(codec.decode_command(r.value) for r in records)
    finally:
        await consumer.stop()
    return found


__all__ = ["MemorySink", "consume_commands"]
