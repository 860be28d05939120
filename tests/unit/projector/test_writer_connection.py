"""The API writers' connection (``aion_projector.api._writer``): a producer started now, or in
the background while the cluster is away (issue 19), a write refused at once or bounded
(decision 66), and the read-back wait. A scripted probe stands in for the cluster, a fake
producer for the writer."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable

import pytest
from tests.unit.link_fakes import ScriptedProbe, until

from aion_common.domain import InfrastructureError
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_projector.api import _writer
from aion_projector.api._writer import WriterConnection, WriteUnavailable, read_back

_AWAY = InfrastructureError("the cluster is away", retriable=True)
_REFUSED = InfrastructureError("bad configuration", retriable=False)


class FakeProducer:
    """Fails its starts with ``failures`` (in turn), then starts."""

    def __init__(self, failures: Iterable[Exception] = ()) -> None:
        self._failures = iter(failures)
        self.starts = 0
        self.stops = 0

    async def start(self) -> None:
        self.starts += 1
        failure = next(self._failures, None)
        if failure is not None:
            raise failure

    async def stop(self) -> None:
        self.stops += 1


def _connection(producer: FakeProducer, link: BrokerLink | None) -> WriterConnection:
    return WriterConnection(
        producer, link, what="the test writer", refused="tests are refused", task_name="test"
    )


def _link(probe: ScriptedProbe) -> BrokerLink:
    return BrokerLink(Settings(bootstrap_servers="127.0.0.1:9"), name="test", probe=probe)


async def test_a_producer_that_starts_is_connected_at_once() -> None:
    producer = FakeProducer()
    connection = _connection(producer, None)
    assert await connection.start()
    assert connection.connected
    await connection.stop()
    await connection.stop()  # idempotent for the connection; the producer's stop is too
    assert (producer.starts, producer.stops) == (1, 2)


async def test_without_a_link_a_failed_start_is_raised() -> None:
    connection = _connection(FakeProducer([_AWAY]), None)
    with pytest.raises(InfrastructureError, match="away"):
        await connection.start()
    assert not connection.connected


async def test_a_start_refused_for_good_is_raised_even_with_a_link() -> None:
    link = _link(ScriptedProbe(up=True))
    connection = _connection(FakeProducer([_REFUSED]), link)
    with pytest.raises(InfrastructureError, match="bad configuration"):
        await connection.start()


async def test_a_retriable_failure_goes_on_connecting_in_the_background() -> None:
    probe = ScriptedProbe(up=True)
    link = _link(probe)
    await link.start()
    producer = FakeProducer([_AWAY, _AWAY])
    connection = _connection(producer, link)
    try:
        assert not await connection.start()
        assert not connection.connected
        await until(lambda: connection.connected)
        assert producer.starts == 3
    finally:
        await connection.stop()
        await link.stop()


async def test_while_the_link_knows_the_cluster_is_away_no_start_is_tried_first() -> None:
    probe = ScriptedProbe(up=False)
    link = _link(probe)
    await link.start()
    await until(lambda: link.known_down)
    producer = FakeProducer(itertools.repeat(_AWAY))
    connection = _connection(producer, link)
    try:
        began = time.monotonic()
        assert not await connection.start()
        assert time.monotonic() - began < 0.5
        assert not connection.connected
    finally:
        await connection.stop()
        await link.stop()
    assert producer.stops == 1


async def test_stop_while_connecting_gives_up_and_stops_the_producer() -> None:
    link = _link(ScriptedProbe(up=True))
    await link.start()
    producer = FakeProducer(itertools.repeat(_AWAY))
    connection = _connection(producer, link)
    try:
        assert not await connection.start()
        await until(lambda: producer.starts >= 2)  # retrying in the background
        async with asyncio.timeout(2):
            await connection.stop()
    finally:
        await link.stop()
    assert not connection.connected
    assert producer.stops == 1
    starts = producer.starts
    await asyncio.sleep(0.3)
    assert producer.starts == starts  # the background start ended with stop


async def test_a_background_start_refused_for_good_is_logged_and_writes_stay_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = _link(ScriptedProbe(up=True))
    await link.start()
    connection = _connection(FakeProducer([_AWAY, _REFUSED]), link)
    try:
        with caplog.at_level(logging.ERROR, logger="aion.api"):
            assert not await connection.start()
            await until(lambda: bool(caplog.records))
    finally:
        await connection.stop()
        await link.stop()
    assert caplog.messages == ["the test writer cannot start: tests are refused (503)"]
    assert not connection.connected


async def test_read_back_waits_for_done_or_the_deadline() -> None:
    flags = iter([False, False, True])
    assert await read_back(lambda: next(flags), deadline=time.monotonic() + 5)
    began = time.monotonic()
    assert not await read_back(lambda: False, deadline=began + 0.1)
    assert 0.1 <= time.monotonic() - began < 1


class Words:
    """A writer's words for one write (``WriteWords``): each answer names its case."""

    def not_written(self, why: str) -> str:
        return f"not written: {why}"

    def unacknowledged(self, where: str, timeout_s: float) -> str:
        return f"maybe: {where} in {timeout_s:g} s"

    def refused(self, where: str, error: InfrastructureError) -> str:
        return f"refused: {where}: {error}"

    def not_read_back(self, within_s: float) -> str:
        return f"not read back in {within_s:g} s"


class Sends:
    """A send that waits for :attr:`answer`, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer = asyncio.Event()
        self.error: InfrastructureError | None = None

    async def __call__(self) -> None:
        self.calls += 1
        await self.answer.wait()
        if self.error is not None:
            raise self.error


def _suspected(link: BrokerLink, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    calls: list[None] = []
    monkeypatch.setattr(link, "suspect", lambda: calls.append(None))
    return calls


async def test_a_write_is_refused_at_once_before_the_writer_connected() -> None:
    sends = Sends()
    connection = _connection(FakeProducer(), None)
    with pytest.raises(WriteUnavailable) as refused:
        await connection.write(sends, Words(), timeout_s=5)
    assert str(refused.value) == "not written: the Kafka cluster is not reachable yet"
    assert (refused.value.retry_after_s, sends.calls) == (2, 0)


async def test_a_write_is_refused_at_once_while_the_link_knows_the_cluster_is_away() -> None:
    probe = ScriptedProbe(up=True)
    link = _link(probe)
    await link.start()
    connection = _connection(FakeProducer(), link)
    sends = Sends()
    try:
        assert await connection.start()
        probe.up = False
        link.suspect()
        await until(lambda: link.known_down)
        began = time.monotonic()
        with pytest.raises(WriteUnavailable, match=r"^not written: kafka at 127\.0\.0\.1:9 unr"):
            await connection.write(sends, Words(), timeout_s=5)
        assert time.monotonic() - began < 0.5
        assert sends.calls == 0
    finally:
        await connection.stop()
        await link.stop()


async def test_an_unacknowledged_write_is_answered_in_time_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka's send (and a transaction's abort) waits for the broker however long: the
    answer is bounded, the send is not cancelled (it may still be written), the link is told."""
    link = _link(ScriptedProbe(up=True))
    suspected = _suspected(link, monkeypatch)
    connection = _connection(FakeProducer(), link)
    assert await connection.start()
    sends = Sends()
    began = time.monotonic()
    with pytest.raises(
        WriteUnavailable, match=r"^maybe: Kafka at 127\.0\.0\.1:9 in 0\.1 s$"
    ) as answered:
        await connection.write(sends, Words(), timeout_s=0.1)
    assert answered.value.retry_after_s == 1
    assert 0.1 <= time.monotonic() - began < 1
    assert len(suspected) == 1
    with caplog.at_level(logging.WARNING, logger="aion.api"):
        sends.answer.set()  # Kafka answers after all
        await until(lambda: bool(caplog.records))
    assert caplog.messages == [
        "a write by the test writer answered before Kafka acknowledged it was written after all"
    ]
    await connection.stop()


async def test_a_write_kafka_refuses_is_answered_with_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = _link(ScriptedProbe(up=True))
    suspected = _suspected(link, monkeypatch)
    connection = _connection(FakeProducer(), link)
    assert await connection.start()
    sends = Sends()
    sends.error = _AWAY
    sends.answer.set()
    with pytest.raises(WriteUnavailable, match=r"^refused: Kafka at 127\.0\.0\.1:9: the cl"):
        await connection.write(sends, Words(), timeout_s=5)
    sends.error = _REFUSED  # not retriable: raised as it is, the link not suspected for it
    with pytest.raises(InfrastructureError, match=r"^bad configuration$"):
        await connection.write(sends, Words(), timeout_s=5)
    assert len(suspected) == 1
    sends.error = None
    await connection.write(sends, Words(), timeout_s=5)
    await connection.stop()


async def test_a_write_waits_to_be_read_back_within_the_answer_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_writer, "WRITE_ANSWER_S", 0.2)
    connection = _connection(FakeProducer(), None)
    assert await connection.start()
    sends = Sends()
    sends.answer.set()
    flags = iter([False, True])
    await connection.write(sends, Words(), timeout_s=5, read=lambda: next(flags))
    began = time.monotonic()
    with pytest.raises(WriteUnavailable, match=r"^not read back in 0\.2 s$") as answered:
        await connection.write(sends, Words(), timeout_s=5, read=lambda: False)
    assert 0.2 <= time.monotonic() - began < 1  # from the call, the send's time included
    assert answered.value.retry_after_s == 1
    await connection.stop()


async def test_stop_gives_up_on_an_unacknowledged_write() -> None:
    producer = FakeProducer()
    connection = _connection(producer, None)
    assert await connection.start()
    with pytest.raises(WriteUnavailable, match=r"^maybe"):
        await connection.write(Sends(), Words(), timeout_s=0.05)
    async with asyncio.timeout(2):
        await connection.stop()
    assert producer.stops == 1
