"""Stand-ins for the unit tests of ``aion_common.kafka.link`` and of what runs on a
:class:`~aion_common.kafka.link.BrokerLink`: a scripted probe in place of the cluster, and a
wait for a state that a test can only poll."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.errors import KafkaConnectionError


class ScriptedProbe:
    """A ``BrokerLink`` probe: the cluster answers while :attr:`up`; counts calls and notes
    :meth:`close`."""

    def __init__(self, *, up: bool = True) -> None:
        self.up = up
        self.calls = 0
        self.closed = False

    async def __call__(self) -> None:
        self.calls += 1
        if not self.up:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")

    async def close(self) -> None:
        self.closed = True


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once ``check()`` holds; ``TimeoutError`` after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  # a link's or connection's state has no event
            await asyncio.sleep(0.01)
