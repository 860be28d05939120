"""``aion-dev`` end to end, run as a user runs it: the demo, killed services, Ctrl-C, restarts.

Most tests use the session's broker (``--kafka``, a topic prefix of their own) to spare the
machine a JVM each; the restart test runs the embedded Kafka, since keeping its data under the
home across a stop and a start is what it checks.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from tests.e2e.dev.harness import (
    DevProcess,
    alive,
    processes_using,
    retrying,
    run_order,
    until,
)

from aion import AionApiError, AionClient

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SERVICES = ("engine-1", "watcher", "worker", "projector", "api")


def _shared(kafka_bootstrap: str, topic_prefix: str) -> list[str]:
    return ["--kafka", kafka_bootstrap, "--topic-prefix", topic_prefix]


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in:\n{text}"
    return int(match.group(1))


async def test_demo_runs_every_case_and_sums_up(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    dev = DevProcess(tmp_path / "home", ["--demo", *_shared(kafka_bootstrap, topic_prefix)])
    dev.start()
    try:
        status = await dev.wait_exit(timeout=400)
    finally:
        dev.kill_quietly()
    out = dev.stdout
    assert status == 0, dev.diagnostics()
    cases = _number(r"all (\d+) cases ended as expected", out)
    assert cases >= 5
    assert _number(r"workflows started:\s+(\d+)", out) == cases
    completed = _number(r"completed:\s+(\d+)", out)
    failed_as_expected = _number(r"failed as expected:\s+(\d+)", out)
    assert completed + failed_as_expected == cases
    assert failed_as_expected >= 1  # a declined order and a cancellation
    children = re.search(r"children recorded:\s+(\d+) \(expected (\d+)\)", out)
    assert children is not None, out
    assert children.group(1) == children.group(2)
    assert int(children.group(1)) >= 50
    assert re.search(r"wall time:\s+\d+\.\d s", out), out
    assert out.count("[ok] ") == cases
    assert "MISMATCH" not in out


async def test_demo_exits_1_naming_the_case_that_did_not_match(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    args = ["--demo", "--demo-cases", "tests.e2e.dev.mismatch_cases", "--no-examples"]
    args += ["--workflows", "aion_engine.examples", *_shared(kafka_bootstrap, topic_prefix)]
    dev = DevProcess(tmp_path / "home", args)
    dev.start()
    try:
        status = await dev.wait_exit(timeout=300)
    finally:
        dev.kill_quietly()
    out = dev.stdout
    assert status == 1, dev.diagnostics()
    assert "[ok] payment that completes" in out
    assert "1 of 2 cases did not end as expected" in out
    assert re.search(
        r"MISMATCH payment wrongly expected to complete: ended failed .*cannot charge", out
    ), out


async def test_each_killed_service_is_restarted_and_no_workflow_is_lost(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    dev = DevProcess(tmp_path / "home", _shared(kafka_bootstrap, topic_prefix))
    dev.start()
    try:
        api_url = await dev.wait_up()
        warmup = await run_order(api_url, "warmup")
        assert warmup.status == "COMPLETED", warmup
        for name in SERVICES:
            victim = dev.children()[name]
            started = run_order(api_url, f"around-kill-of-{name}")
            # The order is in flight (or just accepted) when its service dies.
            order = asyncio.create_task(started)
            await asyncio.sleep(0.2)
            os.kill(victim, signal.SIGKILL)
            line = f"restarted {name} (signal SIGKILL, restart 1)"
            await until(lambda line=line: line in dev.supervisor_log, 120, line)
            result = await order
            assert result.status == "COMPLETED", (name, result)
            assert result.result["status"] == "shipped", (name, result)
            replacement = dev.children()[name]
            assert replacement != victim
            assert alive(replacement)
            assert not alive(victim)
        # A second aion dev on the same home is refused and leaves the first one's files alone.
        second = DevProcess(dev.home, _shared(kafka_bootstrap, topic_prefix), tag="second")
        second.start()
        assert await second.wait_exit(timeout=60) == 2
        assert "another aion dev" in second.err_path.read_text()
        assert (dev.home / "aion-dev.pids").exists()
        async with AionClient(api_url) as client:
            history = await retrying(lambda: client.history("around-kill-of-engine-1"))
        kinds = [e.event_type for e in history.events]
        assert kinds.count("ActivityCompleted") == 3, kinds  # charge, ship, invoice
        dev.signal(signal.SIGINT)
        assert await dev.wait_exit() == 0, dev.diagnostics()
    finally:
        dev.kill_quietly()


async def test_ctrl_c_leaves_nothing_and_a_restart_keeps_every_workflow(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = DevProcess(home, [], tag="first")  # the embedded Kafka, data under home/kafka
    first.start()
    try:
        api_url = await first.wait_up()
        done = await run_order(api_url, "before-the-restart")
        assert done.status == "COMPLETED", done
        assert f"web UI {api_url}/ " in first.stdout  # the banner says where the UI is
        async with httpx.AsyncClient() as http:
            page = await http.get(f"{api_url}/workflows/before-the-restart")
        assert page.status_code == 200
        assert "COMPLETED" in page.text
        pids = first.children()
        assert set(pids) == {"kafka", "shop", "scheduler", *SERVICES}
        first.signal(signal.SIGINT)
        assert await first.wait_exit() == 0, first.diagnostics()
    finally:
        first.kill_quietly()
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert not (home / "aion-dev.pids").exists()
    kafka_line = re.search(r"kafka (\S+), database", first.stdout)
    assert kafka_line is not None

    # Without the SQLite views the projector must rebuild them from the broker's kept data.
    for leftover in home.glob("aion.db*"):
        leftover.unlink()
    second = DevProcess(home, [], tag="second")
    second.start()
    try:
        api_url = await second.wait_up()
        assert f"kafka {kafka_line.group(1)}," in second.stdout  # same port as last time
        async with AionClient(api_url) as client:
            await until_described(client, "before-the-restart")
            described = await client.describe("before-the-restart")
            history = await client.history("before-the-restart")
        assert described.workflow.status == "COMPLETED"
        kinds = [e.event_type for e in history.events]
        assert kinds.count("ActivityCompleted") == 3, kinds
        again = await run_order(api_url, "after-the-restart")
        assert again.status == "COMPLETED", again
        # A SIGKILLed aion-dev cannot stop its children: the kernel does (PR_SET_PDEATHSIG).
        orphans = second.children()
        assert second.process is not None
        second.process.kill()
        await second.wait_exit()
        await until(lambda: not any(alive(p) for p in orphans.values()), 60, "orphans to exit")
    finally:
        second.kill_quietly()

    # Ctrl-C while the stack is still starting (the broker launching) stops what was started.
    third = DevProcess(home, [], tag="third")
    third.start()
    try:
        await until(lambda: bool(processes_using(home / "kafka")), 60, "the broker to launch")
        third.signal(signal.SIGINT)
        assert await third.wait_exit() == 130, third.diagnostics()
    finally:
        third.kill_quietly()
    await until(lambda: not processes_using(home), 10, f"no process left using {home}")


async def until_described(client: AionClient, workflow_id: str) -> None:
    for _ in range(600):
        try:
            described = await retrying(lambda: client.describe(workflow_id))
        except AionApiError as err:
            if err.status != 404:
                raise
        else:
            if described.workflow.status == "COMPLETED":
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} was not described as completed after the restart")
