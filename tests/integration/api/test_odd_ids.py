"""Workflow ids holding ``/``, ``%``, spaces, unicode, ``?``/``#`` and dot segments, through
``AionClient`` against the real API — on a real uvicorn socket (the bytes a client sends) and
in-process (ASGI) — over views that hold such ids.

``a`` has two children whose ids look like its sub-resources, ``a/history`` and ``a/tree``:
``/v1/workflows/a/history`` is ``a``'s history, ``/v1/workflows/a%2Fhistory`` the child.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from aion import AionApiError, AionClient
from aion_common.domain import (
    CancelWorkflow,
    CommandRefused,
    Payload,
    RefusalCode,
    SignalWorkflow,
    TerminateWorkflow,
    WorkflowCompleted,
)
from aion_common.settings import Settings
from aion_projector import Projection, connect, migrate, session_factory
from aion_projector.api import create_app
from aion_projector.projection import record_refusals

from .conftest import MemorySink
from .dataset import T0, TOPIC, Script, scheduled, started

ODD = (
    "a/history",
    "a/tree",
    "50% off",
    "%2F",
    "ünï/cødé ✓",
    "q?x=1#frag",
    "..",
    ".",
    "a//b/",
    "/lead",
    "x/result",
)


async def _populate(url: str) -> None:
    s = Script()
    s.batch("a", started("r-a"))
    s.batch("a", scheduled("a/history", "child"), scheduled("a/tree", "child"))
    for n, workflow_id in enumerate(ODD):
        parent = ("a", "r-a") if workflow_id in {"a/history", "a/tree"} else None
        s.batch(workflow_id, started(f"r-odd-{n}", "odd", parent=parent))
        s.batch(
            workflow_id, (WorkflowCompleted, {"result": Payload.from_json({"id": workflow_id})})
        )
    refusal = CommandRefused(
        command_id="cmd-odd-refused",
        workflow_id="a/refusals",
        command_type="StartWorkflow",
        code=RefusalCode.UNKNOWN_WORKFLOW_TYPE,
        reason="no workflow type 'nope' is registered",
        refused_at=T0 + timedelta(hours=1),
    )
    engine = connect(url)
    await migrate(engine)
    sessions = session_factory(engine)
    async with sessions() as session:
        await Projection(TOPIC).apply(session, s.deliveries)
    async with sessions() as session, session.begin():
        await record_refusals(session, [(0, 0, refusal)])
    await engine.dispose()


@contextlib.asynccontextmanager
async def _uvicorn(app: FastAPI) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110  # uvicorn offers only this flag
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(params=["uvicorn", "asgi"])
async def odd_api(
    request: pytest.FixtureRequest, sqlite_url: str
) -> AsyncIterator[tuple[AionClient, MemorySink]]:
    await _populate(sqlite_url)
    engine = connect(sqlite_url)
    sink = MemorySink()
    app = create_app(Settings(), session_factory=session_factory(engine), command_sink=sink)
    try:
        if request.param == "uvicorn":
            async with _uvicorn(app) as url, AionClient(url) as client:
                yield client, sink
        else:
            transport = httpx.ASGITransport(app=app)
            async with AionClient("http://aion.test", transport=transport) as client:
                yield client, sink
    finally:
        await engine.dispose()


@pytest.mark.parametrize("workflow_id", ODD)
async def test_reads_of_odd_ids(odd_api: tuple[AionClient, MemorySink], workflow_id: str) -> None:
    client, _ = odd_api
    described = await client.describe(workflow_id)
    assert described.workflow.workflow_id == workflow_id
    assert described.workflow.status == "COMPLETED"
    history = await client.history(workflow_id)
    assert history.workflow_id == workflow_id
    assert [e.event_type for e in history.events] == ["WorkflowStarted", "WorkflowCompleted"]
    tree = await client.tree(workflow_id)
    assert tree.workflow_id == workflow_id
    outcome = await client.result(workflow_id)
    assert (outcome.status, outcome.result) == ("COMPLETED", {"id": workflow_id})
    assert await client.refusals(workflow_id) == ()


async def test_sub_resource_names_in_ids_are_not_routes(
    odd_api: tuple[AionClient, MemorySink],
) -> None:
    client, _ = odd_api
    parent = await client.describe("a")
    assert parent.workflow.status == "RUNNING"
    assert sorted(c.child_workflow_id for c in parent.children) == ["a/history", "a/tree"]
    assert (await client.describe("a/history")).workflow.workflow_id == "a/history"
    a_history = await client.history("a")
    assert a_history.workflow_id == "a"
    assert [e.event_type for e in a_history.events] == [
        "WorkflowStarted",
        "ChildWorkflowScheduled",
        "ChildWorkflowScheduled",
    ]
    tree = await client.tree("a")
    assert sorted(c.workflow_id for c in tree.children) == ["a/history", "a/tree"]
    listed = await client.list(parent="a")
    assert sorted(w.workflow_id for w in listed.items) == ["a/history", "a/tree"]
    (refused,) = await client.refusals("a/refusals")
    assert (refused.workflow_id, refused.code) == ("a/refusals", "UNKNOWN_WORKFLOW_TYPE")
    with pytest.raises(AionApiError) as missing:
        await client.describe("a/nope")
    assert (missing.value.status, missing.value.kind) == (404, "not-found")
    assert "'a/nope'" in missing.value.detail


async def test_commands_to_odd_ids_name_the_whole_id(
    odd_api: tuple[AionClient, MemorySink],
) -> None:
    client, sink = odd_api
    started_ = await client.start("odd", {"n": 1}, id="new/one 50%")
    assert started_.workflow_id == "new/one 50%"
    await client.signal("a/history", "sig/nal %", {"x": 1})
    await client.cancel("x/result", reason="r/s")
    await client.terminate("..", reason="t")
    start, signal, cancel, terminate = sink.sent
    assert start.workflow_id == "new/one 50%"
    assert isinstance(signal, SignalWorkflow)
    assert (signal.workflow_id, signal.name) == ("a/history", "sig/nal %")
    assert isinstance(cancel, CancelWorkflow)
    assert (cancel.workflow_id, cancel.reason) == ("x/result", "r/s")
    assert isinstance(terminate, TerminateWorkflow)
    assert terminate.workflow_id == ".."


async def test_raw_paths_route_segment_by_segment(sqlite_url: str) -> None:
    """What a hand-written request gets: literal slashes are path structure."""
    await _populate(sqlite_url)
    engine = connect(sqlite_url)
    app = create_app(Settings(), session_factory=session_factory(engine), command_sink=MemorySink())
    try:
        async with _uvicorn(app) as url, httpx.AsyncClient(base_url=url) as http:
            history = (await http.get("/v1/workflows/a/history")).json()
            assert history["workflow_id"] == "a"
            child = (await http.get("/v1/workflows/a%2Fhistory")).json()
            assert child["workflow"]["workflow_id"] == "a/history"
            child_history = (await http.get("/v1/workflows/a%2fhistory/history")).json()
            assert child_history["workflow_id"] == "a/history"
            literal = (await http.get("/v1/workflows/%252F")).json()
            assert literal["workflow"]["workflow_id"] == "%2F"
            # an id cut by a literal slash is a path no route has
            assert (await http.get("/v1/workflows/a/tree/extra")).status_code == 404
            posted = await http.post("/v1/workflows", json={"type": "odd", "id": "p/q"})
            assert posted.headers["location"] == "/v1/workflows/p%2Fq"
    finally:
        await engine.dispose()
