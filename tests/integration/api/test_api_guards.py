"""Bearer auth, backend failures and unexpected errors: always a problem, never a bare 500."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aion_common.domain import Command, InfrastructureError
from aion_common.settings import Settings
from aion_projector import connect, session_factory
from aion_projector.api import create_app

from .conftest import MemorySink, _client
from .test_api_reads import assert_problem

Sessions = async_sessionmaker[AsyncSession]


async def test_bearer_token_guards_everything_but_operations(sqlite_views: Sessions) -> None:
    app = create_app(
        Settings(), session_factory=sqlite_views, command_sink=MemorySink(), api_token="s3cret"
    )
    async with _client(app) as anonymous:
        for path in ("/v1/workflows", "/v1/workflows/order-1", "/v1/registry"):
            response = await anonymous.get(path)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert_problem(
            await anonymous.post("/v1/workflows", json={"type": "t"}), 401, "unauthorized"
        )
        assert (await anonymous.get("/health")).status_code == 200
        assert (await anonymous.get("/metrics")).status_code == 200
        spec = (await anonymous.get("/openapi.json")).json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    async with _client(app, token="wrong") as wrong:
        assert_problem(await wrong.get("/v1/workflows"), 401, "unauthorized")
    async with _client(app, token="s3cret") as allowed:
        assert (await allowed.get("/v1/workflows/order-1")).status_code == 200
        assert (await allowed.post("/v1/workflows", json={"type": "t"})).status_code == 202


class BrokenSink:
    async def send(self, command: Command) -> None:
        raise InfrastructureError("broker gone", retriable=True)


class ExplodingSink:
    async def send(self, command: Command) -> None:
        raise RuntimeError("a bug")


async def test_sink_failures_are_problems(sqlite_views: Sessions) -> None:
    broken = create_app(Settings(), session_factory=sqlite_views, command_sink=BrokenSink())
    async with _client(broken) as api:
        assert_problem(await api.post("/v1/workflows", json={"type": "t"}), 503, "unavailable")
    exploding = create_app(Settings(), session_factory=sqlite_views, command_sink=ExplodingSink())
    async with _client(exploding) as api:
        body = assert_problem(await api.post("/v1/workflows", json={"type": "t"}), 500, "internal")
        assert "a bug" not in body["detail"]  # internals stay in the server log


@pytest.mark.parametrize("path", ["/health", "/v1/workflows", "/v1/workflows/w"])
async def test_an_unreachable_database_is_503(path: str) -> None:
    engine = connect("postgresql+asyncpg://aion:aion@127.0.0.1:1/none")
    app = create_app(Settings(), session_factory=session_factory(engine), command_sink=MemorySink())
    try:
        async with _client(app) as api:
            assert_problem(await api.get(path), 503, "unavailable")
    finally:
        await engine.dispose()


async def test_non_latin1_ids_are_percent_encoded_in_location(sqlite_views: Sessions) -> None:
    sink = MemorySink()
    app = create_app(Settings(), session_factory=sqlite_views, command_sink=sink)
    async with _client(app) as api:
        response = await api.post("/v1/workflows", json={"type": "t", "id": "Ā/ü 1"})
    assert response.status_code == 202
    assert response.headers["location"] == "/v1/workflows/%C4%80%2F%C3%BC%201"
    assert sink.sent[0].workflow_id == "Ā/ü 1"
