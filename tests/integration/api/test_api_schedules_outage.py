"""The API's schedules stay listed through a broker outage (decisions 48, 52 and 62), and
writes meanwhile say what they did not do (decision 66).

The API keeps its schedules in a view tailed from two compacted topics. When its reader
fails the view is read again from the beginning; it used to answer an empty list until that
read was done, so a user saw every schedule vanish for a moment after an outage. Here the
broker (one of this test's own) is stopped and started again while ``GET /v1/schedules`` is
asked every 20 ms, and the reader's next fetch fails while the broker is away (aiokafka's
consumer mostly rides a restart out by itself, so the failure is injected to make the view
read the topics again after the return). Every answer lists the schedules, marked stale
while the broker is away or the view is being read again, and current once it is read.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aion_common.kafka import schedules as schedule_topics
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_common.testing import free_port
from aion_common.testing.broker import KafkaBroker
from aion_projector.api import create_app
from aion_projector.api._schedules import WRITE_ANSWER_S, KafkaSchedules

from .conftest import MemorySink, _client
from .test_api_reads import assert_problem

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

DOWN_S = 4.0
IDS = ["hourly", "nightly"]


class _FailingFetch(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """The view's consumer; its next fetch fails once :attr:`armed` is set."""

    armed = False

    async def getmany(self, *partitions: object, **options: object) -> object:
        if _FailingFetch.armed:
            _FailingFetch.armed = False
            raise KafkaConnectionError("injected: the fetch failed with the broker away")
        return await super().getmany(*partitions, **options)


async def _sample(api: httpx.AsyncClient, seen: list[tuple[float, int, list[str], bool]]) -> None:
    while True:
        answer = await api.get("/v1/schedules")
        body = answer.json()
        ids = [item["id"] for item in body.get("items", [])]
        seen.append((time.monotonic(), answer.status_code, ids, bool(body.get("stale"))))
        await asyncio.sleep(0.02)


async def test_schedules_stay_listed_through_a_broker_outage(
    own_broker: KafkaBroker,
    sqlite_views: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(schedule_topics, "AIOKafkaConsumer", _FailingFetch)
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers, topic_prefix="sched-out", partitions=2
    )
    link = BrokerLink(settings, name="api", interval_s=0.5)
    await link.start()
    store = KafkaSchedules(settings, link=link)
    await store.start()
    app = create_app(
        settings, session_factory=sqlite_views, command_sink=MemorySink(), schedules=store
    )
    seen: list[tuple[float, int, list[str], bool]] = []
    sampling: asyncio.Task[None] | None = None
    try:
        async with _client(app) as api:
            for schedule_id in IDS:
                body = {"type": "report", "every": "1h", "paused": True}
                created = await api.post(f"/v1/schedules/{schedule_id}", json=body)
                assert created.status_code == 201, created.text
            listed = (await api.get("/v1/schedules")).json()
            assert ([s["id"] for s in listed["items"]], listed["stale"]) == (IDS, False)

            sampling = asyncio.create_task(_sample(api, seen))
            loads = store.view_loads
            stopped_at = time.monotonic()
            restarting = asyncio.create_task(asyncio.to_thread(own_broker.restart, DOWN_S))
            while not link.known_down:
                assert not restarting.done(), "the link never saw the broker away"
                await asyncio.sleep(0.02)
            _FailingFetch.armed = True
            await restarting
            back_at = time.monotonic()
            assert not _FailingFetch.armed, "the view fetched nothing while the broker was away"
            deadline = back_at + 60
            while store.view_loads == loads or store.stale_reason() is not None:
                assert time.monotonic() < deadline, f"not current again: {store.stale_reason()}"
                await asyncio.sleep(0.05)
            current_at = time.monotonic()
            await asyncio.sleep(0.2)  # a few answers of the view read again
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)

            wrong = [s for s in seen if s[1] != 200 or s[2] != IDS]
            assert not wrong, f"{len(wrong)} of {len(seen)} answers lost the schedules: {wrong[:3]}"
            stale = [t for t, _, _, is_stale in seen if is_stale]
            assert stale, "no answer was marked stale while the broker was away"
            assert stopped_at <= min(stale) <= back_at, "marked stale only after the return"
            assert not seen[-1][3], "still marked stale after the view was read again"
            print(
                f"{len(seen)} answers, {len(stale)} stale; broker back after "
                f"{back_at - stopped_at:.1f} s, view current {current_at - back_at:.1f} s later"
            )

            # After the return, writes are read back as before.
            body = {"type": "report", "every": "1h", "paused": True}
            created = await api.post("/v1/schedules/weekly", json=body)
            assert created.status_code == 201, created.text
            ids = [s["id"] for s in (await api.get("/v1/schedules")).json()["items"]]
            assert ids == [*IDS, "weekly"]
    finally:
        if sampling is not None:
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
        await store.stop()
        await link.stop()


async def _kafka_api(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> tuple[BrokerLink, KafkaSchedules, httpx.AsyncClient]:
    link = BrokerLink(settings, name="api", interval_s=0.5)
    await link.start()
    store = KafkaSchedules(settings, link=link)
    await store.start()
    app = create_app(settings, session_factory=sessions, command_sink=MemorySink(), schedules=store)
    return link, store, _client(app)


async def _refused(api: httpx.AsyncClient, method: str, path: str, body: object) -> str:
    """A write's answer: 503 at once, with Retry-After; its detail."""
    began = time.monotonic()
    answer = await asyncio.wait_for(api.request(method, path, json=body), WRITE_ANSWER_S + 2)
    took = time.monotonic() - began
    problem = assert_problem(answer, 503, "unavailable")
    assert answer.headers["retry-after"] == "2", answer.headers
    assert took < 2.0, f"{method} {path} took {took:.1f} s: Kafka is known to be away"
    detail: str = problem["detail"]
    return detail


async def test_schedule_writes_say_what_happened_while_kafka_is_away(
    own_broker: KafkaBroker, sqlite_views: async_sessionmaker[AsyncSession]
) -> None:
    """Decision 66: a write while Kafka is away used to wait for aiokafka's send, which waits
    for the broker's return however long it takes, so the client timed out without a word
    (and the change landed later); one before the first read was answered "a backend aion
    needs is unavailable: InfrastructureError". Now each is refused at once, saying what was
    not done and why."""
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers, topic_prefix="sched-w", partitions=2
    )
    where = f"kafka at {own_broker.bootstrap_servers} unreachable"
    body = {"type": "report", "every": "1h", "paused": True}
    link, store, api = await _kafka_api(settings, sqlite_views)
    try:
        created = await api.post("/v1/schedules/hourly", json=body)
        assert created.status_code == 201, created.text
        restarting = asyncio.create_task(asyncio.to_thread(own_broker.restart, 8.0))
        while not link.known_down:
            assert not restarting.done(), "the link never saw the broker away"
            await asyncio.sleep(0.02)
        for method, path, write_body, not_done in [
            ("POST", "/v1/schedules/daily", body, "the definition of schedule 'daily'"),
            (
                "PUT",
                "/v1/schedules/hourly",
                {**body, "every": "2h"},
                "the definition of schedule 'hourly'",
            ),
            ("POST", "/v1/schedules/hourly/resume", None, "the definition of schedule 'hourly'"),
            ("POST", "/v1/schedules/hourly/trigger", {}, "the trigger of schedule 'hourly'"),
            ("DELETE", "/v1/schedules/hourly", None, "the deletion of schedule 'hourly'"),
        ]:
            detail = await _refused(api, method, path, write_body)
            assert f"{not_done} was not written" in detail, detail
            assert where in detail, detail
        assert not restarting.done(), "the broker came back before every write was tried"
        listed = (await api.get("/v1/schedules")).json()
        assert [(s["id"], s["every_ms"], s["paused"]) for s in listed["items"]] == [
            ("hourly", 3_600_000, True)
        ], "a refused write changed the schedules"
        await restarting
        deadline = time.monotonic() + 30
        while link.known_down or not (await api.put("/v1/schedules/hourly", json=body)).is_success:
            assert time.monotonic() < deadline, "writes still refused after the broker returned"
            await asyncio.sleep(0.2)
    finally:
        await api.aclose()
        await store.stop()
        await link.stop()

    # Never read (nobody listens at the address): nothing known, nothing written, and why.
    dead = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix="x", partitions=2)
    link, store, api = await _kafka_api(dead, sqlite_views)
    try:
        deadline = time.monotonic() + 30
        while not link.known_down:
            assert time.monotonic() < deadline, "the link never found the address unreachable"
            await asyncio.sleep(0.02)
        where = f"{dead.bootstrap_servers} is unreachable"
        for method, path, write_body, not_done in [
            ("POST", "/v1/schedules/daily", body, "schedule 'daily' was not created"),
            ("DELETE", "/v1/schedules/daily", None, "schedule 'daily' was not deleted"),
        ]:
            detail = await _refused(api, method, path, write_body)
            assert "the schedules are not known yet" in detail, detail
            assert (not_done in detail, where in detail) == (True, True), detail
        detail = await _refused(api, "PUT", "/v1/schedules/daily", body)
        assert "the definition of schedule 'daily' was not written" in detail, detail
        assert f"kafka at {dead.bootstrap_servers}" in detail, detail
    finally:
        await api.aclose()
        await store.stop()
        await link.stop()
