"""``aion_common.kafka.producer.stop_producer``: a producer's stop cut short (timed out while it
flushes to a broker that is away) still ends its sender and closes its client.

aiokafka 0.14's ``AIOKafkaProducer.stop()`` marks the producer closed, waits for its batches to
be delivered, and only then cancels its sender task and closes its client; cut short in the
wait, it skips both, and a second ``stop()`` returns at once. A real producer here, with what
its ``start()`` leaves running once the cluster answered (the sender task, the client's metadata
task) and one record no broker will take; only the client's metadata request is a stand-in,
failing as it does when the broker is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition

from aion_common.domain import InfrastructureError
from aion_common.kafka.producer import KeyedProducer, stop_producer
from aion_common.settings import Settings


class _Unreachable:
    """The client's metadata request to a broker that is gone: fails after a moment."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, *_args: Any) -> bool:
        self.calls += 1
        await asyncio.sleep(0.02)
        return False


class _Stranded:
    """A producer as its ``start()`` left it, holding a record it cannot deliver."""

    def __init__(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
        self.metadata = _Unreachable()
        self._delivery: asyncio.Future[Any] | None = None

    async def start(self) -> None:
        client: Any = self.producer.client
        client._metadata_update = self.metadata
        client._sync_task = asyncio.create_task(client._md_synchronizer())  # as bootstrap() does
        await self.producer._sender.start()
        self._delivery = await self.producer._message_accumulator.add_message(
            TopicPartition("t", 0), None, b"x", timeout=1
        )

    @property
    def sender_running(self) -> bool:
        return not self.producer._sender.sender_task.done()

    async def metadata_requests_meanwhile(self) -> int:
        before = self.metadata.calls
        await asyncio.sleep(0.3)
        return self.metadata.calls - before

    async def discard(self) -> None:
        """End what the test left: the sender, the client, and the stop's wait for the record."""
        await self.producer._sender.close()
        await self.producer.client.close()
        for batches in self.producer._message_accumulator._batches.values():
            for batch in batches:
                batch.done(base_offset=0)  # as if delivered after all
        assert self._delivery is not None
        await self._delivery
        await asyncio.sleep(0)  # the stop's flush task sees its batch done and ends


@pytest.fixture
async def stranded() -> AsyncIterator[_Stranded]:
    producer = _Stranded()
    await producer.start()
    try:
        yield producer
    finally:
        await producer.discard()


async def test_a_bare_stop_cut_short_leaves_the_sender_and_the_client_running(
    stranded: _Stranded,
) -> None:
    """The leak the helper exists for, as ``asyncio.wait_for(producer.stop(), …)`` left it."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stranded.producer.stop(), 0.1)
    await stranded.producer.stop()  # returns at once: the producer is marked closed
    assert stranded.sender_running
    assert await stranded.metadata_requests_meanwhile() > 0


async def test_a_stop_cut_short_still_ends_the_sender_and_closes_the_client(
    stranded: _Stranded,
) -> None:
    await asyncio.wait_for(stop_producer(stranded.producer, timeout_s=0.1), 5.0)
    assert not stranded.sender_running
    assert stranded.producer.client._sync_task is None  # the client's close() ran
    assert await stranded.metadata_requests_meanwhile() == 0


async def test_cancelling_the_caller_still_cancels_it(stranded: _Stranded) -> None:
    task = asyncio.create_task(stop_producer(stranded.producer, timeout_s=5.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_the_keyed_producer_stops_through_it(stranded: _Stranded) -> None:
    keyed = KeyedProducer(Settings(bootstrap_servers="127.0.0.1:9"))
    keyed._producer = stranded.producer
    await asyncio.wait_for(keyed.stop(timeout_s=0.1), 5.0)
    assert not stranded.sender_running
    assert await stranded.metadata_requests_meanwhile() == 0


async def test_a_keyed_producer_stopped_after_a_failed_replacement_stays_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replacement that could not start is started by the next transaction — unless the
    producer was stopped since: then the transaction refuses, as after any stop."""
    starts = 0

    async def unreachable(self: AIOKafkaProducer) -> None:
        nonlocal starts
        starts += 1
        raise KafkaConnectionError("the broker went away (injected)")

    monkeypatch.setattr(AIOKafkaProducer, "start", unreachable)
    keyed = KeyedProducer(Settings(bootstrap_servers="127.0.0.1:9"), transactional_id="t")
    with pytest.raises(InfrastructureError, match="starting the Kafka producer"):
        await keyed._renew()
    await keyed.stop()
    with pytest.raises(RuntimeError, match="not started"):
        async with keyed.transaction():
            pass
    assert starts == 1


async def test_a_replacement_cancelled_while_discarding_the_old_producer_is_started_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transaction cancelled (a bounded write's timeout) while its replacement stops the old
    producer: the next transaction starts the new one rather than finding none."""
    starts = 0

    async def started(self: AIOKafkaProducer) -> None:
        nonlocal starts
        starts += 1
        raise KafkaConnectionError("the broker went away (injected)")

    async def stopping_forever(*_args: Any, **_kwargs: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(AIOKafkaProducer, "start", started)
    monkeypatch.setattr("aion_common.kafka.producer.stop_producer", stopping_forever)
    keyed = KeyedProducer(Settings(bootstrap_servers="127.0.0.1:9"), transactional_id="t")
    keyed._producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
    renewing = asyncio.create_task(keyed._renew())
    await asyncio.sleep(0.01)
    renewing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await renewing
    with pytest.raises(InfrastructureError, match="starting the Kafka producer"):
        async with keyed.transaction():
            pass
    assert starts == 1
