"""Three engine rules closing gaps: a refused child start's run id, the close-policy run guard,
and the bound on remembered command ids."""

from __future__ import annotations

from engine_harness import T0, World, payload
from engine_workflows import make_registry

from aion_common.codecs import Codec
from aion_common.domain import (
    CancelWorkflow,
    RecordChildTerminal,
    RefusalCode,
    SignalWorkflow,
    StartWorkflow,
    TerminateWorkflow,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowStarted,
    derive_id,
    validate_id,
)
from aion_engine import EngineCore
from aion_engine._state import RECENT_COMMAND_IDS
from aion_engine.service import _MAX_BATCH

# -- (a) a refused child start ----------------------------------------------------------------


def test_refused_child_start_reports_the_run_id_the_start_would_have_opened() -> None:
    world = World(make_registry())
    world.start("p", "bad-child")
    start = next(c for c, _ in world.decisions if isinstance(c, StartWorkflow) and c.parent)
    (report,) = (
        c for _, d in world.decisions for c in d.outgoing if isinstance(c, RecordChildTerminal)
    )
    assert report.child_workflow_id == "orphan"
    assert report.child_run_id == derive_id("run", "orphan", start.command_id)
    assert validate_id(report.child_run_id) == report.child_run_id
    assert world.history("orphan") == []  # no run, so no event carries that id
    # The checking codec takes it both ways (the old "" was refused: dead-lettered).
    codec = Codec()
    assert codec.decode_command(codec.encode_command(report)) == report


def test_refused_child_start_report_is_deterministic() -> None:
    reports = []
    for _ in range(2):
        world = World(make_registry())
        world.start("p", "bad-child", command_id="same")
        reports.extend(
            c for _, d in world.decisions for c in d.outgoing if isinstance(c, RecordChildTerminal)
        )
    assert reports[0] == reports[1]


# -- (b) parent-close commands only reach the run their parent started -------------------------


def test_close_policy_skips_a_newer_run_of_the_same_child_id() -> None:
    world = World(
        make_registry(),
        watch=False,
        hold_types=(TerminateWorkflow, CancelWorkflow, RecordChildTerminal),
    )
    world.start("g", "guardian")
    # The parent's child g-terminate ends (an operator) and its id is started again by a user,
    # all before the parent hears of it (neither the engine's record nor the watcher's arrives).
    world.terminate("g-terminate", reason="ops")
    assert world.kinds("g-terminate")[-1] == "WorkflowFailed"
    world.start("g-terminate", "waiter")
    assert world.kinds("g-terminate")[-1] == "WorkflowStarted"

    world.cancel("g", reason="shutdown")
    close_commands = {c.workflow_id: c for c in world.held}
    assert isinstance(close_commands["g-terminate"], TerminateWorkflow)
    world.release_held()

    # The new run is untouched; the command is refused where a client can see it.
    assert world.kinds("g-terminate")[-1] == "WorkflowStarted"
    refusal = next(
        r for r in world.refusals if r.command_id == close_commands["g-terminate"].command_id
    )
    assert refusal.code is RefusalCode.WORKFLOW_CLOSED
    assert "close policy of parent 'g'" in refusal.reason
    # The chain the parent did start still gets its policy.
    assert isinstance(world.history("g-cancel")[-1], WorkflowCancelled)


def test_close_policy_reaches_a_child_that_continued_as_new() -> None:
    world = World(make_registry())
    world.start("p", "runs-counter")
    world.fire_all("counter-child")  # run 1 sleeps, then continues-as-new into run 2
    runs = [e.run_id for e in world.history("counter-child") if isinstance(e, WorkflowStarted)]
    assert len(runs) == 2
    world.cancel("p")
    last = world.history("counter-child")[-1]
    assert isinstance(last, WorkflowFailed)
    assert last.run_id == runs[-1]
    assert last.error.message.startswith("terminated:parent-close:TERMINATE:")


def test_an_operator_reason_that_looks_like_a_close_policy_is_an_ordinary_terminate() -> None:
    world = World(make_registry())
    world.start("w", "waiter")
    world.terminate("w", reason="parent-close:TERMINATE:some-run:someone")
    last = world.history("w")[-1]
    assert isinstance(last, WorkflowFailed)
    assert last.error.message == "terminated:parent-close:TERMINATE:some-run:someone"


# -- (c) remembered command ids are bounded -----------------------------------------------------


def _signal(command_id: str, value: object) -> SignalWorkflow:
    return SignalWorkflow(
        command_id=command_id, issued_at=T0, workflow_id="w", name="go", payload=payload(value)
    )


def test_remembered_ids_are_bounded_and_the_guarantee_holds() -> None:
    runs = RECENT_COMMAND_IDS  # each run: a start and a signal, then it completes
    world = World(make_registry())
    for i in range(runs):
        world.start("w", "waiter", command_id=f"start-{i}")
        world.send(_signal(f"go-{i}", i))
    world.start("w", "waiter", command_id="start-last")  # open, waiting for "go"
    remembered = world.core.remembered_command_ids("w")
    # every chain start, the open run's start, and the window of earlier ids: not 2 per run
    assert remembered == runs + 1 + 1 + RECENT_COMMAND_IDS
    assert remembered < 2 * runs + 1 + runs

    # Within the guarantee: a re-sent start of any run, or a recent signal, is a no-op.
    for command in (
        StartWorkflow(
            command_id="start-0",
            issued_at=world.now,
            workflow_id="w",
            workflow_type="waiter",
            input=payload(None),
        ),
        _signal(f"go-{runs - 1}", "again"),
    ):
        decision = world.send(command)
        assert decision.batch is None
        assert decision.refusal is None
    assert world.kinds("w")[-1] == "WorkflowStarted"

    # Past it: the oldest signal id is forgotten, so a re-delivery reaches the open run.
    decision = world.send(_signal("go-0", "late duplicate"))
    assert decision.batch is not None
    assert world.result("w") == "late duplicate"


def test_the_bound_is_rebuilt_identically_from_the_log() -> None:
    world = World(make_registry())
    for i in range(RECENT_COMMAND_IDS + 10):
        world.start("w", "waiter", command_id=f"start-{i}")
        world.send(_signal(f"go-{i}", i))
    rebuilt = EngineCore(make_registry())
    for batch in world.batches:
        rebuilt.apply_batch(batch)
    assert rebuilt.remembered_command_ids("w") == world.core.remembered_command_ids("w")
    # 2 ids per run retired in order, the window keeps the newest: runs 10+512 onwards
    oldest_kept = (2 * (RECENT_COMMAND_IDS + 10) - RECENT_COMMAND_IDS) // 2
    now = world.now
    forgotten = rebuilt.handle(_signal(f"go-{oldest_kept - 1}", 0), now=now)
    assert forgotten.refusal is not None  # treated as new: refused, the workflow is closed
    kept = rebuilt.handle(_signal(f"go-{oldest_kept}", 0), now=now)
    assert kept.refusal is None  # remembered: a no-op
    assert kept.batch is None


def test_a_service_batch_fits_in_the_window() -> None:
    # An at-least-once re-delivery is at most one batch of the partition: all of it must be
    # recognised even if its commands closed and reopened runs.
    assert _MAX_BATCH <= RECENT_COMMAND_IDS
