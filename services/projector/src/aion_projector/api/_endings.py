"""When a waited-for run ends: :class:`RunEndings` and its Kafka implementation.

``GET /v1/workflows/{id}/result`` long-polls the views. Polling alone answers late: a run that
ends 30 ms after its start was answered at the next poll, 100 ms later, and one that ends
after a second up to a second late. The engine marks every events record whose batch ends a
run or blocks it with the :data:`~aion_common.kafka.topics.RUN_ENDED_HEADER` header
(decision 60); :class:`KafkaRunEndings` follows the events topic's new records, reads only
their keys and that header — no event is decoded — and rings the bell of whoever waits for that
workflow. The waiter then reads the views, which the projector updates a few milliseconds
after the same record (see :func:`~aion_projector.api._reads.result_route`). A missed ring (the
reader is away with the broker, an engine older than the header) only means waiting for the
next poll, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol

from aiokafka.structs import ConsumerRecord

from aion_common.codecs import encode_key
from aion_common.kafka import Topics
from aion_common.kafka.topics import RUN_ENDED_HEADER
from aion_common.settings import Settings
from aion_projector.api._tail import TopicTail

__all__ = ["KafkaRunEndings", "RunEndings"]

_log = logging.getLogger("aion.api.endings")


class RunEndings(Protocol):
    """Rings for the workflows someone waits for when one of their runs ends or blocks."""

    def watch(self, workflow_id: str) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set whenever a run of ``workflow_id`` ends or blocks from now on, until
        the ``with`` block is left (clear it before reading the views again)."""


class KafkaRunEndings:
    """:class:`RunEndings` from the events topic's records marked with the header."""

    def __init__(self, settings: Settings) -> None:
        self._waiting: dict[bytes, set[asyncio.Event]] = {}
        self._tail = TopicTail(
            settings,
            Topics(settings.topic_prefix).events,
            deliver=self._deliver,
            what="run endings",
            client_id=f"aion-api-endings-{settings.instance_id}",
            log=_log,
        )

    @property
    def ready(self) -> asyncio.Event:
        """Set while the reader is at the topic's end: every later ending rings."""
        return self._tail.ready

    async def start(self) -> None:
        """Begin reading (in the background: the topic may not exist yet)."""
        await self._tail.start()

    async def stop(self) -> None:
        """Stop reading; waiters fall back on polling. Idempotent."""
        await self._tail.stop()

    async def __aenter__(self) -> KafkaRunEndings:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def watch(self, workflow_id: str) -> Iterator[asyncio.Event]:
        key = encode_key(workflow_id)
        bell = asyncio.Event()
        self._waiting.setdefault(key, set()).add(bell)
        try:
            yield bell
        finally:
            bells = self._waiting.get(key)
            if bells is not None:
                bells.discard(bell)
                if not bells:
                    del self._waiting[key]

    def _deliver(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None or record.key not in self._waiting:
            return
        if not any(name == RUN_ENDED_HEADER for name, _ in record.headers):
            return
        for bell in self._waiting.get(record.key, ()):
            bell.set()
