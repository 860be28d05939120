"""The projector's fetch batching (decision 58): while records keep coming, a fetch waits out
the apply interval and takes what arrived meanwhile into the same transaction; after a quiet
spell it is applied at once."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import TopicPartition

from aion_common.settings import Settings
from aion_projector.service import ProjectorService

_TP0 = TopicPartition("aion.events", 0)
_TP1 = TopicPartition("aion.events", 1)


class _Consumer:
    """Stands for aiokafka's consumer: hands out the queued fetches, then nothing."""

    def __init__(self, *fetches: dict[TopicPartition, list[Any]]) -> None:
        self.fetches = list(fetches)
        self.asked: list[tuple[int, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        self.asked.append((timeout_ms, max_records))
        return self.fetches.pop(0) if self.fetches else {}


def _service(interval: float, max_records: int = 500) -> ProjectorService:
    return ProjectorService(Settings(), max_records=max_records, apply_interval=interval)


async def test_a_busy_fetch_takes_in_what_arrives_within_the_interval() -> None:
    service = _service(0.05)
    service._applied_at = time.monotonic()  # an apply just started: busy
    consumer = _Consumer({_TP0: ["c"], _TP1: ["d"]})
    fetched = await service._gather_more(consumer, {_TP0: ["a", "b"]})  # type: ignore[arg-type]
    assert fetched == {_TP0: ["a", "b", "c"], _TP1: ["d"]}
    assert consumer.asked == [(0, 498)]


async def test_a_fetch_after_a_quiet_spell_is_applied_at_once() -> None:
    service = _service(60.0)
    service._applied_at = time.monotonic() - 61.0
    consumer = _Consumer({_TP0: ["c"]})
    fetched = await service._gather_more(consumer, {_TP0: ["a"]})  # type: ignore[arg-type]
    assert fetched == {_TP0: ["a"]}
    assert consumer.asked == []


async def test_a_full_fetch_is_applied_at_once() -> None:
    service = _service(60.0, max_records=2)
    service._applied_at = time.monotonic()
    consumer = _Consumer({_TP0: ["c"]})
    fetched = await service._gather_more(consumer, {_TP0: ["a"], _TP1: ["b"]})  # type: ignore[arg-type]
    assert fetched == {_TP0: ["a"], _TP1: ["b"]}
    assert consumer.asked == []


async def test_no_interval_means_every_fetch_at_once() -> None:
    service = _service(0.0)
    service._applied_at = time.monotonic()
    consumer = _Consumer({_TP0: ["c"]})
    assert await service._gather_more(consumer, {_TP0: ["a"]}) == {_TP0: ["a"]}  # type: ignore[arg-type]
    assert consumer.asked == []
