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
from aion.client import _KEEPALIVE_EXPIRY, _KeepAlivePool
from aion_common.settings import Settings
from aion_projector.api import create_app
from aion_projector.api._server import KEEP_ALIVE_S

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


class _ClosesAtItsKeepAlive:
    """An HTTP/1.1 server whose keep-alive timer fires exactly as the next request arrives:
    it answers the first request on a connection and closes the connection, unanswered, when
    a second one comes. That is the race a client keeping idle connections as long as the
    server does loses now and then; here it is lost every time."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            body = await reader.readexactly(length)
            self.answered.append(head.split(b"\r\n", 1)[0] + b" " + body)
            reply = b'{"workflow_id": "w", "command_id": "c", "status": "ok"}'
            writer.write(
                b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(reply)}\r\n\r\n".encode()
                + reply
            )
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request: hang up unanswered
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_request_on_a_connection_the_server_closes_as_it_arrives_is_sent_again() -> None:
    """The "Server disconnected without sending a response" seen in use: the request is sent
    once more on a fresh connection (the server never read it), body and all."""
    server = _ClosesAtItsKeepAlive()
    async with server as url, AionClient(url, retry_for=0) as client:
        first = await client.start("order", 1, id="a", request_id="r-1")
        second = await client.start("order", 2, id="b", request_id="r-2")  # reuses, is dropped
        third = await client.signal("a", "go", {"n": 3}, request_id="r-3")
    assert (first.command_id, second.command_id, third.command_id) == ("c", "c", "c")
    assert server.connections == 3, "one fresh connection for each retried request"
    assert len(server.answered) == 3
    assert b'"request_id":"r-2"' in server.answered[1].replace(b" ", b"")
    assert b'"n":3' in server.answered[2].replace(b" ", b"")


def test_idle_connections_are_dropped_before_the_api_server_closes_them() -> None:
    # With both at 5 s, a request sent just as the server's timer fired was lost now and then.
    assert _KEEPALIVE_EXPIRY < KEEP_ALIVE_S
    assert KEEP_ALIVE_S - _KEEPALIVE_EXPIRY >= 1.0, "a margin for a busy event loop"
