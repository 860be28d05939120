"""Where the API sends the commands it builds: a port, and its Kafka implementation."""

from __future__ import annotations

from typing import Protocol

from aion_common.codecs import Codec
from aion_common.domain import Command
from aion_common.kafka import KeyedProducer, Topics
from aion_common.settings import Settings

__all__ = ["CommandSink", "KafkaCommandSink"]


class CommandSink(Protocol):
    """Accepts a command for the engine; returns once it is durably queued."""

    async def send(self, command: Command) -> None:
        """Queue ``command``; raise ``InfrastructureError`` when it could not be."""


class KafkaCommandSink:
    """Produces commands to ``<prefix>.commands``, keyed by workflow id (idempotent producer).

    Use ``async with`` or :meth:`start`/:meth:`stop`; ``stop`` is idempotent.
    """

    def __init__(self, settings: Settings, *, codec: Codec | None = None) -> None:
        self._topic = Topics(settings.topic_prefix).commands
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._producer = KeyedProducer(
            settings,
            # a broker without transactions (AION_TRANSACTIONS=off) may lack idempotence too
            idempotent=settings.transactions != "off",
            client_id=f"aion-api-{settings.instance_id}",
        )

    async def start(self) -> None:
        """Connect to the brokers."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self._producer.stop()

    async def __aenter__(self) -> KafkaCommandSink:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def send(self, command: Command) -> None:
        """Encode ``command`` and wait for the broker's acknowledgement."""
        value = self._codec.encode_command(command)
        await self._producer.send(self._topic, command.workflow_id, value)
