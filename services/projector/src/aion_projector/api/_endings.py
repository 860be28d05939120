"""When a waited-for run ends: :class:`RunEndings` and its Kafka implementation.

``GET /v1/workflows/{id}/result`` long-polls the views. Polling alone answers late: a run that
ends 30 ms after its start was answered at the next poll, 100 ms later, and one that ends
after a second up to a second late. The engine marks every events record whose batch ends a
run or blocks it with the :data:`~aion_common.kafka.topics.RUN_ENDED_HEADER` header
(decision 60); :class:`KafkaRunEndings` follows the events topic's new records, reads their
keys and that header, and rings the :class:`Bell` of whoever waits for that workflow. Only a
marked record of a watched workflow is decoded: the bell then holds how the run closed
(:class:`~aion_projector.changes.RunClosing`, what the projector writes to the views from the
same event), so the waiter answers from the log without waiting for the views (decision 64).
It notes each run it answered so (:meth:`KafkaRunEndings.answered`) until the views hold it
too: a describe right after a result waits for them (see
:func:`~aion_projector.api._reads.views_caught_up`). A missed ring (the reader is away with
the broker, an engine older than the header) only means waiting for the next poll, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, cast

from aiokafka.structs import ConsumerRecord

from aion_common.codecs import Codec, encode_key
from aion_common.domain import TERMINAL_EVENT_TYPES, DecodeError
from aion_common.kafka import Topics
from aion_common.kafka.topics import RUN_ENDED_HEADER
from aion_common.settings import Settings
from aion_projector.api._tail import TopicTail
from aion_projector.changes import ClosingEvent, RunClosing, run_closing

__all__ = [
    "ANSWERED_KEPT",
    "RECENT_BYTES",
    "RECENT_KEPT",
    "RECENT_S",
    "Bell",
    "KafkaRunEndings",
    "RunEndings",
]

_log = logging.getLogger("aion.api.endings")

ANSWERED_KEPT = 4096
"""Runs answered from the log remembered until a read finds them in the views (oldest
forgotten first: a run nobody describes must not be kept forever)."""
RECENT_KEPT = 1024
RECENT_BYTES = 8 * 1024 * 1024
RECENT_S = 5.0
"""The latest endings kept, undecoded, for a wait that begins just after its run ended
(before the views have it): the latest per workflow, at most this many and bytes, and only
this young (an older one is in the views; it must not answer for a purged and reused id)."""


@dataclass(frozen=True, slots=True)
class _Ended:
    run_id: str
    record: ConsumerRecord[bytes, bytes]
    at: float
    """When it was read (monotonic)."""


class Bell(asyncio.Event):
    """Set when a run of the watched workflow ends or blocks; ``endings`` holds how each run
    that rang closed (None for a block, or a record that did not decode)."""

    def __init__(self) -> None:
        super().__init__()
        self.endings: list[RunClosing | None] = []

    def ring(self, closing: RunClosing | None = None) -> None:
        """Record an ending (None: how is unknown) and wake the waiter."""
        self.endings.append(closing)
        self.set()

    def take(self) -> list[RunClosing | None]:
        """The endings rung since the last take; clears the bell."""
        taken, self.endings = self.endings, []
        self.clear()
        return taken


class RunEndings(Protocol):
    """Rings for the workflows someone waits for when one of their runs ends or blocks."""

    def watch(self, workflow_id: str) -> contextlib.AbstractContextManager[Bell]:
        """A bell rung whenever a run of ``workflow_id`` ends or blocks from now on, until
        the ``with`` block is left (take its endings before reading the views again)."""

    def answered(self, workflow_id: str, run_id: str) -> None:
        """``run_id`` was answered from the log: reads of ``workflow_id`` wait for the views
        to hold it closed (until :meth:`caught_up`)."""

    def ahead_of_views(self, workflow_id: str) -> tuple[str, float] | None:
        """The run of ``workflow_id`` answered from the log and not yet seen in the views,
        and when (``time.monotonic()``)."""

    def caught_up(self, workflow_id: str) -> None:
        """The views hold what was answered for ``workflow_id`` (or waiting is over)."""


class KafkaRunEndings:
    """:class:`RunEndings` from the events topic's records marked with the header."""

    def __init__(self, settings: Settings) -> None:
        self._waiting: dict[bytes, set[Bell]] = {}
        self._answered: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._recent: OrderedDict[bytes, _Ended] = OrderedDict()
        self._recent_bytes = 0
        self._codec = Codec(payload_limit=settings.payload_limit_bytes)
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
    def watch(self, workflow_id: str) -> Iterator[Bell]:
        key = encode_key(workflow_id)
        bell = Bell()
        self._waiting.setdefault(key, set()).add(bell)
        recent = self._recent.get(key)
        if recent is not None and time.monotonic() - recent.at <= RECENT_S:
            bell.ring(self._closing(recent.record, recent.run_id))  # it ended as the wait began
        try:
            yield bell
        finally:
            bells = self._waiting.get(key)
            if bells is not None:
                bells.discard(bell)
                if not bells:
                    del self._waiting[key]

    def answered(self, workflow_id: str, run_id: str) -> None:
        self._answered[workflow_id] = (run_id, time.monotonic())
        self._answered.move_to_end(workflow_id)
        while len(self._answered) > ANSWERED_KEPT:
            self._answered.popitem(last=False)

    def ahead_of_views(self, workflow_id: str) -> tuple[str, float] | None:
        return self._answered.get(workflow_id)

    def caught_up(self, workflow_id: str) -> None:
        self._answered.pop(workflow_id, None)

    def _deliver(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        ended = next((value for name, value in record.headers if name == RUN_ENDED_HEADER), None)
        if ended is None:
            return
        run_id = ended.decode(errors="replace")
        self._remember(record.key, run_id, record)
        bells = self._waiting.get(record.key)
        if bells:
            closing = self._closing(record, run_id)
            for bell in bells:
                bell.ring(closing)

    def _remember(self, key: bytes, run_id: str, record: ConsumerRecord[bytes, bytes]) -> None:
        """Keep the latest ending of ``key`` (bounded by count and bytes, oldest out first)."""
        before = self._recent.pop(key, None)
        if before is not None:
            self._recent_bytes -= len(before.record.value or b"")
        self._recent[key] = _Ended(run_id, record, time.monotonic())
        self._recent_bytes += len(record.value or b"")
        while self._recent and (
            len(self._recent) > RECENT_KEPT or self._recent_bytes > RECENT_BYTES
        ):
            _, oldest = self._recent.popitem(last=False)
            self._recent_bytes -= len(oldest.record.value or b"")

    def _closing(self, record: ConsumerRecord[bytes, bytes], run_id: str) -> RunClosing | None:
        """How the record's batch closes ``run_id``: None for a block, or when the record does
        not decode (the projector dead-letters it; the waiter reads the views)."""
        try:
            batch = self._codec.decode_batch(
                record.value, topic=record.topic, partition=record.partition, offset=record.offset
            )
        except DecodeError as err:
            _log.debug("a marked record did not decode", extra={"error": str(err)})
            return None
        for event in reversed(batch.events):
            if isinstance(event, TERMINAL_EVENT_TYPES) and event.run_id == run_id:
                return run_closing(cast("ClosingEvent", event))
        return None
