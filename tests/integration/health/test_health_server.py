"""The shared HealthServer and MonitoredService on real sockets (no broker needed)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, Counter

from aion_common.runtime.health import (
    HealthEndpoint,
    HealthServer,
    MonitoredService,
    Phase,
    serve_monitored,
)
from aion_common.settings import SettingsError

from .http import free_port, get, get_json


class Steppable:
    """A Service whose start and run finish when the test says so."""

    def __init__(self, *, fail_start: bool = False) -> None:
        self.started = asyncio.Event()
        self.finish = asyncio.Event()
        self.fail_start = fail_start
        self.stops = 0

    async def start(self) -> None:
        await self.started.wait()
        if self.fail_start:
            raise RuntimeError("broker unreachable")

    async def run(self) -> None:
        await self.finish.wait()

    async def stop(self) -> None:
        self.stops += 1
        self.finish.set()


async def _serving(
    monitored: MonitoredService, registry: CollectorRegistry | None = None
) -> HealthServer:
    def report() -> dict[str, object]:
        return {**monitored.report(), "ready": monitored.running}

    server = HealthServer(report, registry, host="127.0.0.1", port=0)
    await server.start()
    return server


async def test_live_and_ready_follow_the_lifecycle() -> None:
    service = Steppable()
    monitored = MonitoredService(service)
    registry = CollectorRegistry()
    Counter("things", "things counted", registry=registry).inc(3)
    server = await _serving(monitored, registry)
    port = server.port

    assert (await get_json(port, "/health"))[0] == 503, "not started yet: not alive"
    starting = asyncio.create_task(monitored.start())
    await asyncio.sleep(0)
    assert monitored.phase is Phase.STARTING
    assert (await get_json(port, "/health/live"))[0] == 200, "a long start is alive"
    status, body = await get_json(port, "/health/ready")
    assert (status, body["phase"]) == (503, "starting"), "but not ready"

    service.started.set()
    await starting
    running = asyncio.create_task(monitored.run())
    assert (await get_json(port, "/health"))[0] == 200
    assert (await get_json(port, "/health/ready"))[0] == 200
    status, text = await get(port, "/metrics")
    assert status == 200
    assert b"things_total 3.0" in text
    assert (await get(port, "/health/nope"))[0] == 404

    await monitored.stop()
    await running
    status, body = await get_json(port, "/health")
    assert (status, body["phase"]) == (503, "stopped")
    assert (await get_json(port, "/health/ready"))[0] == 503
    await server.stop()


async def test_a_failed_start_reports_503_with_the_reason() -> None:
    monitored = MonitoredService(Steppable(fail_start=True))
    server = await _serving(monitored)
    port = server.port
    monitored.service.started.set()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="broker unreachable"):
        await monitored.start()
    await monitored.stop()
    status, body = await get_json(port, "/health")
    assert status == 503
    assert body["phase"] == "failed"
    assert "broker unreachable" in str(body["error"])
    assert (await get(port, "/metrics"))[0] == 404, "no registry: no metrics path"
    await server.stop()


async def test_serve_monitored_opens_the_endpoint_only_when_enabled() -> None:
    seen: list[tuple[int, int]] = []
    port = free_port()

    async def runner(service: object) -> int:
        assert isinstance(service, MonitoredService), "with an endpoint the service is monitored"
        await service.start()
        seen.append(((await get(port, "/health"))[0], (await get(port, "/health/ready"))[0]))
        await service.stop()
        return 7

    service = Steppable()
    service.started.set()

    def report() -> dict[str, object]:
        return {"ok": True, "ready": False}

    code = await serve_monitored(
        MonitoredService(service), HealthEndpoint(port=port), report, runner=runner
    )
    assert (code, seen) == (7, [(200, 503)])
    with pytest.raises(ConnectionRefusedError):
        await get(port, "/health")  # closed after the run

    plain: list[object] = []

    async def plain_runner(svc: object) -> int:
        plain.append(svc)
        return 0

    await serve_monitored(MonitoredService(service), HealthEndpoint(), report, runner=plain_runner)
    assert plain == [service], "no endpoint: the service runs unwrapped"


def test_endpoint_from_env_names_a_bad_variable() -> None:
    assert HealthEndpoint.from_env("AION_X", {}) == HealthEndpoint(port=0, host="127.0.0.1")
    assert not HealthEndpoint.from_env("AION_X", {}).enabled
    got = HealthEndpoint.from_env("AION_X", {"AION_X_PORT": "8082", "AION_X_HOST": "0.0.0.0"})
    assert got == HealthEndpoint(port=8082, host="0.0.0.0")
    with pytest.raises(SettingsError, match="AION_X_PORT='http'"):
        HealthEndpoint.from_env("AION_X", {"AION_X_PORT": "http"})
    with pytest.raises(SettingsError, match="AION_X_PORT='70000'"):
        HealthEndpoint.from_env("AION_X", {"AION_X_PORT": "70000"})


async def test_the_probe_command_exits_by_status() -> None:
    """``python -m aion_common.runtime.health URL`` is the containers' health check."""
    answers = {"ok": True, "ready": False}
    server = HealthServer(lambda: answers, host="127.0.0.1", port=0)
    await server.start()
    try:

        async def probe(path: str) -> int:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "aion_common.runtime.health",
                f"http://127.0.0.1:{server.port}{path}",
                stderr=subprocess.DEVNULL,
            )
            return await proc.wait()

        assert await probe("/health") == 0
        assert await probe("/health/ready") == 1
        answers["ready"] = True
        assert await probe("/health/ready") == 0
    finally:
        await server.stop()
    refused = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aion_common.runtime.health",
        f"http://127.0.0.1:{free_port()}/",
        stderr=subprocess.DEVNULL,
    )
    assert await refused.wait() == 1, "nobody listening: unhealthy"
