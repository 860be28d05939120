"""Schedule endpoints over an in-memory store: validation, conflicts, pause, trigger, delete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aion_common.domain import OverlapPolicy, ScheduleState
from aion_common.settings import Settings
from aion_projector.api import create_app
from aion_projector.api._schedules import KafkaSchedules, MemorySchedules

from .conftest import MemorySink, _client
from .test_api_reads import assert_problem, assert_unavailable


@pytest.fixture
async def schedule_api(
    sqlite_views: async_sessionmaker[AsyncSession],
) -> AsyncIterator[tuple[httpx.AsyncClient, MemorySchedules]]:
    store = MemorySchedules()
    app = create_app(
        Settings(payload_limit_bytes=4096),
        session_factory=sqlite_views,
        command_sink=MemorySink(),
        schedules=store,
    )
    async with _client(app) as client:
        yield client, store


async def test_create_list_describe_pause_resume_trigger_delete(
    schedule_api: tuple[httpx.AsyncClient, MemorySchedules],
) -> None:
    api, store = schedule_api
    body = {"type": "report", "input": {"days": 1}, "every": "30s", "overlap": "buffer"}
    created = await api.post("/v1/schedules/nightly", json=body)
    assert created.status_code == 201, created.text
    out = created.json()
    assert (out["spec"], out["overlap"], out["every_ms"]) == ("every 30s", "buffer", 30_000)
    assert store.entries["nightly"].record.overlap is OverlapPolicy.BUFFER_ONE
    assert out["next_fire"] is not None
    again = await api.post("/v1/schedules/nightly", json=body)
    assert_problem(again, 409, "conflict")
    replaced = await api.put("/v1/schedules/nightly", json={**body, "every": "1m"})
    assert replaced.json()["every_ms"] == 60_000
    now = datetime.now(UTC)
    store.entries["nightly"].state = ScheduleState(
        schedule_id="nightly", last_fire=now, started=4, skipped=1, updated_at=now
    )
    listed = (await api.get("/v1/schedules")).json()["items"]
    assert [(s["id"], s["started"], s["skipped"]) for s in listed] == [("nightly", 4, 1)]
    paused = (await api.post("/v1/schedules/nightly/pause")).json()
    assert paused["paused"] is True
    assert paused["next_fire"] is None
    resumed = (await api.post("/v1/schedules/nightly/resume")).json()
    assert resumed["paused"] is False
    triggered = await api.post("/v1/schedules/nightly/trigger", json={"request_id": "r-1"})
    assert triggered.status_code == 202
    assert triggered.json() == {"schedule_id": "nightly", "request_id": "r-1"}
    assert [t.request_id for t in store.triggers] == ["r-1"]
    assert (await api.delete("/v1/schedules/nightly")).status_code == 204
    assert_problem(await api.get("/v1/schedules/nightly"), 404, "not-found")
    assert_problem(await api.post("/v1/schedules/nightly/pause"), 404, "not-found")


async def test_schedules_as_last_read_are_marked_stale_and_unread_ones_are_503(
    schedule_api: tuple[httpx.AsyncClient, MemorySchedules],
) -> None:
    api, store = schedule_api
    body = {"type": "report", "every": "1h"}
    assert (await api.post("/v1/schedules/nightly", json=body)).status_code == 201
    listed = (await api.get("/v1/schedules")).json()
    assert (listed["stale"], listed["stale_reason"]) == (False, None)

    store.stale = "Kafka at 127.0.0.1:9 is unreachable"
    listed = (await api.get("/v1/schedules")).json()
    assert [s["id"] for s in listed["items"]] == ["nightly"]
    assert (listed["stale"], listed["stale_reason"]) == (True, store.stale)
    assert (await api.get("/v1/schedules/nightly")).status_code == 200

    # Never read: nothing to answer from, so no empty list and no 404 either; a write says
    # it did nothing.
    store.loaded = False
    for answer, refused in (
        (await api.get("/v1/schedules"), ""),
        (await api.get("/v1/schedules/nightly"), ""),
        (await api.post("/v1/schedules/other", json=body), "schedule 'other' was not created"),
        (await api.post("/v1/schedules/nightly/pause"), "schedule 'nightly' was not paused"),
        (await api.delete("/v1/schedules/nightly"), "schedule 'nightly' was not deleted"),
    ):
        problem = assert_problem(answer, 503, "unavailable")
        assert problem["detail"] == (
            "the schedules are not known yet: this API has not read them from Kafka (Kafka "
            f"at 127.0.0.1:9 is unreachable){'; ' if refused else ''}{refused}; retry"
        )
        assert answer.headers["retry-after"] == "2"
    assert list(store.entries) == ["nightly"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"type": "t"}, 400, "exactly one of cron"),
        ({"type": "t", "cron": "* * *", "every": "1s"}, 400, "exactly one of cron"),
        ({"type": "t", "cron": "61 * * * *"}, 400, "61 is outside 0-59"),
        ({"type": "t", "every": "fast"}, 400, "not a duration"),
        ({"type": "t", "every": "1e400"}, 400, "longer than 36500d"),  # inf: OverflowError
        ({"type": "t", "every": "1m", "jitter": 1e300}, 400, "longer than 36500d"),
        ({"type": "t", "every": "100ms"}, 400, "shortest is 1 s"),
        ({"type": "t", "every": "1m", "offset": "2m"}, 400, "below the interval"),
        ({"type": " t", "every": "1m"}, 400, "surrounding spaces"),
        ({"type": "t", "every": "1m", "input": "x" * 5000}, 413, "exceeds the limit"),
        ({"type": "t", "every": "1m", "overlap": "sometimes"}, 422, "overlap"),
    ],
)
async def test_invalid_schedules_say_why(
    schedule_api: tuple[httpx.AsyncClient, MemorySchedules],
    body: dict[str, object],
    status: int,
    detail: str,
) -> None:
    api, store = schedule_api
    answer = await api.post("/v1/schedules/s", json=body)
    assert answer.status_code == status, answer.text
    assert detail in answer.text
    assert not store.entries


async def test_a_write_kafka_does_not_acknowledge_in_time_is_answered_before_the_client_gives_up(
    sqlite_views: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka holds a send while the broker is away until it returns, however long: the
    API bounds it and says the change may still be written (decision 66)."""
    settings = Settings(bootstrap_servers="127.0.0.1:9", topic_prefix="slow")
    store = KafkaSchedules(settings, produce_timeout_s=0.2)
    never = asyncio.Event()

    async def unacknowledged(*_args: object) -> None:
        await never.wait()

    monkeypatch.setattr(store._connection, "_connected", True)  # as if the writer had started
    for name in ("put", "delete", "trigger"):
        monkeypatch.setattr(store._writer, name, unacknowledged)
    app = create_app(
        settings, session_factory=sqlite_views, command_sink=MemorySink(), schedules=store
    )
    try:
        async with _client(app) as api:
            began = time.monotonic()
            answer = await api.put("/v1/schedules/nightly", json={"type": "report", "every": "1h"})
            took = time.monotonic() - began
    finally:
        await store.stop()  # gives up on the unacknowledged send
    assert took < 2, f"answered after {took:.1f} s"
    assert assert_unavailable(answer, retry_after=1) == (
        "the Kafka cluster did not acknowledge the definition of schedule 'nightly' within "
        "0.2 s; it may still be written when Kafka answers: look before you retry (GET the "
        "schedule)"
    )


async def test_the_ui_lists_schedules_and_says_when_they_may_be_old(
    schedule_api: tuple[httpx.AsyncClient, MemorySchedules],
) -> None:
    api, store = schedule_api
    assert "No schedules." in (await api.get("/schedules")).text
    body = {"type": "report", "every": "1h", "note": "the <daily> report"}
    assert (await api.post("/v1/schedules/nightly", json=body)).status_code == 201
    page = (await api.get("/schedules")).text
    assert "<strong>nightly</strong>" in page
    assert "<code>every 3600s</code>" in page
    assert "the &lt;daily&gt; report" in page
    assert 'href="/schedules" aria-current="page"' in page
    assert "may be out of date" not in page

    store.stale = "Kafka at 127.0.0.1:9 is unreachable"
    page = (await api.get("/schedules")).text
    assert "<strong>nightly</strong>" in page
    assert "may be out of date</strong>: Kafka at 127.0.0.1:9 is unreachable." in page

    store.loaded = False
    answer = await api.get("/schedules")
    assert answer.status_code == 503
    assert "the schedules are not known yet" in answer.text
    assert "<strong>nightly</strong>" not in answer.text
