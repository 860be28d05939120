"""``aion_common.kafka.consumer.stop_consumer``: a consumer's stop never leaks aiokafka's own
cancellations into the caller, yet a cancellation of the caller still stops it.

The stand-in's ``stop()`` does what aiokafka 0.14's ``Fetcher.close()`` does with a fetch in
flight (cancel the request's task, then await it), which raised ``CancelledError`` into an
engine partition worker and ended it silently (aio-libs/aiokafka#647)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer

from aion_common.kafka.consumer import stop_consumer


class _Client:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class _FetchInFlight:
    def __init__(self, *, slow_s: float = 0.0) -> None:
        self.slow_s = slow_s
        self.stopped = False
        self._client = _Client()  # aiokafka's consumer closes it last, after the fetcher

    async def stop(self) -> None:
        fetch = asyncio.create_task(asyncio.sleep(60))
        await asyncio.sleep(0)
        await asyncio.sleep(self.slow_s)
        fetch.cancel()
        self.stopped = True
        await fetch  # raises CancelledError, as aiokafka's close does


def _consumer(stand_in: _FetchInFlight) -> AIOKafkaConsumer:
    return cast("AIOKafkaConsumer", stand_in)


async def test_the_library_cancelling_its_own_fetch_does_not_reach_the_caller() -> None:
    stand_in = _FetchInFlight()
    await stop_consumer(_consumer(stand_in))  # no CancelledError
    assert stand_in.stopped
    assert not cast("Any", asyncio.current_task()).cancelling()
    # the stop never got to its client: closed here, or its metadata task would run on
    assert stand_in._client.closed


async def test_a_bare_stop_lets_it_through() -> None:
    """The failure the helper exists for: without it, the caller's task ends cancelled."""
    with pytest.raises(asyncio.CancelledError):
        await _FetchInFlight().stop()


async def test_cancelling_the_caller_still_cancels_it() -> None:
    stand_in = _FetchInFlight(slow_s=5.0)
    task = asyncio.create_task(stop_consumer(_consumer(stand_in)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_stop_that_hangs_is_given_up_on() -> None:
    stand_in = _FetchInFlight(slow_s=60.0)
    await asyncio.wait_for(stop_consumer(_consumer(stand_in), timeout_s=0.1), 5.0)
    assert not stand_in.stopped
    assert stand_in._client.closed


async def test_a_clean_stop_leaves_the_client_to_it() -> None:
    class _Clean(_FetchInFlight):
        async def stop(self) -> None:
            self.stopped = True

    stand_in = _Clean()
    await stop_consumer(_consumer(stand_in))
    assert stand_in.stopped
    assert not stand_in._client.closed  # aiokafka's own stop closes it; nothing more here
