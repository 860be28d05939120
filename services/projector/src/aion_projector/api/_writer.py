"""How the API's Kafka writers start without Kafka (issue 19), and wait to read a write back.

The command sink, the version catalog and the schedule store each write through a producer
that the API must not wait for: :class:`WriterConnection` starts it at once when the cluster
answers, and otherwise goes on starting it in the background through the process's
:class:`~aion_common.kafka.link.BrokerLink`; each writer refuses its writes (503) until
:attr:`WriterConnection.connected`, in words of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aion_common.domain import InfrastructureError
from aion_common.kafka.link import BrokerLink, is_retriable

__all__ = ["Startable", "WriterConnection", "read_back"]

_log = logging.getLogger("aion.api")
_READ_BACK_POLL_S = 0.02


class Startable(Protocol):
    """A producer (or a writer around one) with an explicit lifecycle."""

    async def start(self) -> None:
        """Connect; raise when the cluster does not answer."""

    async def stop(self) -> None:
        """Flush and disconnect; idempotent."""


class WriterConnection:
    """A writer's connection to Kafka: ``producer`` started now, or in the background while
    the cluster is away. ``stop`` is idempotent.

    ``link`` is the API's broker link (started by its owner); without one a failed start is
    raised, as there is nothing to wait on. ``what`` names the producer in log lines ("the
    catalog writer"), ``refused`` says what is refused while it cannot start, and
    ``task_name`` names the background task.
    """

    def __init__(
        self,
        producer: Startable,
        link: BrokerLink | None,
        *,
        what: str,
        refused: str,
        task_name: str,
    ) -> None:
        self._producer = producer
        self._link = link
        self._what = what
        self._refused = refused
        self._task_name = task_name
        self._connected = False
        self._connecting: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """The producer is started (it may still find the cluster away)."""
        return self._connected

    async def start(self) -> bool:
        """Start the producer; True if it is connected now, False if it goes on connecting in
        the background (the link knows the cluster is away, or it did not answer)."""
        link = self._link
        if link is not None and link.known_down:
            self._connect_in_background(link)
            return False
        try:
            await self._producer.start()
        except Exception as err:
            if link is None or not is_retriable(err):
                raise
            self._connect_in_background(link)
            return False
        self._connected = True
        return True

    def _connect_in_background(self, link: BrokerLink) -> None:
        self._connecting = asyncio.create_task(self._connect(link), name=self._task_name)

    async def _connect(self, link: BrokerLink) -> None:
        try:
            await link.retry(self._producer.start, what=f"starting {self._what}")
        except InfrastructureError:
            _log.exception("%s cannot start: %s (503)", self._what, self._refused)
            return
        self._connected = True

    async def stop(self) -> None:
        """Give up connecting, then stop the producer; idempotent."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, InfrastructureError):
                await connecting
        await self._producer.stop()


async def read_back(done: Callable[[], bool], *, deadline: float) -> bool:
    """Wait until ``done()`` holds (True) or the monotonic ``deadline`` passed (False)."""
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_READ_BACK_POLL_S)
    return True
