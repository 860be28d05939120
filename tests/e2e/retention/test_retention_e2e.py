"""Retention, end to end, with a 2-second ``AION_RETENTION``: a closed workflow is purged by
the engine's sweep through the command path; the views are cleaned after its history was
archived; late commands are refused as for an unknown workflow; the id is free (a new start
begins at seq 1); ``aion history --archived`` and the API read the archived history."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aion import AionApiError, AionClient
from aion.testing import AionStack, run_workflow, running_stack
from aion_dev import StackConfig

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FLOWS = "tests.e2e.retention.flows"
REPO = Path(__file__).resolve().parents[3]
AION = shutil.which("aion", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def retention_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AionStack, Path]]:
    home = tmp_path_factory.mktemp("retention-stack")
    archive = home / "archive"
    config = StackConfig(
        home=home,
        kafka_bootstrap=kafka_bootstrap,
        workflows=(FLOWS,),
        topic_prefix=f"aionret-{uuid.uuid4().hex[:10]}",
        partitions=3,
        pythonpath=(str(REPO),),
        env={"AION_RETENTION": "2s", "AION_ARCHIVE": str(archive)},
    )
    with running_stack(config) as stack:
        yield stack, archive


async def _gone(client: AionClient, workflow_id: str, timeout: float) -> float:
    began = time.monotonic()
    while True:
        status = 200
        try:
            await client.describe(workflow_id)
        except AionApiError as err:
            status = err.status
        if status == 404:
            return time.monotonic() - began
        assert time.monotonic() - began < timeout, f"{workflow_id} still in the views"
        await asyncio.sleep(0.2)


async def test_a_closed_workflow_is_purged_archived_and_its_id_freed(
    retention_stack: tuple[AionStack, Path],
) -> None:
    stack, archive = retention_stack
    async with stack.client(timeout=30) as client:
        assert await run_workflow(client, "ret.parent", 20, id="ret-1", timeout=30) == 41
        waited = await _gone(client, "ret-1", timeout=60)
        await _gone(client, "ret-1-child", timeout=30)
        print(f"views cleaned {waited:.1f} s after the parent's completion was visible")

        (archived,) = await client.archived_history("ret-1")
        kinds = [e.event_type for e in archived.events]
        assert kinds == [
            "WorkflowStarted",
            "ChildWorkflowScheduled",
            "ChildWorkflowCompleted",
            "WorkflowCompleted",
            "WorkflowPurged",
        ]
        assert [e.seq for e in archived.events] == [1, 2, 3, 4, 5]
        assert list(archive.iterdir()), "the archive directory holds the file"

        # late commands are refused as for a workflow that does not exist
        await client.signal("ret-1", "late", {"x": 1})
        deadline = time.monotonic() + 30
        while not (refusals := await client.refusals("ret-1")):
            assert time.monotonic() < deadline, "the late signal was never refused"
            await asyncio.sleep(0.2)
        assert refusals[0].code == "UNKNOWN_WORKFLOW"

        # the id is free: a new start begins a new history at seq 1
        assert await run_workflow(client, "ret.parent", 1, id="ret-1", timeout=30) == 3
        page = await client.history("ret-1")
        assert page.events[0].seq == 1
        assert page.events[0].event_type == "WorkflowStarted"

    assert AION is not None, "the aion console script is not installed"
    shown = await asyncio.to_thread(
        subprocess.run,
        [AION, "--api", stack.api_url, "--json", "history", "ret-1", "--archived"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    incarnations = json.loads(shown.stdout)
    assert incarnations[0]["events"][-1]["event_type"] == "WorkflowPurged"
