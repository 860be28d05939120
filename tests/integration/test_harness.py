"""The test harness itself: the session broker, transactions, both databases, a restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from aion_common.settings import Settings
from aion_common.testing import ProvisionError
from aion_common.testing.broker import KafkaBroker


async def _create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, count: int, *, committed: bool) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < count:
                record = await consumer.getone()
                values.append(record.value)
    finally:
        await consumer.stop()
    return values


async def test_broker_round_trip(aion_settings: Settings) -> None:
    topic = f"{aion_settings.topic_prefix}.harness"
    await _create_topic(aion_settings.bootstrap_servers, topic, aion_settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=aion_settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"wf-1")
    finally:
        await producer.stop()
    assert await _read_all(aion_settings.bootstrap_servers, topic, 1, committed=False) == [b"hello"]


async def test_transactional_producer(aion_settings: Settings) -> None:
    topic = f"{aion_settings.topic_prefix}.tx"
    await _create_topic(aion_settings.bootstrap_servers, topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=aion_settings.bootstrap_servers,
        transactional_id=f"{aion_settings.topic_prefix}-tx",
    )
    await producer.start()  # InitProducerId: fails on a broker without transactions
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed", key=b"wf-1")
    finally:
        await producer.stop()
    assert await _read_all(aion_settings.bootstrap_servers, topic, 1, committed=True) == [
        b"committed"
    ]


async def test_postgres_url_connects(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            version = (await connection.execute(text("SELECT version()"))).scalar_one()
    finally:
        await engine.dispose()
    assert str(version).startswith("PostgreSQL")


async def test_database_url_backends(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, v TEXT)"))
            await connection.execute(text("INSERT INTO probe VALUES (1, 'one')"))
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT id, v FROM probe"))).all()
    finally:
        await engine.dispose()
    assert [tuple(row) for row in rows] == [(1, "one")]


def test_pg_database_is_fresh_per_test(pg_database_url: str, postgres_url: str) -> None:
    assert pg_database_url != postgres_url
    assert pg_database_url.rsplit("/", 1)[1].startswith("aion_t")


async def test_persistent_broker_keeps_records(tmp_path: Path) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.kept"
    broker = KafkaBroker(tmp_path / "kafka", die_with_parent=True)
    with broker:
        first_address = broker.bootstrap_servers
        await _create_topic(first_address, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=first_address, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"survives", key=b"wf-1")
        finally:
            await producer.stop()
    assert broker.pid is None
    broker.stop()  # idempotent
    with broker:
        assert broker.bootstrap_servers == first_address  # a persistent dir keeps its port
        assert await _read_all(broker.bootstrap_servers, topic, 1, committed=False) == [b"survives"]


@pytest.mark.usefixtures("kafka_bootstrap")
def test_kafka_tests_are_marked(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("kafka") is not None


async def test_broker_restart_keeps_address_records_and_clients(tmp_path: Path) -> None:
    """An outage: stop, stay down, come back on the same port; a connected producer carries on."""
    topic = f"t{uuid.uuid4().hex[:8]}.outage"
    broker = KafkaBroker(tmp_path / "kafka", die_with_parent=True)
    with pytest.raises(ProvisionError, match="not running"):
        broker.restart()
    with broker:
        address = broker.bootstrap_servers
        first_pid = broker.pid
        await _create_topic(address, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=address, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"before", key=b"wf-1")
            broker.restart(down_for=1.0)
            assert broker.bootstrap_servers == address
            assert broker.pid not in (None, first_pid)
            async with asyncio.timeout(60):
                await producer.send_and_wait(topic, b"after", key=b"wf-1")
        finally:
            await producer.stop()
        assert await _read_all(address, topic, 2, committed=False) == [b"before", b"after"]
    assert broker.pid is None
