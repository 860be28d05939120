"""The engine's health endpoint on the real broker: in process, and as ``aion-engine`` runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from aion_common.runtime.health import HealthServer, MonitoredService
from aion_common.settings import Settings
from aion_engine.health import engine_registry, engine_report
from aion_engine.registry import WorkflowRegistry
from aion_engine.service import EngineService

from .http import free_port, get, get_json, status_is, wait_for


async def _owns(port: int, partitions: list[int]) -> bool:
    """Ready means one rebuilt partition; the others follow one rebuild at a time."""
    return (await get_json(port, "/health/ready"))[1]["partitions"] == partitions


async def test_an_engine_is_ready_once_it_owns_rebuilt_partitions(aion_settings: Settings) -> None:
    engine = EngineService(aion_settings, WorkflowRegistry())
    monitored = MonitoredService(engine)
    server = HealthServer(
        lambda: engine_report(monitored, engine, "engine-t"),
        engine_registry(monitored, engine),
        host="127.0.0.1",
        port=0,
    )
    await server.start()
    port = server.port
    try:
        status, body = await get_json(port, "/health/ready")
        assert (status, body["phase"], body["partitions"]) == (503, "created", [])
        assert "not reached yet" in body["not_ready"]
        await monitored.start()
        running = asyncio.create_task(monitored.run())
        await wait_for(lambda: status_is(port, "/health/ready", 200), what="engine ready")
        await wait_for(lambda: _owns(port, [0, 1, 2]), what="every partition rebuilt")
        status, body = await get_json(port, "/health")
        assert status == 200
        assert body["partitions"] == [0, 1, 2], "the only instance owns every partition"
        assert body["transactional"] is True, "the test broker is Apache Kafka"
        assert body["instance"] == "engine-t"
        assert body["kafka"]["reachable"] is True
        assert body["kafka"]["bootstrap"] == aion_settings.bootstrap_servers
        assert "not_ready" not in body
        _, text = await get(port, "/metrics")
        assert b"aion_engine_owned_partitions 3.0" in text
        assert b"aion_engine_up 1.0" in text
        assert b"aion_engine_transactional 1.0" in text

        await monitored.stop()
        await running
        status, body = await get_json(port, "/health")
        assert (status, body["phase"]) == (503, "stopped")
        assert (await get(port, "/health/ready"))[0] == 503
        assert b"aion_engine_up 0.0" in (await get(port, "/metrics"))[1]
    finally:
        await monitored.stop()
        await server.stop()


async def test_aion_engine_serves_health_on_aion_engine_port(aion_settings: Settings) -> None:
    """The console script with ``AION_ENGINE_PORT``: ready, probed by the CLI, exits 0 on TERM."""
    script = Path(sys.executable).parent / "aion-engine"
    assert script.is_file(), "the aion-engine console script is installed"
    port = free_port()
    env = {
        **os.environ,
        "AION_KAFKA_BOOTSTRAP": aion_settings.bootstrap_servers,
        "AION_TOPIC_PREFIX": aion_settings.topic_prefix,
        "AION_PARTITIONS": str(aion_settings.partitions),
        "AION_INSTANCE_ID": "engine-sub",
        "AION_ENGINE_PORT": str(port),
        "AION_ENGINE_HOST": "127.0.0.1",
    }
    proc = await asyncio.create_subprocess_exec(
        script,
        "--workflows",
        "aion_engine.examples",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for(lambda: status_is(port, "/health/ready", 200), what="aion-engine ready")
        await wait_for(lambda: _owns(port, [0, 1, 2]), what="every partition rebuilt")
        status, body = await get_json(port, "/health/ready")
        assert status == 200
        assert body["instance"] == "engine-sub"
        assert body["partitions"] == [0, 1, 2]
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aion_common.runtime.health",
            f"http://127.0.0.1:{port}/health/ready",
            stderr=subprocess.DEVNULL,
        )
        assert await probe.wait() == 0, "the compose health check command passes"
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert not await status_is(port, "/health", 200), "the endpoint closes with the process"
