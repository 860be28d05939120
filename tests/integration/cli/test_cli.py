"""The real ``aion`` console script against a real API process (uvicorn) on a free port."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from api.conftest import consume_commands
from api.dataset import populate

from aion_common.kafka import Topics, ensure_topics
from aion_common.settings import Settings
from aion_common.testing.broker import KafkaBroker
from aion_projector import connect, migrate, session_factory

AION = shutil.which("aion", path=str(Path(sys.executable).parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _serving(env: dict[str, str]) -> Iterator[str]:
    """``python -m aion_projector.api`` on a free port, until its /health answers."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "aion_projector.api", "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "the API process exited"
            assert time.monotonic() < deadline, "the API did not come up"
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


@pytest.fixture
async def api_url(aion_settings: Settings) -> AsyncIterator[str]:
    engine = connect(aion_settings.database_url)
    await migrate(engine)
    await populate(session_factory(engine))
    await engine.dispose()
    await ensure_topics(aion_settings, Topics(aion_settings.topic_prefix))
    env = os.environ | {
        "AION_DATABASE_URL": aion_settings.database_url,
        "AION_KAFKA_BOOTSTRAP": aion_settings.bootstrap_servers,
        "AION_TOPIC_PREFIX": aion_settings.topic_prefix,
        "AION_PARTITIONS": str(aion_settings.partitions),
    }
    env.pop("AION_API_TOKEN", None)
    with _serving(env) as url:
        yield url


def aion(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert AION is not None, "the aion console script is not installed"
    return subprocess.run(
        [AION, "--api", url, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_describe_list_history_tree_result(api_url: str) -> None:
    described = aion(api_url, "--json", "describe", "order-1")
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["current_run"]["result"] == {"total": 42}
    human = aion(api_url, "describe", "order-1")
    assert "COMPLETED" in human.stdout
    assert "ship-1" in human.stdout
    listed = json.loads(aion(api_url, "--json", "list", "--type", "order").stdout)
    assert {w["workflow_id"] for w in listed["items"]} == {"order-1", "order-2", "order-3"}
    failed = aion(api_url, "list", "--status", "FAILED")
    assert "order-2" in failed.stdout
    history = json.loads(aion(api_url, "--json", "history", "order-1").stdout)
    assert history["events"][0]["event_type"] == "WorkflowStarted"
    assert "audit-1" in aion(api_url, "tree", "order-1").stdout
    assert aion(api_url, "result", "order-1").returncode == 0
    assert aion(api_url, "result", "order-2").returncode == 1
    running = aion(api_url, "result", "order-3", "--wait", "--timeout", "0.3")
    assert running.returncode == 1
    assert "RUNNING" in running.stdout


def test_not_found_and_validation_exit_codes(api_url: str) -> None:
    missing = aion(api_url, "describe", "nope")
    assert missing.returncode == 1
    assert "nope" in missing.stderr
    assert aion(api_url, "start", "order", "--input", "{bad").returncode == 2
    assert aion(api_url, "start", " padded").returncode == 2
    assert aion(api_url, "list", "--status", "SLEEPING").returncode == 2
    assert aion(api_url).returncode == 2  # no command: argparse usage


async def test_start_signal_cancel_reach_kafka(api_url: str, aion_settings: Settings) -> None:
    started = aion(
        api_url, "--json", "start", "order", "--id", "cli-1", "--input", '{"a": 1}', "--no-wait"
    )
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["workflow_id"] == "cli-1"
    signal = aion(api_url, "signal", "cli-1", "go", "--payload", "[1]", "--no-wait")
    assert signal.returncode == 0
    assert "sent (command" in signal.stdout
    assert aion(api_url, "cancel", "cli-1", "--reason", "done", "--no-wait").returncode == 0
    commands = await consume_commands(aion_settings, 3)
    assert [type(c).__name__ for c in commands] == [
        "StartWorkflow",
        "SignalWorkflow",
        "CancelWorkflow",
    ]


def test_unreachable_api_exits_3() -> None:
    result = aion(f"http://127.0.0.1:{_free_port()}", "list")
    assert result.returncode == 3
    assert "cannot reach the aion API" in result.stderr


def test_without_an_engine_a_start_is_queued_and_says_why(api_url: str) -> None:
    started = aion(api_url, "start", "order", "--id", "cli-idle", "--confirm-timeout", "0.5")
    assert started.returncode == 0, started.stderr
    assert "started cli-idle" in started.stdout
    assert "no engine is running for partition" in started.stderr
    waited = aion(api_url, "start", "order", "--id", "cli-idle-2", "--wait", "--timeout", "0.5")
    assert waited.returncode == 1
    assert "PENDING: no engine is running for partition" in waited.stdout


def test_a_server_that_is_not_aion_is_named_and_exits_3(tmp_path: Path) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            listed = aion(url, "list")
            started = aion(url, "start", "order")
        finally:
            server.shutdown()
    for done, status in ((listed, 404), (started, 501)):  # 501: it takes no POST
        assert done.returncode == 3, done.stderr
        assert f"no aion API at {url} (it answered HTTP {status} with HTML)" in done.stderr
        assert "<html" not in done.stderr.lower() + done.stdout.lower()


def test_without_kafka_the_api_reads_and_refuses_commands_fast_and_the_cli_retries(
    sqlite_url: str,
) -> None:
    """Kafka away (here: never there): the API starts anyway, answers reads, answers commands
    503 + Retry-After with a problem naming the broker, reports not-ready (live stays up), and
    the CLI re-sends a command with one request id until its --retry-for runs out."""
    dead_kafka = f"127.0.0.1:{_free_port()}"
    env = os.environ | {
        "AION_DATABASE_URL": sqlite_url,
        "AION_KAFKA_BOOTSTRAP": dead_kafka,
        "AION_API_PRODUCE_TIMEOUT_MS": "2000",
    }
    env.pop("AION_API_TOKEN", None)
    with _serving(env) as url:
        assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
        deadline = time.monotonic() + 15
        while (ready := httpx.get(f"{url}/health/ready", timeout=5)).json()["kafka"].get(
            "error"
        ) == "not probed yet":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert ready.status_code == 503
        assert f"kafka at {dead_kafka} unreachable" in ready.json()["not_ready"]
        listed = aion(url, "--json", "list")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["items"] == []

        began = time.monotonic()
        answer = httpx.post(
            f"{url}/v1/workflows", json={"type": "order", "request_id": "r-1"}, timeout=10
        )
        assert time.monotonic() - began < 2, "refused at once, not after the produce timeout"
        assert answer.status_code == 503
        assert answer.headers["retry-after"].isdigit()
        problem = answer.json()
        assert problem["type"] == "https://aion.dev/problems/unavailable"
        assert f"kafka at {dead_kafka} unreachable" in problem["detail"]
        assert "not queued" in problem["detail"]

        result = aion(url, "--retry-for", "2", "signal", "w-1", "go", "--request-id", "sig-1")
        assert result.returncode == 3
        waits = [line for line in result.stderr.splitlines() if line.startswith("waiting:")]
        assert waits, result.stderr
        assert all("request id sig-1" in line for line in waits)
        assert "signal 'go' to w-1 was not confirmed" in result.stderr
        assert "request id sig-1" in result.stderr
        assert "unreachable" in result.stderr


def _own_broker_env(broker: KafkaBroker, database_url: str, prefix: str) -> dict[str, str]:
    """The API process's environment on a broker of the test's own, without a token."""
    env = os.environ | {
        "AION_DATABASE_URL": database_url,
        "AION_KAFKA_BOOTSTRAP": broker.bootstrap_servers,
        "AION_TOPIC_PREFIX": prefix,
        "AION_PARTITIONS": "2",
    }
    env.pop("AION_API_TOKEN", None)
    return env


def test_schedule_list_warns_while_stale_and_a_refused_write_says_why(
    own_broker: KafkaBroker, sqlite_url: str
) -> None:
    """With Kafka away the API lists the schedules as last read: `aion schedule list` still
    shows them, with a note on stderr saying they may be out of date and why (--json's stdout
    stays the list); a write is refused at once, saying what was not done (decision 66)."""
    env = _own_broker_env(own_broker, sqlite_url, "cli-sched")
    with _serving(env) as url:
        created = aion(url, "schedule", "create", "nightly", "--type", "report", "--every", "1h")
        assert created.returncode == 0, created.stderr
        listed = aion(url, "schedule", "list")
        assert (listed.returncode, "nightly" in listed.stdout, listed.stderr) == (0, True, "")

        own_broker.stop()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health/ready", timeout=5).json()["kafka"]["reachable"]:
            assert time.monotonic() < deadline, "the API never saw Kafka away"
            time.sleep(0.1)
        note = (
            "note: these schedules are as last read, and may be out of date: "
            f"Kafka at {own_broker.bootstrap_servers} is unreachable"
        )
        listed = aion(url, "schedule", "list")
        assert listed.returncode == 0, listed.stderr
        assert "nightly" in listed.stdout
        assert listed.stderr.strip() == note
        as_json = aion(url, "--json", "schedule", "list")
        assert [s["id"] for s in json.loads(as_json.stdout)] == ["nightly"]
        assert as_json.stderr.strip() == note

        deleted = aion(url, "schedule", "delete", "nightly")
        assert deleted.returncode == 3, deleted.stderr
        assert "the deletion of schedule 'nightly' was not written" in deleted.stderr
        assert f"kafka at {own_broker.bootstrap_servers} unreachable" in deleted.stderr


def test_a_deploy_or_route_while_kafka_is_away_says_what_was_not_done(
    own_broker: KafkaBroker, sqlite_url: str, tmp_path: Path
) -> None:
    """`aion deploy` and `aion route` with Kafka away used to wait for the API's unbounded send
    and end in "cannot reach the aion API … ReadTimeout"; the API now refuses them at once and
    the terminal says what was not done and what to run (decision 66, amended 2026-12-07)."""
    env = _own_broker_env(own_broker, sqlite_url, "cli-cat")
    source = tmp_path / "greetings.py"
    flow = "from aion import workflow\n\n@workflow.defn('greet')\nasync def greet(ctx, name):\n"
    source.write_text(f"{flow}    return 'hello ' + name\n")
    with _serving(env) as url:
        deployed = aion(url, "deploy", str(source))
        assert deployed.returncode == 0, deployed.stderr
        version = deployed.stdout.split()[0]

        own_broker.stop()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health/ready", timeout=5).json()["kafka"]["reachable"]:
            assert time.monotonic() < deadline, "the API never saw Kafka away"
            time.sleep(0.1)
        source.write_text(f"{flow}    return 'hi ' + name\n")
        began = time.monotonic()
        again = aion(url, "deploy", str(source))
        took = time.monotonic() - began
        assert again.returncode == 3, again.stderr
        assert "the package was not deployed: run `aion deploy` again" in again.stderr
        assert f"kafka at {own_broker.bootstrap_servers} unreachable" in again.stderr
        assert "ReadTimeout" not in again.stderr
        assert took < 8, f"`aion deploy` took {took:.1f} s: the API knows Kafka is away"

        routed = aion(url, "route", "greet", version)
        assert routed.returncode == 3, routed.stderr
        assert f"'greet' was not routed to {version[:12]}: run `aion route` again" in (
            routed.stderr
        )
