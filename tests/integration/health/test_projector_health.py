"""The projector consumer's health endpoint on the real broker: in process, and as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from aion_common.kafka import Topics, ensure_topics
from aion_common.runtime.health import HealthServer, MonitoredService
from aion_common.settings import Settings, SettingsError
from aion_projector.health import (
    DEFAULT_READY_LAG,
    projector_registry,
    projector_report,
    ready_lag_from_env,
)
from aion_projector.service import ProjectorService, ProjectorStatus

from .http import free_port, get, get_json, status_is, wait_for

GARBAGE = 7


async def _publish_garbage(settings: Settings) -> None:
    """Records that do not decode: dead-lettered, yet consumed like any other."""
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for i in range(GARBAGE):
            await producer.send_and_wait(topics.events, b"not avro", key=b"wf", partition=i % 2)
    finally:
        await producer.stop()


async def test_a_projector_is_ready_once_caught_up(aion_settings: Settings) -> None:
    await _publish_garbage(aion_settings)
    projector = ProjectorService(aion_settings)
    monitored = MonitoredService(projector)
    server = HealthServer(
        lambda: projector_report(monitored, projector, ready_lag=0),
        projector_registry(monitored, projector),
        host="127.0.0.1",
        port=0,
    )
    await server.start()
    port = server.port
    try:
        assert (await get(port, "/health"))[0] == 503, "not started"
        await monitored.start()
        running = asyncio.create_task(monitored.run())
        await wait_for(lambda: status_is(port, "/health/ready", 200), what="projector ready")
        status, body = await get_json(port, "/health/ready")
        assert status == 200
        assert body["partitions"] == [0, 1, 2]
        assert body["total_lag"] == 0
        assert body["lag"] == {"0": 0, "1": 0, "2": 0}
        _, text = await get(port, "/metrics")
        assert f"aion_projector_records_total {GARBAGE}.0".encode() in text
        assert f"aion_projector_dead_letters_total {GARBAGE}.0".encode() in text
        assert b'aion_projector_lag{partition="1"} 0.0' in text
        assert b"aion_projector_up 1.0" in text

        await monitored.stop()
        await running
        status, body = await get_json(port, "/health")
        assert (status, body["phase"]) == (503, "stopped")
    finally:
        await monitored.stop()
        await server.stop()


class _Link:
    """A broker link whose answer the test sets."""

    def __init__(self) -> None:
        self.down: str | None = None

    def not_ready_reason(self) -> str | None:
        return self.down

    def report(self) -> dict[str, object]:
        return {"reachable": self.down is None}


class _Stub:
    """A projector view with a status (and a Kafka link) set by the test."""

    def __init__(self, status: ProjectorStatus) -> None:
        self.status = status
        self.link = _Link()

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_readiness_needs_assigned_partitions_within_the_lag_bound() -> None:
    stub = _Stub(ProjectorStatus())
    monitored = MonitoredService(stub)
    await monitored.start()
    assert projector_report(monitored, stub, 10)["ready"] is False, "nothing assigned yet"
    stub.status.lag = {0: 5, 1: 6}
    assert projector_report(monitored, stub, 10)["ready"] is False, "11 behind > 10"
    stub.status.lag = {0: 5, 1: 5}
    report = projector_report(monitored, stub, 10)
    assert (report["ready"], report["ok"], report["total_lag"]) == (True, True, 10)
    assert "not_ready" not in report
    stub.link.down = "kafka at 127.0.0.1:9 unreachable: KafkaConnectionError"
    report = projector_report(monitored, stub, 10)
    assert (report["ready"], report["ok"]) == (False, True), "live, not ready, while Kafka is away"
    assert report["not_ready"] == stub.link.down
    assert report["kafka"] == {"reachable": False}
    stub.link.down = None
    await monitored.stop()
    assert projector_report(monitored, stub, 10)["ready"] is False, "stopped"


def test_ready_lag_from_env() -> None:
    assert ready_lag_from_env({}) == DEFAULT_READY_LAG
    assert ready_lag_from_env({"AION_PROJECTOR_READY_LAG": "0"}) == 0
    with pytest.raises(SettingsError, match="AION_PROJECTOR_READY_LAG='lots'"):
        ready_lag_from_env({"AION_PROJECTOR_READY_LAG": "lots"})
    with pytest.raises(
        SettingsError, match=r"AION_PROJECTOR_READY_LAG='-1': expected .* from 0 to"
    ):
        ready_lag_from_env({"AION_PROJECTOR_READY_LAG": "-1"})


async def test_aion_projector_serves_health_on_aion_projector_port(
    aion_settings: Settings,
) -> None:
    """The console script with ``AION_PROJECTOR_PORT``: ready when caught up, exits 0 on TERM."""
    await _publish_garbage(aion_settings)
    script = Path(sys.executable).parent / "aion-projector"
    assert script.is_file(), "the aion-projector console script is installed"
    port = free_port()
    env = {
        **os.environ,
        "AION_KAFKA_BOOTSTRAP": aion_settings.bootstrap_servers,
        "AION_TOPIC_PREFIX": aion_settings.topic_prefix,
        "AION_PARTITIONS": str(aion_settings.partitions),
        "AION_DATABASE_URL": aion_settings.database_url,
        "AION_INSTANCE_ID": "projector-sub",
        "AION_PROJECTOR_PORT": str(port),
        "AION_PROJECTOR_READY_LAG": "0",
    }
    proc = await asyncio.create_subprocess_exec(
        script, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        await wait_for(lambda: status_is(port, "/health/ready", 200), what="aion-projector ready")
        status, body = await get_json(port, "/health/ready")
        assert (status, body["total_lag"], body["partitions"]) == (200, 0, [0, 1, 2])
        _, text = await get(port, "/metrics")
        assert f"aion_projector_dead_letters_total {GARBAGE}.0".encode() in text
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert not await status_is(port, "/health", 200), "the endpoint closes with the process"
