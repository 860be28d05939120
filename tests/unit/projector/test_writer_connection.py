"""The API writers' connection (``aion_projector.api._writer``): a producer started now, or in
the background while the cluster is away (issue 19), and the read-back wait. A scripted probe
stands in for the cluster, a fake producer for the writer."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable

import pytest
from aiokafka.errors import KafkaConnectionError

from aion_common.domain import InfrastructureError
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_projector.api._writer import WriterConnection, read_back

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


class ScriptedProbe:
    """The cluster answers while ``up``."""

    def __init__(self, *, up: bool) -> None:
        self.up = up

    async def __call__(self) -> None:
        if not self.up:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")

    async def close(self) -> None:
        pass


def _connection(producer: FakeProducer, link: BrokerLink | None) -> WriterConnection:
    return WriterConnection(
        producer, link, what="the test writer", refused="tests are refused", task_name="test"
    )


def _link(probe: ScriptedProbe) -> BrokerLink:
    return BrokerLink(Settings(bootstrap_servers="127.0.0.1:9"), name="test", probe=probe)


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  # polling the connection's state
            await asyncio.sleep(0.01)


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
        await _until(lambda: connection.connected)
        assert producer.starts == 3
    finally:
        await connection.stop()
        await link.stop()


async def test_while_the_link_knows_the_cluster_is_away_no_start_is_tried_first() -> None:
    probe = ScriptedProbe(up=False)
    link = _link(probe)
    await link.start()
    await _until(lambda: link.known_down)
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
        await _until(lambda: producer.starts >= 2)  # retrying in the background
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
            await _until(lambda: bool(caplog.records))
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
