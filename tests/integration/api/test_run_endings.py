"""Result long-polls answer when the run ends, not at the next poll: the route with a bell rung
by hand (SQLite views), and ``KafkaRunEndings`` ringing from the events topic (real broker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from aion_common.domain import EventBatch, Payload, WorkflowCompleted
from aion_common.kafka import Topics, ensure_topics
from aion_common.kafka.topics import RUN_ENDED_HEADER
from aion_common.settings import Settings
from aion_projector import Projection
from aion_projector.api import create_app
from aion_projector.api._endings import KafkaRunEndings

from .conftest import MemorySink, Sessions, _client
from .dataset import T0, TOPIC

# Polling alone would read the views again only after the whole wait: an answer before it can
# only come from the bell.
_POLL_S = 30.0
_WAIT_S = 25.0


class HandBell:
    """``RunEndings`` the test rings."""

    def __init__(self) -> None:
        self.bells: dict[str, list[asyncio.Event]] = defaultdict(list)
        self._watched: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    @contextlib.contextmanager
    def watch(self, workflow_id: str) -> Iterator[asyncio.Event]:
        bell = asyncio.Event()
        self.bells[workflow_id].append(bell)
        self._watched[workflow_id].set()
        try:
            yield bell
        finally:
            self.bells[workflow_id].remove(bell)

    def ring(self, workflow_id: str) -> None:
        for bell in self.bells[workflow_id]:
            bell.set()

    async def listening(self, workflow_id: str) -> None:
        await asyncio.wait_for(self._watched[workflow_id].wait(), 10)


def _app(sessions: Sessions, hand: HandBell, *, poll_interval: float) -> FastAPI:
    return create_app(
        Settings(),
        session_factory=sessions,
        command_sink=MemorySink(),
        poll_interval=poll_interval,
        run_endings=hand,
    )


async def _complete_order_3(sessions: Sessions) -> None:
    """The data set's running ``order-3`` completes (its run's second event)."""
    done = WorkflowCompleted(
        workflow_id="order-3",
        run_id="r-o3",
        seq=2,
        recorded_at=T0 + timedelta(days=1),
        command_id="cmd-order-3-done",
        result=Payload.from_json({"total": 3}),
    )
    batch = EventBatch(
        workflow_id="order-3", command_id="cmd-order-3-done", writer="engine-1", events=(done,)
    )
    async with sessions() as session:
        await Projection(TOPIC).apply(session, [(0, 10_000, batch)])


@pytest.mark.parametrize("views_first", [True, False], ids=["views-first", "ring-first"])
async def test_a_ring_answers_the_result_long_poll_at_once(
    sqlite_views: Sessions, views_first: bool
) -> None:
    hand = HandBell()
    async with _client(_app(sqlite_views, hand, poll_interval=_POLL_S)) as client:
        waiting = asyncio.create_task(
            client.get("/v1/workflows/order-3/result", params={"wait": _WAIT_S})
        )
        await hand.listening("order-3")
        # The engine's record and the projector's write race: either may come first (the
        # route reads the views again for a moment after a ring).
        if views_first:
            await _complete_order_3(sqlite_views)
            hand.ring("order-3")
        else:
            hand.ring("order-3")
            await _complete_order_3(sqlite_views)
        answer = await asyncio.wait_for(waiting, _WAIT_S - 5)
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["result"]) == ("COMPLETED", {"total": 3})
    assert not hand.bells["order-3"]  # the request's watch ended with it


async def test_a_ring_for_a_run_still_open_in_the_views_keeps_waiting(
    sqlite_views: Sessions,
) -> None:
    hand = HandBell()
    async with _client(_app(sqlite_views, hand, poll_interval=0.05)) as client:
        waiting = asyncio.create_task(
            client.get("/v1/workflows/order-3/result", params={"wait": 0.6})
        )
        await hand.listening("order-3")
        hand.ring("order-3")
        answer = await asyncio.wait_for(waiting, 10)
    assert answer.status_code == 202
    assert (answer.json()["closed"], answer.json()["status"]) == (False, "RUNNING")


@pytest.mark.kafka
async def test_kafka_run_endings_ring_for_marked_records_of_watched_workflows(
    aion_settings: Settings,
) -> None:
    events = Topics(aion_settings.topic_prefix).events
    await ensure_topics(aion_settings, Topics(aion_settings.topic_prefix))
    producer = AIOKafkaProducer(bootstrap_servers=aion_settings.bootstrap_servers)
    await producer.start()
    marked = [(RUN_ENDED_HEADER, b"run-1")]
    try:
        async with KafkaRunEndings(aion_settings) as endings:
            await asyncio.wait_for(endings.ready.wait(), 30)
            with endings.watch("w-1") as first, endings.watch("w-3") as third:
                # one partition: the records arrive in this order. Values are not read.
                await producer.send_and_wait(events, b"not a batch", key=b"w-1", partition=0)
                await producer.send_and_wait(events, b"x", key=b"w-2", partition=0, headers=marked)
                await producer.send_and_wait(events, b"x", key=b"w-3", partition=0, headers=marked)
                await asyncio.wait_for(third.wait(), 30)
                assert not first.is_set()  # its record was not marked
                await producer.send_and_wait(events, b"x", key=b"w-1", partition=0, headers=marked)
                await asyncio.wait_for(first.wait(), 30)
    finally:
        await producer.stop()
