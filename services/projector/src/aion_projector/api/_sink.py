"""Where the API sends the commands it builds: a port, and its Kafka implementation.

The API degrades rather than hangs when Kafka is away (issue 19): :class:`KafkaCommandSink`
starts without the broker (it connects in the background, waiting on its
:class:`~aion_common.kafka.link.BrokerLink`) and sends through
:meth:`WriterConnection.write <aion_projector.api._writer.WriterConnection.write>`, the version
catalog's and the schedule store's bounded write: a command is refused at once while the link
knows the cluster is down (``Retry-After: 2``), and otherwise waits at most
``produce_timeout_s`` for the broker's acknowledgement (``Retry-After: 1``; the link is
suspected). Either way it raises :class:`CommandNotQueued`, which the API answers with ``503``
and ``Retry-After``; a client retrying with the same ``request_id`` sends the same command id,
which the engine applies once.

The command producer is idempotent, not transactional, so cancelling its send at the bound (as
this module once did) would have been safe too; the send runs as its own task anyway, as every
API write does: a command that timed out may still be queued (aiokafka keeps the record and
sends it on Kafka's return, as the answer says), and its late outcome is logged. There is no
read-back: a command is queued once Kafka acknowledges it, and the engine's answer is read
through the command's status, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from aion_common.codecs import Codec
from aion_common.domain import Command, InfrastructureError
from aion_common.kafka import KeyedProducer, Topics
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_projector.api._writer import WriterConnection, WriteUnavailable

__all__ = ["DEFAULT_PRODUCE_TIMEOUT_S", "CommandNotQueued", "CommandSink", "KafkaCommandSink"]

DEFAULT_PRODUCE_TIMEOUT_S = 5.0
"""Half the clients' default request timeout (10 s): a 503 reaches them before they give up."""


class CommandNotQueued(WriteUnavailable):
    """A command that was not queued, or not confirmed: the message says which, and to retry
    with the same request id; the API answers it 503 with ``Retry-After: retry_after_s``."""


@dataclass(frozen=True, slots=True)
class _CommandWords:
    """A command's answers when it was not queued, or not confirmed: a
    :class:`~aion_projector.api._writer.WriteWords` (a command is never read back)."""

    def not_written(self, why: str) -> str:
        return f"{why}; the command was not queued: retry with the same request_id"

    def unacknowledged(self, where: str, timeout_s: float) -> str:
        return (
            f"{where} did not acknowledge the command within {timeout_s:g} s; it may still be "
            "queued: retry with the same request_id (it is applied once)"
        )

    def refused(self, where: str, error: InfrastructureError) -> str:
        return f"{where} refused the command ({error}); retry with the same request_id"

    def not_read_back(self, within_s: float) -> str:
        # never asked: a command's write has no read-back (see the module docstring)
        return f"the command was queued but not confirmed within {within_s:g} s"


_WORDS = _CommandWords()


class CommandSink(Protocol):
    """Accepts a command for the engine; returns once it is durably queued."""

    async def send(self, command: Command) -> None:
        """Queue ``command``; raise ``InfrastructureError`` when it could not be."""


class KafkaCommandSink:
    """Produces commands to ``<prefix>.commands``, keyed by workflow id (idempotent producer).

    Use ``async with`` or :meth:`start`/:meth:`stop`; ``stop`` is idempotent. ``link`` is the
    process's broker link (one of its own if not given; started and stopped here either way).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        link: BrokerLink | None = None,
        produce_timeout_s: float = DEFAULT_PRODUCE_TIMEOUT_S,
    ) -> None:
        if produce_timeout_s <= 0:
            raise ValueError("produce_timeout_s must be positive")
        self._topic = Topics(settings.topic_prefix).commands
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._timeout_s = produce_timeout_s
        self.link = link or BrokerLink(settings, name="api")
        self._producer = KeyedProducer(
            settings,
            # a broker without transactions (AION_TRANSACTIONS=off) may lack idempotence too
            idempotent=settings.transactions != "off",
            client_id=f"aion-api-{settings.instance_id}",
            # also bounds the wait for a topic's metadata inside a send
            request_timeout_ms=max(1000, math.ceil(produce_timeout_s * 1000)),
        )
        self._connection = WriterConnection(
            self._producer,
            self.link,
            what="the command producer",
            refused="every command is refused",
            task_name="api.connect",
        )

    @property
    def connected(self) -> bool:
        """The producer is started (it may still find the cluster away)."""
        return self._connection.connected

    async def start(self) -> None:
        """Connect; if the cluster does not answer, go on connecting in the background."""
        await self.link.start()
        await self._connection.start()

    async def stop(self) -> None:
        """Flush (bounded) and disconnect."""
        try:
            await self._connection.stop()
        finally:
            await self.link.stop()

    async def __aenter__(self) -> KafkaCommandSink:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def send(self, command: Command) -> None:
        """Encode ``command`` and wait for the broker's acknowledgement (bounded).

        Raises :class:`CommandNotQueued` at once while the cluster is known to be away (or the
        producer is not connected yet), after ``produce_timeout_s`` without an acknowledgement,
        or when Kafka refuses the send with a retriable error.
        """
        value = self._codec.encode_command(command)

        async def send() -> None:
            await self._producer.send(self._topic, command.workflow_id, value)

        await self._connection.write(
            send, _WORDS, timeout_s=self._timeout_s, unavailable=CommandNotQueued
        )
