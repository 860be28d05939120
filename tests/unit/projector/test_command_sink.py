"""The API's command sink (``aion_projector.api._sink``) on the writers' bounded write
(decision 48, amended 2026-12-07): a command refused at once while Kafka is known away, an
unacknowledged or refused send answered in time, each a ``CommandNotQueued`` (503 with
``Retry-After``) saying whether it was queued and to retry with the same request id. A scripted
probe stands in for the cluster, a fake producer for aiokafka's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.unit.link_fakes import ScriptedProbe, until

from aion_common.domain import CancelWorkflow, InfrastructureError
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_projector.api import _sink
from aion_projector.api._sink import CommandNotQueued, KafkaCommandSink
from aion_projector.api._writer import WriteUnavailable

_COMMAND = CancelWorkflow(
    command_id="c-1", issued_at=datetime(2026, 12, 7, tzinfo=UTC), workflow_id="w-1", reason="r"
)


class FakeProducer:
    """Stands in for the sink's ``KeyedProducer``: a send waits for :attr:`answer`, then
    raises :attr:`error` if set."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.error: InfrastructureError | None = None
        self.sent: list[tuple[str, str]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, workflow_id: str, _value: bytes) -> None:
        await self.answer.wait()
        if self.error is not None:
            raise self.error
        self.sent.append((topic, workflow_id))


@pytest.fixture
def probe() -> ScriptedProbe:
    return ScriptedProbe()


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
async def sink(
    monkeypatch: pytest.MonkeyPatch, probe: ScriptedProbe, producer: FakeProducer
) -> AsyncIterator[KafkaCommandSink]:
    def keyed_producer(_settings: Settings, **_options: Any) -> FakeProducer:
        return producer

    monkeypatch.setattr(_sink, "KeyedProducer", keyed_producer)
    settings = Settings(bootstrap_servers="127.0.0.1:9", topic_prefix="t")
    link = BrokerLink(settings, name="test", probe=probe)
    async with KafkaCommandSink(settings, link=link, produce_timeout_s=0.1) as started:
        assert started.connected
        yield started


async def test_a_command_acknowledged_is_queued_keyed_by_its_workflow(
    sink: KafkaCommandSink, producer: FakeProducer
) -> None:
    producer.answer.set()
    await sink.send(_COMMAND)
    assert producer.sent == [("t.commands", "w-1")]


async def test_a_command_is_refused_at_once_while_kafka_is_known_away(
    sink: KafkaCommandSink, probe: ScriptedProbe, producer: FakeProducer
) -> None:
    probe.up = False
    sink.link.suspect()
    await until(lambda: sink.link.known_down)
    began = time.monotonic()
    with pytest.raises(CommandNotQueued) as refused:
        await sink.send(_COMMAND)
    assert time.monotonic() - began < 0.5
    message = str(refused.value)
    assert message.startswith("kafka at 127.0.0.1:9 unreachable: ")
    assert message.endswith("; the command was not queued: retry with the same request_id")
    assert refused.value.retry_after_s == 2
    assert producer.sent == []


async def test_an_unacknowledged_command_is_answered_in_time(sink: KafkaCommandSink) -> None:
    began = time.monotonic()
    with pytest.raises(CommandNotQueued) as answered:
        await sink.send(_COMMAND)
    assert 0.1 <= time.monotonic() - began < 1
    assert str(answered.value) == (
        "Kafka at 127.0.0.1:9 did not acknowledge the command within 0.1 s; it may still be "
        "queued: retry with the same request_id (it is applied once)"
    )
    assert answered.value.retry_after_s == 1
    assert isinstance(answered.value, WriteUnavailable)  # the API answers it 503 in its words


async def test_a_command_kafka_refuses_is_answered_with_the_error(
    sink: KafkaCommandSink, producer: FakeProducer
) -> None:
    producer.error = InfrastructureError("the cluster is away", retriable=True)
    producer.answer.set()
    with pytest.raises(CommandNotQueued) as refused:
        await sink.send(_COMMAND)
    assert str(refused.value) == (
        "Kafka at 127.0.0.1:9 refused the command (the cluster is away); retry with the same "
        "request_id"
    )
    assert refused.value.retry_after_s == 1
    producer.error = InfrastructureError("bad configuration", retriable=False)
    with pytest.raises(InfrastructureError, match=r"^bad configuration$") as raised:
        await sink.send(_COMMAND)
    assert not isinstance(raised.value, WriteUnavailable)
