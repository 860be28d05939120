"""docker-compose.yml for real: the whole stack up healthy, engines killed mid-run, and every
workflow right afterwards — nothing lost, nothing doubled.

The stack is the compose file (with deploy/compose.local.yml where the public Kafka and
PostgreSQL images are absent) on the images of ``make images``, as its own compose project
with the API on a free 127.0.0.1 port. Work goes in through the API only: fan-outs with
children (some of which fail), supervisors whose children each wait for a signal, and orders
whose activities (one retried against a flaky provider) the compose file's worker runs.

Two faults, while children are in flight and signals are pending:

- ``docker kill`` engine-1 (SIGKILL). Docker 20.10 counts a ``docker kill`` as a manual stop,
  so no restart policy brings it back (measured: RestartCount stays 0 for unless-stopped,
  always and on-failure); compose restarts it (``up -d --no-deps engine-1``), as an operator's
  ``docker compose up -d`` would.
- engine-2 crashes: its main process is SIGKILLed from the host (as an OOM kill does), and
  the ``restart: unless-stopped`` policy of the compose file restarts it with no one's help.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from examples.fanout import expected_result

from aion import AionClient
from aion.testing import WorkflowRun, wait_for_workflow
from aion_common.testing import free_port
from aion_common.testing.compose import ComposeStack
from aion_common.testing.images import ImageSet

pytestmark = pytest.mark.slow

ITEMS = 20
JOBS = 3
TIMEOUT = 180.0


@pytest.fixture
def compose_stack(images: ImageSet) -> Any:
    """The compose project, up and healthy; removed afterwards (its logs kept on failure)."""
    lines: list[str] = []
    stack = ComposeStack(
        project=f"aionchaos{uuid.uuid4().hex[:8]}", api_port=free_port(), say=lines.append
    )
    try:
        seconds = stack.up()
        lines.append(f"compose: healthy in {seconds:.1f} s ({stack.seconds_to_healthy})")
        print("\n".join(lines))
        yield stack
    except BaseException:
        print(stack.logs(tail=80))
        raise
    finally:
        stack.down()


def _crash(stack: ComposeStack, service: str) -> None:
    """SIGKILL the container's main process from the host: a crash, not a stop."""
    pid = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", stack.container_id(service)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    os.kill(int(pid), signal.SIGKILL)


async def _until(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def _start_fanouts(client: AionClient, ids: list[str]) -> None:
    for workflow_id in ids:
        await client.start("examples.fanout", {"items": ITEMS}, id=workflow_id)


async def _start_orders(client: AionClient, ids: list[str]) -> None:
    for workflow_id in ids:
        spec = {"order_id": workflow_id, "amount": 4200, "fail_payment_attempts": 1}
        await client.start("examples.order", spec, id=workflow_id)


async def _jobs_waiting(client: AionClient, supervisors: list[str]) -> bool:
    for supervisor in supervisors:
        for job in range(JOBS):
            try:
                described = await client.describe(f"{supervisor}:job-{job}")
            except Exception:  # noqa: BLE001 - not visible yet
                return False
            if described.workflow.status != "RUNNING":
                return False
    return True


async def _signal(client: AionClient, supervisors: list[str]) -> None:
    for supervisor in supervisors:
        for job in range(JOBS):
            await client.signal(f"{supervisor}:job-{job}", "finish", {"by": supervisor, "job": job})


def _check_history(run: WorkflowRun) -> Counter[str]:
    seqs = [event.seq for event in run.history]
    assert seqs == list(range(1, len(seqs) + 1)), f"{run.workflow_id}: seqs {seqs}"
    types = Counter(run.event_types)
    assert types["WorkflowStarted"] == 1, f"{run.workflow_id}: {run.event_types}"
    return types


async def _check_fanout(client: AionClient, workflow_id: str) -> None:
    run = await wait_for_workflow(client, workflow_id, timeout=TIMEOUT)
    assert run.status == "COMPLETED", (workflow_id, run.status, run.error)
    assert run.result == expected_result(ITEMS), workflow_id
    types = _check_history(run)
    assert types["ChildWorkflowScheduled"] == ITEMS, (workflow_id, types)
    assert types["ChildWorkflowCompleted"] + types["ChildWorkflowFailed"] == ITEMS, types
    for index in range(ITEMS):
        child = await wait_for_workflow(client, f"{workflow_id}:item-{index:03d}")
        child_types = _check_history(child)
        terminals = child_types["WorkflowCompleted"] + child_types["WorkflowFailed"]
        assert terminals == 1, (child.workflow_id, child.event_types)


async def _check_supervisor(client: AionClient, workflow_id: str) -> None:
    run = await wait_for_workflow(client, workflow_id, timeout=TIMEOUT)
    assert run.status == "COMPLETED", (workflow_id, run.status, run.error)
    expected = [{"index": j, "finished": {"by": workflow_id, "job": j}} for j in range(JOBS)]
    assert run.result == expected
    assert _check_history(run)["ChildWorkflowCompleted"] == JOBS
    for job in range(JOBS):
        child = await wait_for_workflow(client, f"{workflow_id}:job-{job}")
        assert _check_history(child)["SignalReceived"] == 1, child.event_types


async def _check_order(client: AionClient, workflow_id: str) -> None:
    run = await wait_for_workflow(client, workflow_id, timeout=TIMEOUT)
    assert run.status == "COMPLETED", (workflow_id, run.status, run.error)
    assert run.result["status"] == "shipped", run.result
    assert run.result["payment_attempts"] >= 2, "the provider's first answer was a 503"
    types = _check_history(run)
    assert types["ActivityCompleted"] == 3, (workflow_id, run.event_types)  # charge, ship, invoice


async def _scenario(stack: ComposeStack) -> None:
    fanouts = [f"fan-{i}" for i in range(8)]
    supervisors = [f"sup-{i}" for i in range(4)]
    orders = [f"order-{i}" for i in range(4)]
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        page = await http.get("/")
        # The web UI's templates and static files are package data: the image ships them.
        assert page.status_code == 200, page.text[:500]
        assert "text/html" in page.headers["content-type"]
    async with AionClient(stack.api_url, timeout=30) as client:
        await _start_fanouts(client, fanouts[:3])
        for supervisor in supervisors:
            spec = {"workers": JOBS, "terminate_last": False}
            await client.start("examples.cancellation", spec, id=supervisor)
        await _until(lambda: _jobs_waiting(client, supervisors), "every job waiting")

        # Fault 1: more children in flight, then `docker kill` engine-1; signals while it is down.
        await _start_fanouts(client, fanouts[3:6])
        await _start_orders(client, orders[:2])
        await asyncio.to_thread(stack.kill, "engine-1")
        await _signal(client, supervisors[:2])
        await asyncio.to_thread(stack.compose, "up", "-d", "--no-build", "--no-deps", "engine-1")
        await asyncio.to_thread(stack.wait_healthy, TIMEOUT)

        # Fault 2: engine-2 crashes mid-run; the restart policy brings it back.
        await _start_fanouts(client, fanouts[6:])
        await _start_orders(client, orders[2:])
        await asyncio.to_thread(_crash, stack, "engine-2")
        await _signal(client, supervisors[2:])

        async def restarted() -> bool:
            return await asyncio.to_thread(stack.restart_count, "engine-2") >= 1

        await _until(restarted, "engine-2 restarted by its restart policy")
        await asyncio.to_thread(stack.wait_healthy, TIMEOUT)

        for workflow_id in fanouts:
            await _check_fanout(client, workflow_id)
        for workflow_id in supervisors:
            await _check_supervisor(client, workflow_id)
        for workflow_id in orders:
            await _check_order(client, workflow_id)


def test_engines_killed_mid_run_lose_and_double_nothing(compose_stack: ComposeStack) -> None:
    asyncio.run(_scenario(compose_stack))
    assert compose_stack.restart_count("engine-2") == 1
