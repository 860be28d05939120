"""The query and waiting endpoints over real views, with the engine played by a desk in
memory: which run is asked, when a closed run's history goes with the query, and how each
answer that is not a result becomes a problem (the real engine: ``tests/e2e/queries``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from aion_common.domain import WAITING_ON_QUERY, QueryStatus
from aion_common.settings import Settings
from aion_projector import session_factory
from aion_projector.api import create_app

from .conftest import MemorySink, _client
from .desk import MemoryDesk, answered, refused


@pytest.fixture
def desk() -> MemoryDesk:
    return MemoryDesk(lambda q: answered(q, {"asked": q.name, "args": q.args.to_json()}))


@pytest.fixture
async def api(views_engine: AsyncEngine, desk: MemoryDesk) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(payload_limit_bytes=4096),
        session_factory=session_factory(views_engine),
        command_sink=MemorySink(),
        query_desk=desk,
    )
    async with _client(app) as client:
        yield client


async def test_an_open_run_is_asked_without_its_history(
    api: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    response = await api.post("/v1/workflows/order-3/queries/status", json={"args": [1, "a"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == {"asked": "status", "args": [1, "a"]}
    assert body["replayed"] is False
    [query] = desk.asked
    assert (query.workflow_id, query.name, query.run_id, query.history) == (
        "order-3",
        "status",
        None,
        None,
    )
    assert query.deadline > datetime.now(UTC)


async def test_a_closed_run_is_asked_with_its_whole_history(
    api: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    response = await api.post("/v1/workflows/order-1/queries/total")
    assert response.status_code == 200, response.text
    [query] = desk.asked
    assert query.history is not None
    events = query.history.events
    assert type(events[0]).__name__ == "WorkflowStarted"
    assert type(events[-1]).__name__ == "WorkflowCompleted"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert query.run_id == events[0].run_id


async def test_an_earlier_run_of_a_chain_is_replayed(
    api: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    described = (await api.get("/v1/workflows/loop-1")).json()
    first = described["runs"][0]
    assert first["status"] == "CONTINUED_AS_NEW"
    response = await api.post("/v1/workflows/loop-1/queries/n", json={"run_id": first["run_id"]})
    assert response.status_code == 200, response.text
    [query] = desk.asked
    assert query.history is not None
    assert {e.run_id for e in query.history.events} == {first["run_id"]}
    assert type(query.history.events[-1]).__name__ == "WorkflowContinuedAsNew"


async def test_a_run_the_engine_closed_before_the_views_saw_it_waits_for_them(
    api: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    desk.respond = lambda q: refused(q, QueryStatus.RUN_CLOSED, "run is not open", run_id="r9")
    response = await api.post("/v1/workflows/order-3/queries/s", json={"timeout": 0.3})
    assert response.status_code == 409
    assert response.json()["type"].endswith("/workflow-closed")
    assert "ask again" in response.json()["detail"]


@pytest.mark.parametrize(
    ("status", "http", "kind"),
    [
        (QueryStatus.NOT_FOUND, 404, "not-found"),
        (QueryStatus.UNKNOWN_QUERY, 404, "unknown-query"),
        (QueryStatus.BLOCKED, 409, "workflow-blocked"),
        (QueryStatus.FAILED, 422, "query-failed"),
        (QueryStatus.REFUSED, 422, "query-refused"),
        (QueryStatus.CANNOT_REPLAY, 409, "cannot-replay"),
        (QueryStatus.INVALID, 400, "invalid-input"),
    ],
)
async def test_answers_without_a_result_are_problems(
    api: httpx.AsyncClient, desk: MemoryDesk, status: QueryStatus, http: int, kind: str
) -> None:
    desk.respond = lambda q: refused(q, status, f"because {status.value}", known_queries=("a",))
    response = await api.post("/v1/workflows/nobody/queries/s")
    assert response.status_code == http
    problem = response.json()
    assert problem["type"].endswith(f"/{kind}")
    assert problem["detail"] == f"because {status.value}"
    assert problem.get("known_queries") == (["a"] if kind == "unknown-query" else None)


async def test_no_answer_in_time_is_a_timeout_problem(
    api: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    desk.respond = lambda _q: None
    response = await api.post("/v1/workflows/order-3/queries/s", json={"timeout": 0.5})
    assert response.status_code == 504
    problem = response.json()
    assert problem["type"].endswith("/query-timeout")
    assert "no engine answered query 's' of workflow 'order-3' within 0.5 s" in problem["detail"]


async def test_bad_requests_are_refused_before_the_engine(
    api: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    reserved = await api.post("/v1/workflows/order-3/queries/__secret")
    assert reserved.status_code == 400
    assert "reserved" in reserved.json()["detail"]
    not_a_list = await api.post("/v1/workflows/order-3/queries/s", json={"args": {"a": 1}})
    assert not_a_list.status_code == 422
    too_long = await api.post("/v1/workflows/order-3/queries/s", json={"timeout": 61})
    assert too_long.status_code == 422
    assert desk.asked == []


async def test_waiting_asks_the_engine_for_an_open_run_only(
    api: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    view = {
        "run_id": "r1",
        "status": "RUNNING",
        "blocked_reason": None,
        "stack": ["flows.py:12 in order: await ctx.sleep(60)"],
        "waiting_on": [
            {
                "kind": "timer",
                "awaited": True,
                "timer_id": "t1",
                "purpose": "sleep",
                "fire_at": "2026-01-01T00:01:00+00:00",
            }
        ],
    }
    desk.respond = lambda q: answered(q, view, last_seq=4)
    response = await api.get("/v1/workflows/order-3/waiting")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stack"] == view["stack"]
    assert body["waiting_on"][0]["kind"] == "timer"
    assert body["waiting_on"][0]["fire_at"] == "2026-01-01T00:01:00Z"
    assert body["last_seq"] == 4
    assert [q.name for q in desk.asked] == [WAITING_ON_QUERY]
    closed = await api.get("/v1/workflows/order-1/waiting")
    assert closed.json() == {
        "workflow_id": "order-1",
        "run_id": closed.json()["run_id"],
        "status": "COMPLETED",
        "blocked_reason": None,
        "waiting_on": [],
        "stack": [],
        "last_seq": None,
    }
    assert len(desk.asked) == 1  # a closed run waits on nothing: no engine asked


async def test_without_a_desk_queries_are_unavailable(views_engine: AsyncEngine) -> None:
    app = create_app(
        Settings(), session_factory=session_factory(views_engine), command_sink=MemorySink()
    )
    async with _client(app) as client:
        response = await client.post("/v1/workflows/order-3/queries/s")
    assert response.status_code == 503


async def test_a_run_id_the_workflow_never_had_is_not_found(
    api: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    desk.respond = lambda q: refused(q, QueryStatus.RUN_CLOSED, "not open", run_id=q.run_id)
    response = await api.post(
        "/v1/workflows/order-3/queries/s", json={"run_id": "no-such-run", "timeout": 0.3}
    )
    assert response.status_code == 404
    assert "has no run 'no-such-run'" in response.json()["detail"]
