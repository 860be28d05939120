"""Versions under ``aion dev``, run as a user runs it: every edit of a workflow module is a new
version for new runs; a run broken by an edit is blocked (with its reason), not failed, and
moving it to fixed code — by hand or by routing the fix — runs it to completion."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.e2e.dev.harness import DevProcess

from aion import AionApiError, AionClient
from aion.testing import wait_for_workflow

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

CODE = """from aion import workflow


@workflow.defn("edited")
async def edited(ctx, name):
{body}
"""
GOOD = """    go = await ctx.wait_signal("go")
    return {"code": "v1", "name": name, "go": go}
"""
BROKEN = """    greeting = undefined_greeting  # an edit with a bug before the first decision
    go = await ctx.wait_signal("go")
    return {"code": greeting, "name": name, "go": go}
"""
FIXED = """    go = await ctx.wait_signal("go")
    return {"code": "fixed", "name": name, "go": go}
"""


def _write(path: Path, body: str) -> None:
    path.write_text(CODE.format(body=body), encoding="utf-8")


async def _routed(client: AionClient, other_than: str | None) -> str:
    """The route of ``edited`` once it differs from ``other_than`` (aion dev polls each 1 s)."""
    async with asyncio.timeout(30):
        while True:
            routes = {r.workflow_type: r.version for r in await client.routes()}
            if routes.get("edited", other_than) != other_than:
                return routes["edited"]
            await asyncio.sleep(0.2)


async def _status(client: AionClient, workflow_id: str, wanted: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                if (await client.describe(workflow_id)).workflow.status == wanted:
                    return
            except AionApiError:
                pass
            await asyncio.sleep(0.2)


def _cli(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aion.cli", "--api", api, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_broken_edit_blocks_new_runs_until_they_move_to_the_fix(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    module = code / "dev_flows.py"
    _write(module, GOOD)
    monkeypatch.setenv("PYTHONPATH", str(code))
    dev = DevProcess(
        tmp_path / "home",
        [
            "--kafka",
            kafka_bootstrap,
            "--topic-prefix",
            topic_prefix,
            "--no-examples",
            "--workflows",
            "dev_flows",
        ],
    )
    dev.start()
    try:
        api = await dev.wait_up()
        assert "deployed and routed" in dev.stdout
        async with AionClient(api, timeout=30) as client:
            v1 = await _routed(client, None)
            await client.start("edited", "a", id="before-edit")
            await _status(client, "before-edit", "RUNNING")

            _write(module, BROKEN)
            broken = await _routed(client, v1)
            await client.start("edited", "b", id="hit-by-edit")
            await _status(client, "hit-by-edit", "BLOCKED")
            run = (await client.describe("hit-by-edit")).current_run
            assert run.package_version == broken
            assert run.error_type == "NameError"
            assert "undefined_greeting" in (run.error_message or "")
            assert "dev_flows.py" in (run.error_traceback or "")
            shown = _cli(api, "describe", "hit-by-edit")
            assert "blocked" in shown.stdout
            assert "aion run move hit-by-edit" in shown.stdout

            # the run started before the edit stays on its version and finishes
            await client.signal("before-edit", "go", 1)
            done = await wait_for_workflow(client, "before-edit", timeout=30)
            assert done.result == {"code": "v1", "name": "a", "go": 1}

            # the fix, uploaded beside the route, and the blocked run moved to it by hand
            fix = tmp_path / "fix"
            fix.mkdir()
            _write(fix / "dev_flows.py", FIXED)
            deployed = _cli(api, "--json", "deploy", str(fix / "dev_flows.py"))
            assert deployed.returncode == 0, deployed.stderr
            fixed = json.loads(deployed.stdout)["version"]
            moved = _cli(api, "run", "move", "hit-by-edit", fixed)
            assert moved.returncode == 0, moved.stdout + moved.stderr
            await client.signal("hit-by-edit", "go", 2)
            done = await wait_for_workflow(client, "hit-by-edit", timeout=30)
            assert done.result == {"code": "fixed", "name": "b", "go": 2}
            assert "WorkflowBlocked" in done.event_types
            assert "WorkflowFailed" not in done.event_types

            # a second blocked run is moved by routing the fix: the edit that repairs the file
            await client.start("edited", "c", id="also-hit")
            await _status(client, "also-hit", "BLOCKED")
            _write(module, FIXED)
            assert await _routed(client, broken) == fixed
            await _status(client, "also-hit", "RUNNING")
            await client.signal("also-hit", "go", 3)
            done = await wait_for_workflow(client, "also-hit", timeout=30)
            assert done.result == {"code": "fixed", "name": "c", "go": 3}
        assert "workflow code changed" in dev.err_path.read_text()
    finally:
        dev.kill_quietly()
