"""How the API's Kafka writers start without Kafka (issue 19), bound a write, and read it back.

The command sink, the version catalog and the schedule store each write through a producer
that the API must not wait for: :class:`WriterConnection` starts it at once when the cluster
answers, and otherwise goes on starting it in the background through the process's
:class:`~aion_common.kafka.link.BrokerLink`; each writer refuses its writes (503) until
:attr:`WriterConnection.connected`, in words of its own.

:meth:`WriterConnection.write` is the write of all three (decisions 48 and 66):
refused at once while the link knows Kafka is away, and otherwise answered within a bound —
aiokafka's own send waits for the broker's return however long that is (it expires a batch
only while its partition has no known leader), which left a user's request unanswered until
the client gave up. Each refusal is a :class:`WriteUnavailable` in the writer's words
(:class:`WriteWords`): what was not done, or may still be done, and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from aion_common.domain import InfrastructureError
from aion_common.kafka.link import BrokerLink, is_retriable

__all__ = [
    "RETRY_AFTER_DOWN_S",
    "RETRY_AFTER_SLOW_S",
    "WRITE_ANSWER_S",
    "Startable",
    "WriteUnavailable",
    "WriteWords",
    "WriterConnection",
    "read_back",
]

_log = logging.getLogger("aion.api")
_READ_BACK_POLL_S = 0.02
_STOP_WRITES_S = 1.0

WRITE_ANSWER_S = 8.0
"""A write is answered within this long (sent and read back, or a 503 saying how far it
got): under the clients' 10 s default request timeout, so they hear what happened."""
RETRY_AFTER_DOWN_S = 2
"""``Retry-After`` while Kafka is known to be away (the link probes every 0.5 s)."""
RETRY_AFTER_SLOW_S = 1
"""``Retry-After`` for a send not acknowledged in time or refused, or a write not read back."""


class WriteUnavailable(InfrastructureError):
    """A write that was not carried out, or not confirmed: the message says which and what to
    do; the API answers it 503 with ``Retry-After: retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, retriable=True)
        self.retry_after_s = retry_after_s


class WriteWords(Protocol):
    """How a writer tells the user what became of one write, and what to do about it."""

    def not_written(self, why: str) -> str:
        """Refused before it was sent: ``why`` says how Kafka is away."""

    def unacknowledged(self, where: str, timeout_s: float) -> str:
        """Sent, not acknowledged within ``timeout_s``: it may or may not be written."""

    def refused(self, where: str, error: InfrastructureError) -> str:
        """Kafka answered the send with a retriable ``error``."""

    def not_read_back(self, within_s: float) -> str:
        """Written, but not read back within ``within_s`` of the request."""


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
        self._unanswered: set[asyncio.Future[None]] = set()

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

    async def write(
        self,
        send: Callable[[], Awaitable[None]],
        words: WriteWords,
        *,
        timeout_s: float,
        read: Callable[[], bool] | None = None,
        unavailable: type[WriteUnavailable] = WriteUnavailable,
    ) -> None:
        """Send (``send()``) within ``timeout_s``, then wait until ``read()`` holds (the write
        was read back), up to :data:`WRITE_ANSWER_S` after the call.

        Raises ``unavailable`` in ``words``: ``not_written`` at once while the producer is not
        connected or the link knows Kafka is away (``Retry-After`` 2 s, the link probes every
        0.5 s); ``unacknowledged`` after ``timeout_s`` without Kafka's acknowledgement, and
        ``refused`` on a retriable error (1 s; both ``suspect`` the link, so the next write is
        refused at once if Kafka is away); ``not_read_back`` (1 s) when sent but not read.

        The send runs as a task of its own and is not cancelled when the bound passes: a
        transactional send would abort on cancellation, and aiokafka's abort waits for the
        broker as its send does. It ends when Kafka answers (written, or failed: logged).
        """
        began = time.monotonic()
        link = self._link
        where = "the Kafka cluster" if link is None else f"Kafka at {link.bootstrap}"
        if not self._connected or (link is not None and link.known_down):
            why = (link.not_ready_reason() if link is not None else None) or (
                f"{where} is not reachable yet"
            )
            raise unavailable(words.not_written(why), retry_after_s=RETRY_AFTER_DOWN_S)
        sending = asyncio.ensure_future(send())
        self._unanswered.add(sending)
        sending.add_done_callback(self._unanswered.discard)
        try:
            await asyncio.wait_for(asyncio.shield(sending), timeout_s)
        except TimeoutError as err:
            sending.add_done_callback(self._answered_late)
            if link is not None:
                link.suspect()
            message = words.unacknowledged(where, timeout_s)
            raise unavailable(message, retry_after_s=RETRY_AFTER_SLOW_S) from err
        except InfrastructureError as err:
            if not err.retriable:
                raise
            if link is not None:
                link.suspect()
            message = words.refused(where, err)
            raise unavailable(message, retry_after_s=RETRY_AFTER_SLOW_S) from err
        except asyncio.CancelledError:  # the request's client went away: the send goes on
            sending.add_done_callback(self._answered_late)
            raise
        if read is not None and not await read_back(read, deadline=began + WRITE_ANSWER_S):
            message = words.not_read_back(WRITE_ANSWER_S)
            raise unavailable(message, retry_after_s=RETRY_AFTER_SLOW_S)

    def _answered_late(self, sending: asyncio.Future[None]) -> None:
        """A write answered "may or may not have been written" ended: say how, for whoever
        reads the log to tell the user."""
        if sending.cancelled():
            outcome = "was given up (the API stopped)"
        elif (error := sending.exception()) is not None:
            outcome = f"failed: {error}"
        else:
            outcome = "was written after all"
        _log.warning("a write by %s answered before Kafka acknowledged it %s", self._what, outcome)

    async def stop(self) -> None:
        """Give up connecting and on unacknowledged writes (bounded), then stop the producer;
        idempotent."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, InfrastructureError):
                await connecting
        unanswered, self._unanswered = self._unanswered, set()
        for sending in unanswered:
            sending.cancel()
        if unanswered:  # a transactional send's abort may wait for the broker: not for ever
            await asyncio.wait(unanswered, timeout=_STOP_WRITES_S)
        await self._producer.stop()


async def read_back(done: Callable[[], bool], *, deadline: float) -> bool:
    """Wait until ``done()`` holds (True) or the monotonic ``deadline`` passed (False)."""
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_READ_BACK_POLL_S)
    return True
