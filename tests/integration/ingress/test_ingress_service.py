"""The ingress on the real broker: records to commands and dead letters, offsets with them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aion_common.codecs import Codec
from aion_common.domain import (
    Command,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
)
from aion_common.kafka import Topics, parse_dead_letter
from aion_common.kafka.admin import ensure_topics
from aion_common.settings import Settings
from aion_ingress import IngressOptions, IngressService, command_id, parse_config

pytestmark = pytest.mark.kafka


def _config(prefix: str, **top: Any) -> dict[str, Any]:
    return {
        "name": "it",
        "routes": [
            {
                "topic": f"{prefix}-orders",
                "action": "start",
                "workflow_type": "order",
                "workflow_id": "order-{value.id}",
            },
            {
                "topic": f"{prefix}-events",
                "action": "signal-with-start",
                "workflow_type": "order",
                "workflow_id": "{key}",
                "signal": "{value.kind}",
            },
            {
                "topic": f"{prefix}-acks",
                "action": "signal",
                "workflow_id": "order-{value.order}",
                "signal": "ack",
                "payload": "value.by",
            },
        ],
        **top,
    }


@contextlib.asynccontextmanager
async def running(service: IngressService) -> AsyncIterator[IngressService]:
    await service.start()
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        await service.stop()
        await asyncio.gather(task, return_exceptions=True)


async def produce(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str, count: int, timeout: float = 30) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found.extend(records)
        await asyncio.sleep(0.5)  # nothing more than expected arrives
        for records in (await consumer.getmany(timeout_ms=200)).values():
            found.extend(records)
    finally:
        await consumer.stop()
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> dict[str, float]:
    """The ingress's ``/metrics`` over HTTP: sample (with labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_records_become_commands_and_bad_ones_dead_letters(aion_settings: Settings) -> None:
    aion_settings = replace(aion_settings, payload_limit_bytes=1000)
    prefix = aion_settings.topic_prefix
    config = parse_config(_config(prefix, create_topics=True))
    port = _free_port()
    service = IngressService(aion_settings, config, IngressOptions(port=port))
    async with running(service):
        await produce(
            aion_settings,
            f"{prefix}-orders",
            [
                (None, json.dumps({"id": 1}).encode()),
                (None, b"{broken"),
                (None, json.dumps({"nope": 1}).encode()),
                (
                    None,
                    json.dumps({"id": 2, "big": "x" * aion_settings.payload_limit_bytes}).encode(),
                ),
                (None, json.dumps({"id": 3}).encode()),
            ],
        )
        await produce(
            aion_settings,
            f"{prefix}-events",
            [(b"o-1", json.dumps({"kind": k}).encode()) for k in ("paid", "shipped")],
        )
        await produce(
            aion_settings,
            f"{prefix}-acks",
            [(None, json.dumps({"order": 3, "by": "ann"}).encode())],
        )
        topics = Topics(prefix)
        commands = await read_all(aion_settings, topics.commands, 5)
        dead = await read_all(aion_settings, topics.dead_letter, 3)
        samples = await asyncio.to_thread(_scrape, port)
    codec = Codec()
    decoded: list[Command] = [codec.decode_command(r.value) for r in commands]
    starts = sorted(
        (c for c in decoded if isinstance(c, StartWorkflow)), key=lambda c: c.workflow_id
    )
    assert [c.workflow_id for c in starts] == ["order-1", "order-3"]
    # keyless records land on any partition: each id is derived from where its record is
    where = [(p, o) for p in range(aion_settings.partitions) for o in range(5)]
    derived = {command_id("it", f"{prefix}-orders", p, o) for p, o in where}
    assert {c.command_id for c in starts} <= derived
    signals = [c for c in decoded if isinstance(c, SignalWithStartWorkflow)]
    assert [c.signal_name for c in signals] == ["paid", "shipped"]
    (ack,) = [c for c in decoded if isinstance(c, SignalWorkflow)]
    assert (ack.workflow_id, ack.name, ack.payload.to_json()) == ("order-3", "ack", "ann")
    assert ack.command_id in {
        command_id("it", f"{prefix}-acks", p, 0) for p in range(aion_settings.partitions)
    }
    assert len(decoded) == 5
    letters = [parse_dead_letter(r) for r in dead]
    assert len(letters) == 3
    by_value = {d.value: d for d in letters}  # the record's value is kept as it was
    assert "value is not JSON" in by_value[b"{broken"].reason
    assert "field value.id is missing" in by_value[json.dumps({"nope": 1}).encode()].reason
    big = [d for v, d in by_value.items() if v is not None and v.startswith(b'{"id": 2')]
    assert len(big) == 1
    assert "exceeds the limit" in big[0].reason
    assert service.metrics.records.labels(f"{prefix}-orders", "dead_letter")._value.get() == 3
    orders = f'topic="{prefix}-orders"'
    # the exposition lists a sample's labels by name
    assert samples[f'aion_ingress_records_total{{outcome="dead_letter",{orders}}}'] == 3
    assert samples[f'aion_ingress_records_total{{outcome="command",{orders}}}'] == 2
    assert samples['aion_ingress_commands_total{type="SignalWorkflow"}'] == 1
    lags = {
        k: v
        for k, v in samples.items()
        if k.startswith("aion_ingress_lag{") and k.endswith(f",{orders}}}")
    }
    assert lags, "a lag gauge per source partition"
    assert set(lags.values()) == {0}
    assert samples["aion_ingress_transactions_total"] >= 1


async def test_a_restart_resumes_after_the_committed_records(aion_settings: Settings) -> None:
    prefix = aion_settings.topic_prefix
    topic = f"{prefix}-orders"
    await ensure_topics(aion_settings, [topic, f"{prefix}-events", f"{prefix}-acks"], configs={})
    config = parse_config(_config(prefix))
    await produce(aion_settings, topic, [(None, json.dumps({"id": n}).encode()) for n in range(5)])
    async with running(IngressService(aion_settings, config)):
        await read_all(aion_settings, Topics(prefix).commands, 5)
    await produce(
        aion_settings, topic, [(None, json.dumps({"id": n}).encode()) for n in range(5, 8)]
    )
    async with running(IngressService(aion_settings, config)) as second:
        commands = await read_all(aion_settings, Topics(prefix).commands, 8)
        group = second.group_id
    assert len(commands) == 8  # the second life did not re-send the first five
    consumer = AIOKafkaConsumer(bootstrap_servers=aion_settings.bootstrap_servers, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(aion_settings.partitions)]
        committed = [await consumer.committed(tp) or 0 for tp in tps]
    finally:
        await consumer.stop()
    assert sum(committed) == 8  # every record's offset, wherever it landed


async def test_it_waits_for_a_missing_source_topic(aion_settings: Settings) -> None:
    prefix = aion_settings.topic_prefix
    config = parse_config(_config(prefix))
    service = IngressService(aion_settings, config)
    starting = asyncio.create_task(service.start())
    await asyncio.sleep(1.0)
    assert not starting.done()
    assert "do not exist" in str(service.health()["reason"])
    assert service.health()["ready"] is False
    await ensure_topics(
        aion_settings, [f"{prefix}-orders", f"{prefix}-events", f"{prefix}-acks"], configs={}
    )
    await asyncio.wait_for(starting, 30)
    assert service.health()["ready"] is True
    await service.stop()
