"""Where the API sends the commands it builds: a port, and its Kafka implementation.

The API degrades rather than hangs when Kafka is away (issue 19): :class:`KafkaCommandSink`
starts without the broker (it connects in the background, waiting on its
:class:`~aion_common.kafka.link.BrokerLink`), refuses a command at once while the link knows
the cluster is down, and otherwise waits at most ``produce_timeout_s`` for the broker's
acknowledgement. Either way it raises :class:`CommandNotQueued`, which the API answers with
``503`` and ``Retry-After``; a client retrying with the same ``request_id`` sends the same
command id, which the engine applies once.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

from aion_common.codecs import Codec
from aion_common.domain import Command, InfrastructureError
from aion_common.kafka import KeyedProducer, Topics
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_projector.api._writer import WriterConnection

__all__ = ["DEFAULT_PRODUCE_TIMEOUT_S", "CommandNotQueued", "CommandSink", "KafkaCommandSink"]

DEFAULT_PRODUCE_TIMEOUT_S = 5.0
"""Half the clients' default request timeout (10 s): a 503 reaches them before they give up."""
_RETRY_AFTER_DOWN_S = 2  # the cluster is known to be away: the link probes every 0.5 s
_RETRY_AFTER_SLOW_S = 1  # a send that timed out: the next may well go through


class CommandNotQueued(InfrastructureError):
    """The broker did not acknowledge the command; ``retry_after_s`` says when to try again.

    ``maybe_queued``: the send timed out after the record was handed to the Kafka client, so
    it may still reach the broker (a retry with the same request id is applied once anyway).
    """

    def __init__(self, message: str, *, retry_after_s: int, maybe_queued: bool) -> None:
        super().__init__(message, retriable=True)
        self.retry_after_s = retry_after_s
        self.maybe_queued = maybe_queued


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

        Raises :class:`CommandNotQueued` at once while the cluster is known to be away, or
        after ``produce_timeout_s`` without an acknowledgement.
        """
        value = self._codec.encode_command(command)
        where = f"the Kafka cluster at {self.link.bootstrap}"
        if not self.connected or self.link.known_down:
            reason = self.link.not_ready_reason() or f"{where}: not connected yet"
            raise CommandNotQueued(
                f"{reason}; the command was not queued: retry with the same request_id",
                retry_after_s=_RETRY_AFTER_DOWN_S,
                maybe_queued=False,
            )
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._producer.send(self._topic, command.workflow_id, value)
        except TimeoutError as err:
            self.link.suspect()
            raise CommandNotQueued(
                f"{where} did not acknowledge the command within {self._timeout_s:g} s; it may "
                "still be queued: retry with the same request_id (it is applied once)",
                retry_after_s=_RETRY_AFTER_SLOW_S,
                maybe_queued=True,
            ) from err
        except InfrastructureError as err:
            if not err.retriable:
                raise
            self.link.suspect()
            raise CommandNotQueued(
                f"{where} refused the command ({err}); retry with the same request_id",
                retry_after_s=_RETRY_AFTER_SLOW_S,
                maybe_queued=True,
            ) from err
