"""Versions end to end, on the real broker: packages from the topic, routes, runs that stay on
the version they started on through an engine restart, replay checks through the CLI, and
uploads that are refused whole."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aion import AionApiError, AionClient
from aion.testing import AionStack, wait_for_workflow
from aion_common.packages import build_package

from .conftest import V1, V1_COMPATIBLE, V2, write_flow

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RUNS = 20


def aion_cli(stack: AionStack, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``aion`` CLI against the stack, as a user would."""
    env = {**os.environ, "AION_API_URL": stack.api_url}
    return subprocess.run(
        [sys.executable, "-m", "aion.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _started(client: AionClient, workflow_id: str) -> str:
    """The package version the workflow's current run started on, once the views have it."""
    async with asyncio.timeout(30):
        while True:
            try:
                found = await client.describe(workflow_id)
            except AionApiError:
                await asyncio.sleep(0.1)
                continue
            return found.current_run.package_version


async def test_runs_stay_on_their_version_through_a_reroute_and_an_engine_restart(
    versions_stack: AionStack, client: AionClient, tmp_path: Path
) -> None:
    v1 = build_package(write_flow(tmp_path / "v1", V1))
    v2 = build_package(write_flow(tmp_path / "v2", V2))
    first = await client.deploy(v1.archive(), route=True)
    assert first.created
    assert first.workflow_types == ("long",)
    old = [f"old-{n:02d}" for n in range(RUNS)]
    for n, workflow_id in enumerate(old):
        await client.start("long", n, id=workflow_id)
    assert {await _started(client, w) for w in old} == {v1.version}
    await client.deploy(v2.archive())
    await client.route("long", v2.version)
    new = [f"new-{n}" for n in range(5)]
    for n, workflow_id in enumerate(new):
        await client.start("long", n, id=workflow_id)
    assert {await _started(client, w) for w in new} == {v2.version}
    listed = {(p.version, p.open_runs, p.routed) for p in await client.packages()}
    assert listed == {(v1.version, RUNS, False), (v2.version, 5, True)}
    async with httpx.AsyncClient(base_url=versions_stack.api_url) as http:
        registry = (await http.get("/registry")).text
    assert v1.version in registry
    assert v2.version in registry
    assert "Versions loaded per engine instance" in registry

    # every engine killed: packages come back from the topic (a fresh package directory)
    versions_stack.kill("engine-1")
    for workflow_id in [*old, *new]:
        await client.signal(workflow_id, "go", workflow_id)
    for n, workflow_id in enumerate(old):
        done = await wait_for_workflow(client, workflow_id, timeout=90)
        assert done.result == {"version": 1, "n": n, "go": workflow_id}
    for n, workflow_id in enumerate(new):
        done = await wait_for_workflow(client, workflow_id, timeout=60)
        assert done.result == {"version": 2, "n": n, "go": workflow_id}
    moved = [
        e
        for w in old
        for e in (await client.history(w)).events
        if e.event_type in ("WorkflowBlocked", "WorkflowMoved")
    ]
    assert moved == [], "no run left its version"


async def test_replay_finds_a_divergence_and_passes_a_compatible_change(
    versions_stack: AionStack, client: AionClient, tmp_path: Path
) -> None:
    v1 = build_package(write_flow(tmp_path / "v1", V1))
    await client.deploy(v1.archive())
    for n in range(3):
        await client.start("long", n, id=f"replayed-{n}", package_version=v1.version)
    for n in range(3):
        assert await _started(client, f"replayed-{n}") == v1.version
    await client.signal("replayed-0", "go", 1)
    await wait_for_workflow(client, "replayed-0", timeout=30)

    compatible = write_flow(tmp_path / "v1b", V1_COMPATIBLE)
    passed = aion_cli(versions_stack, "replay", "replayed-0", "--against", str(compatible))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "matches" in passed.stdout

    incompatible = write_flow(tmp_path / "v2", V2)
    failed = aion_cli(versions_stack, "replay", "replayed-0", "--against", str(incompatible))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "diverges at seq 2" in failed.stdout
    assert "longflow.py:7: await ctx.sleep(0.01)" in failed.stdout

    sampled = aion_cli(
        versions_stack, "replay", "--type", "long", "--sample", "3", "--against", str(incompatible)
    )
    assert sampled.returncode == 1, sampled.stdout + sampled.stderr
    assert "diverge" in sampled.stdout
    by_hash = aion_cli(versions_stack, "replay", "replayed-1", "--against", v1.version)
    assert by_hash.returncode == 0, by_hash.stdout + by_hash.stderr

    saved = aion_cli(versions_stack, "history", "replayed-0", "--all", "--json")
    assert saved.returncode == 0, saved.stderr
    history_file = tmp_path / "replayed-0.json"
    history_file.write_text(saved.stdout, encoding="utf-8")
    from aion.testing.replay import assert_replays, check_replay

    assert_replays(history_file, workflows=compatible)
    assert not check_replay(history_file, workflows=incompatible).ok


async def test_bad_uploads_and_routes_are_refused_and_nothing_is_half_deployed(
    versions_stack: AionStack, client: AionClient, tmp_path: Path
) -> None:
    before = await client.packages()
    big = tmp_path / "big"
    write_flow(big, V1)
    (big / "blob.txt").write_bytes(os.urandom(80 * 1024))  # incompressible, over 64 KiB
    too_large = aion_cli(versions_stack, "deploy", str(big), "--include", "*.txt")
    assert too_large.returncode == 2, too_large.stdout + too_large.stderr
    assert "over the limit of 65536" in too_large.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "helpers.py").write_text("def helper():\n    return 1\n", encoding="utf-8")
    no_workflow = aion_cli(versions_stack, "deploy", str(empty / "helpers.py"))
    assert no_workflow.returncode == 2
    assert "declares no workflow" in no_workflow.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "flows.py").write_text("def broken(:\n", encoding="utf-8")
    syntax = aion_cli(versions_stack, "deploy", str(broken / "flows.py"))
    assert syntax.returncode == 2
    assert "flows.py:1: syntax error" in syntax.stderr

    unknown = aion_cli(versions_stack, "route", "long", "f" * 64)
    assert unknown.returncode == 1
    assert "is not uploaded" in unknown.stderr

    # the API refuses what a client that skips the CLI's own checks sends
    raw = build_package(broken / "flows.py").archive()
    with pytest.raises(AionApiError) as refused:
        await client.deploy(raw)
    assert refused.value.kind == "invalid-package"
    assert await client.packages() == before
