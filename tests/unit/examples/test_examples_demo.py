"""The demo cases ``aion dev --demo`` runs: each one, run in memory, ends as it expects."""

from __future__ import annotations

import examples
import pytest
from examples.demo import DemoCase, cases
from examples_world import children, new_world, outcome, run

CASES = cases("unit")


def test_cases_cover_every_example_and_ids_are_unique_per_run_tag() -> None:
    types = {case.workflow_type for case in CASES}
    assert types == {
        "examples.order",
        "examples.fanout",
        "examples.poller",
        "examples.approval",
        "examples.cancellation",
    }
    assert {case.kind for c in CASES for case in c.steps} == {"signal", "cancel"}
    statuses = {c.expect_status for c in CASES}
    assert {"completed", "failed", "cancelled"} <= statuses
    ids = [c.workflow_id for c in CASES]
    assert len(set(ids)) == len(ids)
    assert not set(ids) & {c.workflow_id for c in cases("other")}
    assert all(m in examples.__all__ for m in ("order", "fanout", "poller", "approval"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_demo_case_ends_as_expected(case: DemoCase) -> None:
    world = new_world()
    run(world, case.workflow_id, case.workflow_type, case.input, case.steps)

    status, value = outcome(world, case.workflow_id)
    assert status == case.expect_status
    assert case.check(value) is None
    assert len(children(world, case.workflow_id)) == case.expect_children


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_demo_check_rejects_a_wrong_outcome(case: DemoCase) -> None:
    assert case.check({"unexpected": True}) is not None
    assert case.check("some other error") is not None


def test_demo_workflow_time_stays_short() -> None:
    spans = []
    for case in CASES:
        world = new_world()
        start = world.now
        run(world, case.workflow_id, case.workflow_type, case.input, case.steps)
        spans.append((world.now - start).total_seconds())
    assert sum(spans) < 30, spans
