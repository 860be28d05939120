"""Delivering ``RecordChildTerminal`` commands: the send port, and retry with capped backoff.

:class:`CommandSender` is the port. :class:`KafkaCommandSender` produces to ``aion.commands``
(keyed by the parent's workflow id) with an idempotent producer and returns once the broker
acknowledged. Tests wrap it to fail, lose or double a send.

:func:`deliver` follows the reference's ``run_watch``: a retriable failure (the broker is away,
a leader moved, a request timed out) is logged with the parent/child/run ids and retried after
a backoff that starts at ``initial_backoff`` and doubles up to ``max_backoff``, for as long as it
takes — the caller commits nothing past an unacknowledged record meanwhile. A non-retriable
error propagates: the service crashes and restarts from its last commit, like the reference's
invariant failures leave the watch rather than loop on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aion_common.codecs import Codec
from aion_common.domain import InfrastructureError, RecordChildTerminal
from aion_common.kafka import RETRYING, KeyedProducer
from aion_watcher.config import WatcherConfig

__all__ = ["CommandSender", "KafkaCommandSender", "deliver", "record_fields"]

_log = logging.getLogger("aion_watcher.delivery")


class CommandSender(Protocol):
    """Sends one command and returns when it is durable; raises ``InfrastructureError``."""

    async def send(self, command: RecordChildTerminal) -> None:
        """Produce ``command`` and wait for the acknowledgement."""


class KafkaCommandSender:
    """The real port: encode, produce keyed by the parent's id, await the ack."""

    def __init__(self, producer: KeyedProducer, topic: str, codec: Codec) -> None:
        """``producer`` must be started (and idempotent where the broker supports it)."""
        self._producer, self._topic, self._codec = producer, topic, codec

    async def send(self, command: RecordChildTerminal) -> None:
        """Produce ``command`` to the commands topic and wait for the broker's ack."""
        await self._producer.send(
            self._topic, command.workflow_id, self._codec.encode_command(command)
        )


def record_fields(command: RecordChildTerminal) -> dict[str, str]:
    """The ids a log line about ``command`` carries."""
    return {
        "parent_workflow_id": command.workflow_id,
        "parent_run_id": command.parent_run_id,
        "child_workflow_id": command.child_workflow_id,
        "child_run_id": command.child_run_id,
        "command_id": command.command_id,
        "outcome": type(command.outcome).__name__,
    }


async def deliver(
    sender: CommandSender,
    command: RecordChildTerminal,
    config: WatcherConfig,
    *,
    on_retry: Callable[[], None] = lambda: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Send ``command`` until acknowledged, backing off between retriable failures."""
    backoff = config.initial_backoff
    while True:
        try:
            await sender.send(command)
        except InfrastructureError as err:
            if not err.retriable:
                raise
            on_retry()
            _log.warning(
                "record send failed transiently; retrying with backoff",
                extra={
                    **record_fields(command),
                    "reason": str(err),
                    "backoff_s": backoff,
                    **RETRYING,
                },
            )
            await sleep(backoff)
            backoff = min(backoff * 2, config.max_backoff)
        else:
            return
