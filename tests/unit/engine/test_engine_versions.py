"""Versions in the engine's core: runs start on a route or a pinned version, replay on their
own version for life, block instead of failing when their code cannot go on, and move on."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from engine_harness import World

from aion_common.domain import (
    MoveWorkflow,
    PackageRecord,
    RefusalCode,
    RouteRecord,
    WorkflowBlocked,
    WorkflowMoved,
    WorkflowStarted,
)
from aion_common.packages import build_package
from aion_engine import EngineCore
from aion_engine.registry import WorkflowRegistry
from aion_engine.versions import Versions

AT = datetime(2026, 1, 1, tzinfo=UTC)

FLOW = """
from aion import workflow


@workflow.defn("flow")
async def flow(ctx, value):
    {body}


@workflow.defn("looper")
async def looper(ctx, n):
    if n >= 2:
        return {{"version": {tag!r}, "n": n}}
    await ctx.wait_signal("next")
    ctx.continue_as_new(n + 1)
"""

V1 = """await ctx.sleep(0)
    first = await ctx.wait_signal("go", timeout=60)
    return {"version": "v1", "first": first}"""
V2_COMPATIBLE = """await ctx.sleep(0)
    first = await ctx.wait_signal("go", timeout=60)
    return {"version": "v2", "first": first}"""
V3_DIVERGENT = """first = await ctx.wait_signal("go")  # no timer: the recorded one diverges
    return {"version": "v3", "first": first}"""
BROKEN = """return undefined_name"""


class Both:
    """The package's two records (one per workflow type, as the API writes them)."""

    def __init__(self, flow: PackageRecord) -> None:
        self.flow = flow
        self.version = flow.version
        self.looper = dataclasses.replace(flow, workflow_type="looper")


def _add(versions: Versions, *packages: Both) -> None:
    for package in packages:
        versions.package_added(package.flow)
        versions.package_added(package.looper)


def _record(tmp_path: Path, tag: str, body: str) -> Both:
    root = tmp_path / tag
    root.mkdir()
    (root / "flows.py").write_text(FLOW.format(body=body, tag=tag))
    package = build_package(root / "flows.py")
    return Both(
        PackageRecord(
            workflow_type="flow",
            version=package.version,
            workflow_types=("flow", "looper"),
            top_level=package.top_level,
            archive=package.archive(),
            uploaded_at=AT,
        )
    )


def _route(record: Both, workflow_type: str = "flow") -> RouteRecord:
    return RouteRecord(workflow_type=workflow_type, version=record.version, routed_at=AT)


@pytest.fixture
def versions(tmp_path: Path) -> Versions:
    return Versions(WorkflowRegistry(), package_dir=tmp_path / "packages")


@pytest.fixture
def world(versions: Versions) -> World:
    world = World(WorkflowRegistry())
    world.core = EngineCore(WorkflowRegistry(), writer="test", versions=versions)
    return world


def _started(world: World, workflow_id: str) -> WorkflowStarted:
    started = world.history(workflow_id)[0]
    assert isinstance(started, WorkflowStarted)
    return started


def _move(world: World, workflow_id: str, version: str) -> Any:
    return world.send(
        MoveWorkflow(
            command_id=world.next_id("move"),
            issued_at=world.now,
            workflow_id=workflow_id,
            run_id=_started(world, workflow_id).run_id,
            package_version=version,
        )
    )


def test_runs_start_on_the_route_and_stay_on_their_version(
    world: World, versions: Versions, tmp_path: Path
) -> None:
    v1, v2 = _record(tmp_path, "v1", V1), _record(tmp_path, "v2", V2_COMPATIBLE)
    _add(versions, v1)
    versions.route_set(_route(v1))
    world.start("old", "flow")
    _add(versions, v2)
    versions.route_set(_route(v2))
    world.start("new", "flow")
    world.core._resident.clear()
    world.signal("old", "go", 1)
    world.signal("new", "go", 2)
    assert world.result("old") == {"version": "v1", "first": 1}
    assert world.result("new") == {"version": "v2", "first": 2}
    assert (_started(world, "old").package_version, _started(world, "new").package_version) == (
        v1.version,
        v2.version,
    )
    assert set(versions.loaded()) == {v1.version, v2.version}


def test_a_route_waits_for_its_package_and_a_pin_needs_one(
    world: World, versions: Versions, tmp_path: Path
) -> None:
    v1, v2 = _record(tmp_path, "v1", V1), _record(tmp_path, "v2", V2_COMPATIBLE)
    _add(versions, v1)
    versions.route_set(_route(v1))
    versions.route_set(_route(v2))  # its package has not arrived here yet
    world.start("a", "flow")
    assert _started(world, "a").package_version == v1.version
    _add(versions, v2)
    world.start("b", "flow")
    assert _started(world, "b").package_version == v2.version
    world.start("pinned", "flow", package_version=v1.version)
    assert _started(world, "pinned").package_version == v1.version
    assert _started(world, "pinned").pinned
    refused = world.start("nowhere", "flow", package_version="f" * 64)
    assert refused.refusal is not None
    assert refused.refusal.code is RefusalCode.UNKNOWN_PACKAGE


def test_a_divergent_version_is_refused_and_a_compatible_one_resumes_a_blocked_run(
    world: World, versions: Versions, tmp_path: Path
) -> None:
    v1 = _record(tmp_path, "v1", V1)
    v2, v3 = _record(tmp_path, "v2", V2_COMPATIBLE), _record(tmp_path, "v3", V3_DIVERGENT)
    for record in (v1, v2, v3):
        _add(versions, record)
    versions.route_set(_route(v1))
    world.start("w", "flow")
    refused = _move(world, "w", v3.version)
    assert refused.refusal is not None
    assert refused.refusal.code is RefusalCode.MOVE_REFUSED
    assert "does not replay" in refused.refusal.reason
    _move(world, "w", v2.version)
    assert isinstance(world.history("w")[-1], WorkflowMoved)
    world.signal("w", "go", 7)
    assert world.result("w") == {"version": "v2", "first": 7}


def test_a_missing_package_blocks_the_run_until_it_arrives(
    versions: Versions, tmp_path: Path
) -> None:
    v1 = _record(tmp_path, "v1", V1)
    _add(versions, v1)
    versions.route_set(_route(v1))
    first = World(WorkflowRegistry())
    first.core = EngineCore(WorkflowRegistry(), writer="a", versions=versions)
    first.start("w", "flow")
    # another engine, that has not read the package yet, takes the partition over
    elsewhere = Versions(WorkflowRegistry(), package_dir=tmp_path / "elsewhere")
    second = World(WorkflowRegistry())
    second.core = EngineCore(WorkflowRegistry(), writer="b", versions=elsewhere)
    for batch in first.batches:
        second.core.apply_batch(batch)
    second.histories = {k: list(v) for k, v in first.histories.items()}
    second.signal("w", "go", 3)
    assert [type(e).__name__ for e in second.history("w")[-2:]] == [
        "SignalReceived",
        "WorkflowBlocked",
    ]
    blocked = second.history("w")[-1]
    assert isinstance(blocked, WorkflowBlocked)
    assert "is not available" in blocked.reason
    _add(elsewhere, v1)
    (move,) = second.core.moves("flow", v1.version, now=second.now)
    second.send(move)
    assert second.result("w") == {"version": "v1", "first": 3}, "the recorded signal counted"


def test_a_code_defect_before_the_first_decision_blocks_but_a_raised_error_fails(
    world: World, versions: Versions, tmp_path: Path
) -> None:
    broken, fixed = _record(tmp_path, "broken", BROKEN), _record(tmp_path, "v1", V1)
    _add(versions, broken)
    versions.route_set(_route(broken))
    world.start("w", "flow")
    blocked = world.history("w")[-1]
    assert isinstance(blocked, WorkflowBlocked)
    assert blocked.error.error_type == "NameError"
    assert "flows.py" in blocked.error.traceback
    _add(versions, fixed)
    versions.route_set(_route(fixed))
    (move,) = world.core.moves("flow", fixed.version, now=world.now)
    world.send(move)
    world.signal("w", "go", "now")
    assert world.result("w") == {"version": "v1", "first": "now"}
    raising = _record(tmp_path, "raising", 'raise ValueError("bad input")')
    _add(versions, raising)
    world.start("x", "flow", package_version=raising.version)
    assert world.kinds("x")[-1] == "WorkflowFailed", "an ordinary exception still fails"


def test_continue_as_new_moves_to_the_route(
    world: World, versions: Versions, tmp_path: Path
) -> None:
    v1, v2 = _record(tmp_path, "v1", V1), _record(tmp_path, "v2", V2_COMPATIBLE)
    _add(versions, v1)
    _add(versions, v2)
    versions.route_set(_route(v1, "looper"))
    world.start("l", "looper", 0)
    versions.route_set(_route(v2, "looper"))
    world.signal("l", "next")
    world.signal("l", "next")
    assert world.result("l") == {"version": "v2", "n": 2}
    starts = [e for e in world.history("l") if isinstance(e, WorkflowStarted)]
    assert [s.package_version for s in starts] == [v1.version, v2.version, v2.version]
