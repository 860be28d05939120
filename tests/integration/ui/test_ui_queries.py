"""The workflow page's query form, "Waiting on" section and pending activities, over real
views with the engine played by a desk in memory (in a real browser against the real engine:
``tests/e2e/examples/test_ui_browser.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.integration.api.desk import MemoryDesk, answered, refused

from aion_common.domain import WAITING_ON_QUERY, QueryStatus
from aion_common.settings import Settings
from aion_projector import session_factory
from aion_projector.api import create_app

from .conftest import MemorySink

WAITING = {
    "run_id": "r1",
    "status": "RUNNING",
    "blocked_reason": None,
    "stack": ["flows.py:30 in approval: decision = await ctx.wait_signal('decision')"],
    "waiting_on": [
        {"kind": "signal", "awaited": True, "name": "decision", "deadline": None},
        {
            "kind": "activity",
            "awaited": False,
            "activity_id": "a1",
            "activity_type": "charge",
            "attempt": 2,
            "state": "backing-off",
            "next_retry_at": "2026-01-01T00:10:00+00:00",
            "last_error": "ConnectionError: down",
        },
    ],
}


@pytest.fixture
def desk() -> MemoryDesk:
    def respond(query):  # type: ignore[no-untyped-def]
        if query.name == WAITING_ON_QUERY:
            return answered(query, WAITING)
        if query.name == "missing":
            return refused(
                query, QueryStatus.UNKNOWN_QUERY, "no query 'missing'", known_queries=("status",)
            )
        return answered(query, {"status": "waiting", "args": query.args.to_json()})

    return MemoryDesk(respond)


@pytest.fixture
async def http(ui_engine: AsyncEngine, desk: MemoryDesk) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(payload_limit_bytes=4096),
        session_factory=session_factory(ui_engine),
        command_sink=MemorySink(),
        query_desk=desk,
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://aion.test") as client:
        yield client


async def test_an_open_workflow_page_has_the_form_and_loads_waiting_on_lazily(
    http: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    page = await http.get("/workflows/order-3")
    assert page.status_code == 200
    assert 'id="query-name"' in page.text
    assert 'hx-get="/workflows/order-3/waiting"' in page.text
    assert "No activity is pending." in page.text
    assert desk.asked == []  # the page itself never waits for the engine
    fragment = await http.get("/workflows/order-3/waiting", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    text = fragment.text
    assert "awaited now:" in text
    assert "signal <code>decision</code>, no deadline" in text
    assert "activity <code>charge</code>, attempt 2, backing-off" in text
    assert "last error: ConnectionError: down" in text
    assert "flows.py:30 in approval" in text
    assert "<html" not in text
    whole = await http.get("/workflows/order-3/waiting")
    assert "<html" in whole.text
    assert "What <code>order-3</code> waits on" in whole.text


async def test_a_closed_workflow_page_has_the_form_but_no_waiting_on(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/workflows/order-1")
    assert 'id="query-name"' in page.text
    assert "/waiting" not in page.text


async def test_the_query_form_answers_in_place_and_says_what_went_wrong(
    http: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    headers = {"HX-Request": "true", "Origin": "http://aion.test"}
    form = {"name": "status", "args": '["x", 2]'}
    answer = await http.post("/workflows/order-3/query", data=form, headers=headers)
    assert answer.status_code == 200
    assert "Answer to <code>status</code>" in answer.text
    assert "&#34;waiting&#34;" in answer.text or '"waiting"' in answer.text
    assert desk.asked[-1].args.to_json() == ["x", 2]
    one = await http.post(
        "/workflows/order-3/query", data={"name": "status", "args": "7"}, headers=headers
    )
    assert one.status_code == 200
    assert desk.asked[-1].args.to_json() == [7]
    unknown = await http.post(
        "/workflows/order-3/query", data={"name": "missing", "args": ""}, headers=headers
    )
    assert unknown.status_code == 200  # htmx swaps it in: the fragment says why
    assert "unknown-query" in unknown.text
    assert "<code>status</code>" in unknown.text
    bad = await http.post(
        "/workflows/order-3/query", data={"name": "s", "args": "[1,"}, headers=headers
    )
    assert "not JSON" in bad.text
    without_js = await http.post(
        "/workflows/order-3/query", data={"name": "missing"}, headers={"Origin": "http://aion.test"}
    )
    assert without_js.status_code == 404
    assert "<html" in without_js.text


async def test_a_query_from_another_site_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/workflows/order-3/query",
        data={"name": "status"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403


async def test_no_engine_answer_is_said_in_the_waiting_section(
    http: httpx.AsyncClient, desk: MemoryDesk
) -> None:
    desk.respond = lambda _q: None
    fragment = await http.get(
        "/workflows/order-3/waiting", headers={"HX-Request": "true"}, timeout=30
    )
    assert fragment.status_code == 200
    assert "The engine did not say: no engine answered" in fragment.text
