"""Every service starts without Kafka and waits for it (issue 19): started against an address
nobody listens on, the engine, watcher, projector, worker, ingress, scheduler and API stay up,
answer ``/health/live`` 200 and ``/health/ready`` 503 naming the unreachable cluster; the API
serves reads from its views and answers a command 503 with ``Retry-After`` at once; SIGTERM
stops each cleanly. No broker is needed (nothing listens at the address).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .http import free_port, get, get_json, status_is, wait_for

pytestmark = pytest.mark.timeout(180)

_WAIT_S = 6.0  # long enough for a start-up step that exits on a refused connection to do so


async def _spawn(argv: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


async def test_every_service_starts_without_kafka_and_waits(tmp_path: Path) -> None:
    dead = free_port()  # nobody listens there
    base = {
        **os.environ,
        "AION_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}",
        "AION_TOPIC_PREFIX": "nokafka",
        "AION_PARTITIONS": "2",
        "AION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'aion.db'}",
        "AION_API_PRODUCE_TIMEOUT_MS": "2000",
    }
    names = ("engine", "watcher", "projector", "worker", "ingress", "scheduler", "api")
    ports = {name: free_port() for name in names}
    ingress_config = Path(__file__).resolve().parents[3] / "examples/integration/ingress.yaml"
    commands = {
        "engine": (
            ["-m", "aion_engine", "--workflows", "aion_engine.examples"],
            "AION_ENGINE_PORT",
        ),
        "watcher": (["-m", "aion_watcher"], "AION_WATCHER_PORT"),
        "projector": (["-m", "aion_projector"], "AION_PROJECTOR_PORT"),
        "worker": (["-m", "aion_worker", "--task-queue", "default"], "AION_WORKER_PORT"),
        "ingress": (["-m", "aion_ingress", "--config", str(ingress_config)], "AION_INGRESS_PORT"),
        "scheduler": (["-m", "aion_scheduler"], "AION_SCHEDULER_PORT"),
        "api": (["-m", "aion_projector.api", "--port", str(ports["api"])], None),
    }
    procs: dict[str, asyncio.subprocess.Process] = {}
    try:
        for name, (argv, port_env) in commands.items():
            env = {**base, "AION_INSTANCE_ID": f"nokafka-{name}"}
            if port_env is not None:
                env[port_env] = str(ports[name])
            procs[name] = await _spawn(argv, env, tmp_path / f"{name}.log")
        for name, port in ports.items():
            await wait_for(lambda p=port: status_is(p, "/health/live", 200), what=f"{name} live")
        await asyncio.sleep(_WAIT_S)
        for name, port in ports.items():
            proc = procs[name]
            log = (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:]
            assert proc.returncode is None, f"{name} exited ({proc.returncode}): {log}"
            assert (await get(port, "/health/live"))[0] == 200, name
            status, body = await get_json(port, "/health/ready")
            assert status == 503, (name, body)
            assert f"127.0.0.1:{dead}" in json.dumps(body), (name, body)

        api = f"http://127.0.0.1:{ports['api']}"
        async with httpx.AsyncClient(base_url=api, timeout=10) as http:
            reads = await http.get("/v1/workflows")
            assert reads.status_code == 200, reads.text
            began = time.monotonic()
            start = await http.post(
                "/v1/workflows", json={"type": "greeting", "input": "x", "request_id": "r-1"}
            )
            took = time.monotonic() - began
        assert start.status_code == 503, start.text
        assert int(start.headers["retry-after"]) >= 1
        assert "kafka" in start.json()["detail"].lower(), start.json()
        assert took < 2.0, f"the 503 took {took:.2f} s: the cluster is known to be away"

        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            code = await asyncio.wait_for(proc.wait(), 30)
            log = (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:]
            # uvicorn re-raises the signal it caught once it has shut down: the API ends by it
            clean = (0, -signal.SIGTERM) if name == "api" else (0,)
            assert code in clean, f"{name} exited {code} on SIGTERM: {log}"
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
