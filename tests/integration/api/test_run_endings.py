"""Result long-polls answer when the run ends, not at the next poll: the route with a bell rung
by hand (SQLite views), and ``KafkaRunEndings`` ringing from the events topic (real broker)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI

from aion_common.codecs import Codec
from aion_common.domain import EventBatch, Payload, WorkflowCompleted
from aion_common.kafka import Topics, ensure_topics
from aion_common.kafka.topics import RUN_ENDED_HEADER
from aion_common.settings import Settings
from aion_projector import Projection
from aion_projector.api import create_app
from aion_projector.api._endings import (
    RECENT_BYTES,
    RECENT_KEPT,
    RECENT_S,
    Bell,
    KafkaRunEndings,
)
from aion_projector.changes import RunClosing, run_closing

from .conftest import MemorySink, Sessions, _client
from .dataset import T0, TOPIC

# Polling alone would read the views again only after the whole wait: an answer before it can
# only come from the bell.
_POLL_S = 30.0
_WAIT_S = 25.0


class HandBell:
    """``RunEndings`` the test rings."""

    def __init__(self) -> None:
        self.bells: dict[str, list[Bell]] = defaultdict(list)
        self._watched: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.ahead: dict[str, str] = {}
        self.answered_at: dict[str, float] = {}

    @contextlib.contextmanager
    def watch(self, workflow_id: str) -> Iterator[Bell]:
        bell = Bell()
        self.bells[workflow_id].append(bell)
        self._watched[workflow_id].set()
        try:
            yield bell
        finally:
            self.bells[workflow_id].remove(bell)

    def answered(self, workflow_id: str, run_id: str) -> None:
        self.ahead[workflow_id] = run_id
        self.answered_at[workflow_id] = time.monotonic()

    def ahead_of_views(self, workflow_id: str) -> tuple[str, float] | None:
        if workflow_id not in self.ahead:
            return None
        return self.ahead[workflow_id], self.answered_at[workflow_id]

    def caught_up(self, workflow_id: str) -> None:
        self.ahead.pop(workflow_id, None)

    def ring(self, workflow_id: str, closing: RunClosing | None = None) -> None:
        for bell in self.bells[workflow_id]:
            bell.ring(closing)

    async def listening(self, workflow_id: str) -> None:
        await asyncio.wait_for(self._watched[workflow_id].wait(), 10)


@pytest.fixture
def hand() -> HandBell:
    """The API's run endings, rung by the test."""
    return HandBell()


def _app(sessions: Sessions, hand: HandBell, *, poll_interval: float) -> FastAPI:
    return create_app(
        Settings(),
        session_factory=sessions,
        command_sink=MemorySink(),
        poll_interval=poll_interval,
        run_endings=hand,
    )


@contextlib.asynccontextmanager
async def _result_poll(
    sessions: Sessions,
    hand: HandBell,
    *,
    poll_interval: float,
    wait: float,
    run_id: str | None = None,
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.Task[httpx.Response]]]:
    """The API with a long poll of ``order-3``'s result under way, its bell being watched."""
    params: dict[str, str | float] = {"wait": wait}
    if run_id is not None:
        params["run_id"] = run_id
    async with _client(_app(sessions, hand, poll_interval=poll_interval)) as client:
        waiting = asyncio.create_task(client.get("/v1/workflows/order-3/result", params=params))
        await hand.listening("order-3")
        yield client, waiting


_DONE = WorkflowCompleted(
    workflow_id="order-3",
    run_id="r-o3",
    seq=2,
    recorded_at=T0 + timedelta(days=1),
    command_id="cmd-order-3-done",
    result=Payload.from_json({"total": 3}),
)
_DONE_BATCH = EventBatch(
    workflow_id="order-3", command_id="cmd-order-3-done", writer="engine-1", events=(_DONE,)
)


async def _complete_order_3(sessions: Sessions) -> None:
    """The data set's running ``order-3`` completes (its run's second event)."""
    async with sessions() as session:
        await Projection(TOPIC).apply(session, [(0, 10_000, _DONE_BATCH)])


@pytest.mark.parametrize("views_first", [True, False], ids=["views-first", "ring-first"])
async def test_a_ring_answers_the_result_long_poll_at_once(
    sqlite_views: Sessions, hand: HandBell, views_first: bool
) -> None:
    polling = _result_poll(sqlite_views, hand, poll_interval=_POLL_S, wait=_WAIT_S)
    async with polling as (_, waiting):
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
    sqlite_views: Sessions, hand: HandBell
) -> None:
    polling = _result_poll(sqlite_views, hand, poll_interval=0.05, wait=0.6)
    async with polling as (_, waiting):
        hand.ring("order-3")
        answer = await asyncio.wait_for(waiting, 10)
    assert answer.status_code == 202
    assert (answer.json()["closed"], answer.json()["status"]) == (False, "RUNNING")


async def test_a_ring_with_how_the_run_closed_answers_before_the_views_and_reads_wait_for_them(
    sqlite_views: Sessions, hand: HandBell
) -> None:
    polling = _result_poll(sqlite_views, hand, poll_interval=_POLL_S, wait=_WAIT_S)
    async with polling as (client, waiting):
        hand.ring("order-3", run_closing(_DONE))  # the views never hear of it before the answer
        answer = await asyncio.wait_for(waiting, _WAIT_S - 5)
        assert answer.status_code == 200
        body = answer.json()
        assert (body["status"], body["run_id"], body["result"]) == (
            "COMPLETED",
            "r-o3",
            {"total": 3},
        )
        assert hand.ahead == {"order-3": "r-o3"}
        # A describe now waits for the views to hold what the result said (seconds, if the
        # projector is that far behind: a stack just started) ...
        describing = asyncio.create_task(client.get("/v1/workflows/order-3"))
        await asyncio.sleep(2.0)
        assert not describing.done()
        await _complete_order_3(sqlite_views)
        described = await asyncio.wait_for(describing, 10)
        assert described.json()["current_run"]["status"] == "COMPLETED"
        assert not hand.ahead  # ... once: the next read does not wait
        again = await client.get("/v1/workflows/order-3/history")
        assert again.json()["events"][-1]["event_type"] == "WorkflowCompleted"


async def test_reads_long_after_an_answer_from_the_log_do_not_wait(
    sqlite_views: Sessions, hand: HandBell
) -> None:
    hand.answered("order-3", "r-o3")
    hand.answered_at["order-3"] -= 60  # answered a minute ago; the views never got it
    async with _client(_app(sqlite_views, hand, poll_interval=_POLL_S)) as client:
        described = await asyncio.wait_for(client.get("/v1/workflows/order-3"), 5)
    assert described.json()["current_run"]["status"] == "RUNNING"
    assert not hand.ahead


async def test_an_ending_of_another_run_does_not_answer(
    sqlite_views: Sessions, hand: HandBell
) -> None:
    other = RunClosing(
        workflow_id="order-3", run_id="r-other", status="COMPLETED", closed_at=T0, result="1"
    )
    polling = _result_poll(sqlite_views, hand, poll_interval=0.05, wait=0.6, run_id="r-o3")
    async with polling as (_, waiting):
        hand.ring("order-3", other)
        answer = await asyncio.wait_for(waiting, 10)
    assert answer.status_code == 202
    assert (answer.json()["run_id"], answer.json()["status"]) == ("r-o3", "RUNNING")
    assert not hand.ahead


async def test_a_continue_as_new_is_followed_to_the_chains_end(
    sqlite_views: Sessions, hand: HandBell
) -> None:
    continued = RunClosing(
        workflow_id="order-3",
        run_id="r-o3",
        status="CONTINUED_AS_NEW",
        closed_at=T0,
        next_run_id="r-o3-next",
    )
    failed = RunClosing(
        workflow_id="order-3",
        run_id="r-o3-next",
        status="FAILED",
        closed_at=T0,
        error_message="boom",
        error_type="ValueError",
    )
    polling = _result_poll(sqlite_views, hand, poll_interval=_POLL_S, wait=_WAIT_S, run_id="r-o3")
    async with polling as (_, waiting):
        hand.ring("order-3", continued)
        hand.ring("order-3", failed)
        answer = await asyncio.wait_for(waiting, _WAIT_S - 5)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["run_id"], body["status"], body["error_message"], body["error_type"]) == (
        "r-o3-next",
        "FAILED",
        "boom",
        "ValueError",
    )


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
            with (
                endings.watch("w-1") as first,
                endings.watch("w-3") as third,
                endings.watch("order-3") as order,
            ):
                # one partition: the records arrive in this order. Only marked records of
                # watched workflows are decoded; one that does not decode rings all the same.
                await producer.send_and_wait(events, b"not a batch", key=b"w-1", partition=0)
                await producer.send_and_wait(events, b"x", key=b"w-2", partition=0, headers=marked)
                await producer.send_and_wait(events, b"x", key=b"w-3", partition=0, headers=marked)
                await asyncio.wait_for(third.wait(), 30)
                assert not first.is_set()  # its record was not marked
                assert third.take() == [None]
                await producer.send_and_wait(events, b"x", key=b"w-1", partition=0, headers=marked)
                await asyncio.wait_for(first.wait(), 30)
                value = Codec().encode_batch(_DONE_BATCH)
                ended = [(RUN_ENDED_HEADER, b"r-o3")]
                await producer.send_and_wait(
                    events, value, key=b"order-3", partition=0, headers=ended
                )
                await asyncio.wait_for(order.wait(), 30)
                assert order.take() == [run_closing(_DONE)]
                assert not order.is_set()
            # A wait that begins just after the run ended (before the views could have it)
            # finds the latest ending at once.
            with endings.watch("order-3") as late, endings.watch("w-2") as other:
                assert late.take() == [run_closing(_DONE)]
                assert other.take() == [None]  # its record did not decode
    finally:
        await producer.stop()


def test_the_latest_endings_kept_are_bounded_by_count_and_bytes() -> None:
    endings = KafkaRunEndings(Settings())  # not started: records handed in directly

    def ending(key: bytes, size: int) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord(
            "events", 0, 0, 0, 0, key, b"v" * size, None, size, 0, ((RUN_ENDED_HEADER, b"r"),)
        )

    for n in range(RECENT_KEPT + 10):
        endings._deliver(ending(b"w-%d" % n, 10))
    assert len(endings._recent) == RECENT_KEPT
    assert b"w-0" not in endings._recent
    assert b"w-%d" % (RECENT_KEPT + 9) in endings._recent
    endings._deliver(ending(b"big", RECENT_BYTES - 100))
    assert endings._recent_bytes <= RECENT_BYTES
    assert b"big" in endings._recent
    assert len(endings._recent) < 20
    endings._deliver(ending(b"big", 5))  # the latest per workflow replaces the one before
    assert endings._recent_bytes == sum(
        len(e.record.value or b"") for e in endings._recent.values()
    )


def test_an_ending_older_than_recent_s_does_not_ring_a_new_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endings = KafkaRunEndings(Settings())  # not started: records handed in directly
    record = ConsumerRecord(
        "events", 0, 0, 0, 0, b"w", b"x", None, 1, 0, ((RUN_ENDED_HEADER, b"r"),)
    )
    endings._deliver(record)
    with endings.watch("w") as young:
        assert young.take() == [None]  # rung at once (the record does not decode)
    later = time.monotonic() + RECENT_S + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    with endings.watch("w") as old:
        assert not old.is_set()
