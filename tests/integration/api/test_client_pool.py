"""``AionClient``'s keep-alive pool against the real API served by uvicorn on a real socket:
connections are reused, a connection the server closed is replaced, a cancelled or timed-out
request frees its slot, and errors surface as ``AionUnavailable`` / httpx errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from aion import AionClient, AionUnavailable
from aion.client import _KeepAlivePool
from aion_common.settings import Settings
from aion_projector.api import create_app

from .conftest import MemorySink, Sessions


class _Peers:
    """ASGI wrapper noting the client port of every HTTP request: one port, one connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.ports: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("client"):
            self.ports.append(scope["client"][1])
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def _serve(app: ASGIApp, *, keep_alive: float = 5.0) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", timeout_keep_alive=keep_alive
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110  # uvicorn offers only this flag
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def peers(sqlite_views: Sessions, sink: MemorySink) -> _Peers:
    app = create_app(Settings(), session_factory=sqlite_views, command_sink=sink)
    return _Peers(app)


async def test_concurrent_starts_reuse_their_connections(peers: _Peers, sink: MemorySink) -> None:
    async with _serve(peers) as url, AionClient(url) as client:
        gate = asyncio.Semaphore(16)

        async def start(index: int) -> str:
            async with gate:
                return (await client.start("order", index, id=f"pool-{index}")).workflow_id

        first = await asyncio.gather(*(start(i) for i in range(64)))
        opened = set(peers.ports)
        second = await asyncio.gather(*(start(i) for i in range(64, 128)))
        for index in range(20):  # one after another: always the most recently used one
            await client.start("order", index, id=f"seq-{index}")
    assert first + second == [f"pool-{i}" for i in range(128)]
    assert len(sink.sent) == 148
    assert 1 <= len(opened) <= 16
    assert set(peers.ports) == opened  # the second wave and the sequential starts opened none
    assert len(set(peers.ports[-20:])) == 1


async def test_a_connection_the_server_closed_is_replaced(peers: _Peers) -> None:
    async with _serve(peers, keep_alive=0.2) as url, AionClient(url) as client:
        await client.start("order", 1, id="idle-1")
        await asyncio.sleep(0.6)  # uvicorn closes the idle keep-alive connection
        accepted = await client.start("order", 2, id="idle-2")
    assert accepted.workflow_id == "idle-2"
    assert len(set(peers.ports)) == 2


async def test_a_cancelled_request_gives_its_connection_slot_back(sqlite_views: Sessions) -> None:
    app = create_app(Settings(), session_factory=sqlite_views, command_sink=MemorySink())
    pool = _KeepAlivePool(max_connections=1, keepalive_expiry=5.0)
    async with _serve(app) as url, AionClient(url, transport=pool) as client:
        waiting = asyncio.create_task(client.result("order-3", wait=2))  # a long poll
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # the only slot is free again: this would wait forever (pool timeout) otherwise
        accepted = await client.start("order", 1, id="after-cancel")
    assert accepted.workflow_id == "after-cancel"


async def test_a_full_pool_times_out_as_a_transport_error(sqlite_views: Sessions) -> None:
    app = create_app(Settings(), session_factory=sqlite_views, command_sink=MemorySink())
    pool = _KeepAlivePool(max_connections=1, keepalive_expiry=5.0)
    async with _serve(app) as url, httpx.AsyncClient(base_url=url, transport=pool) as http:
        busy = asyncio.create_task(http.get("/v1/workflows/order-3/result", params={"wait": 2}))
        await asyncio.sleep(0.3)
        with pytest.raises(httpx.PoolTimeout):
            await http.get("/health", timeout=httpx.Timeout(5.0, pool=0.2))
        assert (await busy).status_code == 202  # still running when the wait ended
        assert (await http.get("/health")).status_code == 200


async def test_unreachable_and_closed_clients_fail_clearly() -> None:
    async with _serve(_Peers(_nothing)) as url:
        pass  # the port is closed again
    async with AionClient(url) as client:
        with pytest.raises(AionUnavailable, match="cannot reach the aion API"):
            await client.describe("wf")
    with pytest.raises(RuntimeError, match="closed"):
        await client.describe("wf")


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never called")
