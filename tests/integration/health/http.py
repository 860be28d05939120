"""A raw HTTP GET for the health endpoints (what a kubelet or compose probe does)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` on loopback ``port``: (status code, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def get_json(port: int, path: str) -> tuple[int, dict[str, object]]:
    """GET a health path: (status code, decoded JSON body)."""
    status, body = await get(port, path)
    decoded: dict[str, object] = json.loads(body)
    return status, decoded


async def wait_for(
    check: Callable[[], object], *, timeout: float = 60, what: str = "condition"
) -> None:
    """Poll the async ``check()`` until it returns truthy (a wait bound, not a timed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def status_is(port: int, path: str, code: int) -> bool:
    """Whether ``path`` answers ``code`` now (a refused connection is never ``code``)."""
    try:
        return (await get(port, path))[0] == code
    except OSError:
        return False
