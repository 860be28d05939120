"""The client's two transports: ``KafkaCommands`` straight to the real broker, and
``AionClient`` over the real app (ASGI) reading refusals from real views."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import astuple

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from aion import AionClient, AionCommandRefused, AionInvalidRequest, KafkaCommands
from aion_common.codecs import Codec
from aion_common.domain import CancelWorkflow, SignalWorkflow, StartWorkflow
from aion_common.kafka import Topics, ensure_topics, partition_for
from aion_common.settings import Settings
from aion_projector import session_factory
from aion_projector.api import create_app

from .conftest import MemorySink, Sessions
from .dataset import REFUSALS


async def _records(settings: Settings, count: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the first ``count`` records on the commands topic."""
    consumer = AIOKafkaConsumer(
        Topics(settings.topic_prefix).commands,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    found: list[tuple[int, bytes, bytes]] = []
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend((r.partition, r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return found


@pytest.fixture
async def commands(aion_settings: Settings) -> AsyncIterator[KafkaCommands]:
    await ensure_topics(aion_settings, Topics(aion_settings.topic_prefix))
    async with KafkaCommands(aion_settings) as sender:
        yield sender


async def test_kafka_commands_land_on_the_workflow_partition_and_decode(
    commands: KafkaCommands, aion_settings: Settings
) -> None:
    first = await commands.start("order", {"n": 1}, request_id="req-1")
    retried = await commands.start("order", {"n": 1}, request_id="req-1")
    assert retried == first  # a retry is the same command to the same (derived) workflow id
    signal = await commands.signal("wf-k", "go", [1, 2], request_id="sig-1")
    again = await commands.signal("wf-k", "go", [1, 2], request_id="sig-1")
    assert again.command_id == signal.command_id
    other = await commands.signal("wf-k", "go", None, request_id="sig-2")
    assert other.command_id != signal.command_id
    cancel = await commands.cancel("wf-k", "enough")
    records = await _records(aion_settings, 6)
    codec = Codec()
    decoded = [(p, k, codec.decode_command(v)) for p, k, v in records]
    for partition, key, command in decoded:
        assert key == command.workflow_id.encode()
        assert partition == partition_for(command.workflow_id, aion_settings.partitions)
        assert partition == commands.partition_of(command.workflow_id)
    by_id = {c.command_id: c for _, _, c in decoded}
    start = by_id[first.command_id]
    assert isinstance(start, StartWorkflow)
    assert (start.workflow_id, start.workflow_type) == (first.workflow_id, "order")
    assert start.input.to_json() == {"n": 1}
    sent_signal = by_id[signal.command_id]
    assert isinstance(sent_signal, SignalWorkflow)
    assert (sent_signal.name, sent_signal.payload.to_json()) == ("go", [1, 2])
    assert isinstance(by_id[cancel.command_id], CancelWorkflow)
    assert len(by_id) == 4  # two retries, two records each, one command id each


async def test_kafka_commands_derive_the_same_ids_as_the_api(
    commands: KafkaCommands, aion_settings: Settings, sqlite_views: Sessions
) -> None:
    app = create_app(aion_settings, session_factory=sqlite_views, command_sink=MemorySink())
    transport = httpx.ASGITransport(app=app)
    async with AionClient("http://aion.test", transport=transport) as api:
        for send in (
            lambda c: c.start("order", 1, request_id="same-1"),
            lambda c: c.start("order", 1, id="wf-same", request_id="same-2"),
            lambda c: c.signal("wf-same", "go", 1, request_id="same-3"),
            lambda c: c.cancel("wf-same", "x", request_id="same-4"),
            lambda c: c.terminate("wf-same", "x", request_id="same-5"),
        ):
            through_api, straight = await send(api), await send(commands)
            assert astuple(through_api) == astuple(straight)  # a start's handle is an Accepted
            assert through_api.run_id == straight.run_id


async def test_kafka_commands_refuse_invalid_requests_before_sending(
    commands: KafkaCommands,
) -> None:
    with pytest.raises(AionInvalidRequest, match="workflow type"):
        await commands.start(" bad type")
    with pytest.raises(AionInvalidRequest):
        await commands.signal("wf\x00", "go")
    with pytest.raises(AionInvalidRequest):
        await commands.start("order", "x" * (Settings().payload_limit_bytes + 1))
    with pytest.raises(AionInvalidRequest, match="request id"):
        await commands.cancel("wf-1", request_id="")


async def test_client_reads_refusals_and_raises_them_on_a_wait(views_engine) -> None:  # type: ignore[no-untyped-def]
    app = create_app(
        Settings(),
        session_factory=session_factory(views_engine),
        command_sink=MemorySink(),
        poll_interval=0.02,
    )
    async with AionClient("http://aion.test", transport=httpx.ASGITransport(app=app)) as api:
        found = await api.refusals("order-1")
        assert [(r.command_id, r.code, r.reason) for r in found] == [
            ("cmd-order-1-again", "ID_REUSE_REJECTED", REFUSALS[0].reason)
        ]
        assert found[0].refused_at == REFUSALS[0].refused_at
        assert await api.refusals("never-seen") == ()
        with pytest.raises(AionCommandRefused) as caught:
            await api.result("ghost-1", wait=1, command_id="cmd-ghost")
        refused = caught.value
        assert (refused.status, refused.kind) == (409, "command-refused")
        assert (refused.code, refused.reason) == ("UNKNOWN_WORKFLOW_TYPE", REFUSALS[1].reason)
        assert (refused.workflow_id, refused.command_type) == ("ghost-1", "StartWorkflow")
        pending = await api.result("order-1", wait=0.1, command_id="cmd-in-flight")
        assert (pending.closed, pending.status) == (False, "PENDING")
        done = await api.result("order-1", command_id="cmd-order-1-1")
        assert (done.closed, done.result) == (True, {"total": 42})
