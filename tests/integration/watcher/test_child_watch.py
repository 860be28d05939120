"""Counterparts of every test in the reference ``aion_child_watch.rs``, on a real broker.

Each test has the reference test's name. The test plays the engine (``harness.Rig``): it
appends event batches to ``aion.events``, reads the ``RecordChildTerminal`` commands the watcher
produces, and applies them with the domain's ``decide_child_terminal_record`` — the rule the
engine itself runs — appending the recorded event so the watcher sees the parent record it.

Where the reference test exercises machinery this design does not have, its docstring says so
and the test checks the nearest real risk here:

- *arming* is the fold holding one watch per (parent run, child) however often the child's
  start is seen; *cleanup* is a parent run closing, which drops its own watches only;
- *record guarding, duplicate suppression and the cancelled/timed-out prefixes* are the engine's
  (the domain decision, unit-tested in ``tests/unit/test_history.py``); the watcher's part is to
  pass the raw outcome through with a deterministic id, never to issue for a closed parent, and
  to make every re-issue the same command — checked here end to end;
- the *registry* and *wake marker* are the engine's; their nearest risks here are a child whose
  parent is not visible yet, and a record that became durable but whose ack was lost.
"""

from __future__ import annotations

import asyncio

from aion_common.domain import (
    Cancelled,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Completed,
    ContinuedAsNew,
    Payload,
    TimedOut,
    record_child_terminal_id,
)
from aion_common.settings import Settings
from aion_watcher import CommandSender

from .harness import FAST, AckLost, Dropping, Flaky, Rig


async def test_arming_is_idempotent_per_parent_and_child(aion_settings: Settings) -> None:
    """One watch per (parent run, child), however many times the child's start is folded."""
    async with Rig(aion_settings) as rig, rig.watcher() as watcher:
        parent, child, other, open_child = rig.flow(), rig.flow(), rig.flow(), rig.flow()
        await rig.publish(parent.start())
        started = child.start(parent)
        await rig.publish(started, started, child.continue_as_new())
        await rig.wait_until(lambda: watcher.state.current_run(child.workflow_id) == child.run_id)
        assert watcher.state.watch_count() == 1
        await rig.publish(other.start(parent))
        await rig.wait_until(lambda: watcher.state.watch_count() == 2)
        await rig.publish(child.complete(), other.complete())
        await rig.wait_until(lambda: len(parent.child_terminals()) == 2)
        await rig.wait_until(lambda: watcher.state.watch_count() == 0)
        assert len(rig.commands_for(child)) == 1
        await rig.publish(open_child.start(parent))
        await rig.wait_until(lambda: watcher.state.watch_count() == 1)
    # Stopping releases every watch with the partitions (the reference's tasks.shutdown()).
    assert watcher.state.watch_count() == 0


async def test_cleanup_aborts_only_the_exited_parents_watchers(aion_settings: Settings) -> None:
    """A parent run that closes drops its own watches, and its children are then not recorded."""
    async with Rig(aion_settings) as rig, rig.watcher() as watcher:
        parent_a, parent_b, child_a, child_b = rig.flow(), rig.flow(), rig.flow(), rig.flow()
        await rig.publish(parent_a.start(), parent_b.start())
        await rig.publish(child_a.start(parent_a), child_b.start(parent_b))
        await rig.wait_until(lambda: watcher.state.watch_count() == 2)
        await rig.publish(parent_a.complete())
        await rig.wait_until(lambda: watcher.state.watch_count() == 1)
        (remaining,) = watcher.state.watches()
        assert remaining.parent_workflow_id == parent_b.workflow_id
        await rig.publish(child_a.complete(), child_b.complete())
        await rig.wait_until(lambda: len(parent_b.child_terminals()) == 1)
        await rig.wait_until(
            lambda: watcher.metrics.value("aion_watcher_records_suppressed_total") == 1
        )
        assert rig.commands_for(child_a) == []


async def test_record_is_terminal_guarded_and_duplicate_suppressed(
    aion_settings: Settings,
) -> None:
    """Re-delivered terminals and sweeps never record a child twice; a closed parent gets none.

    The guard itself is the engine's (domain decision, unit-tested); this checks the watcher
    side: a duplicate terminal batch issues nothing, a recorded child leaves the sweep, and
    every command it does send for a child carries the one deterministic id.
    """
    async with Rig(aion_settings) as rig, rig.watcher() as watcher:
        parent, child, late = rig.flow(), rig.flow(), rig.flow()
        await rig.publish(parent.start(), child.start(parent), late.start(parent))
        terminal = child.complete("child-result")
        await rig.publish(terminal)
        await rig.wait_until(lambda: len(parent.child_terminals(child)) == 1)
        await rig.publish(terminal)  # re-delivered by a zombie writer: same seqs
        await rig.wait_until(
            lambda: watcher.metrics.value("aion_watcher_duplicate_batches_total") == 1
        )
        await asyncio.sleep(FAST.grace_period * 2)  # sweeps run; the child is recorded
        assert {c.command_id for c in rig.commands_for(child)} == {
            record_child_terminal_id(parent.workflow_id, parent.run_id, child.workflow_id)
        }
        assert len(rig.commands_for(child)) == 1
        await rig.publish(parent.complete("done"))
        await rig.publish(late.complete())  # parent already terminal
        await rig.wait_until(
            lambda: watcher.metrics.value("aion_watcher_records_suppressed_total") == 1
        )
        assert rig.commands_for(late) == []
        assert len(parent.child_terminals()) == 1


async def test_cancelled_and_timed_out_map_to_failed_with_prefixes(
    aion_settings: Settings,
) -> None:
    """The watcher passes Cancelled/TimedOut through raw; the engine's rule adds the prefixes."""
    async with Rig(aion_settings) as rig, rig.watcher():
        parent, cancelled, timed_out = rig.flow(), rig.flow(), rig.flow()
        await rig.publish(parent.start(), cancelled.start(parent), timed_out.start(parent))
        await rig.publish(cancelled.cancel("operator"))
        await rig.wait_until(lambda: len(parent.child_terminals()) == 1)
        await rig.publish(timed_out.time_out("30s"))
        await rig.wait_until(lambda: len(parent.child_terminals()) == 2)
        assert rig.commands_for(cancelled)[0].outcome == Cancelled(reason="operator")
        assert rig.commands_for(timed_out)[0].outcome == TimedOut(timeout="30s")
        messages = [
            e.error.message for e in parent.child_terminals() if isinstance(e, ChildWorkflowFailed)
        ]
        assert messages == ["cancelled:operator", "timed_out:30s"]


async def test_continue_as_new_outcome_is_refused_as_a_recordable_terminal(
    aion_settings: Settings,
) -> None:
    """A ContinuedAsNew is never issued: the parent's history is untouched, no command exists."""
    async with Rig(aion_settings) as rig, rig.watcher() as watcher:
        parent, child = rig.flow(), rig.flow()
        await rig.publish(parent.start(), child.start(parent), child.continue_as_new())
        before = list(parent.history)
        await rig.wait_until(lambda: watcher.state.current_run(child.workflow_id) == child.run_id)
        await asyncio.sleep(FAST.grace_period * 2)  # sweeps run too
        assert rig.commands == []
        assert not any(isinstance(c.outcome, ContinuedAsNew) for c in rig.commands)
        assert parent.history == before
        assert watcher.metrics.value("aion_watcher_child_terminals_total") == 0


async def test_watcher_follows_continue_as_new_chain_to_final_terminal(
    aion_settings: Settings,
) -> None:
    """Three continue-as-new hops, then Completed: one record, naming the final run's result."""
    async with Rig(aion_settings) as rig, rig.watcher() as watcher:
        parent, child = rig.flow(), rig.flow()
        await rig.publish(parent.start(), child.start(parent))
        for _ in range(3):
            await rig.publish(child.continue_as_new())
        await asyncio.sleep(0.3)
        assert parent.child_terminals() == [], "continue-as-new must not satisfy the await"
        await rig.publish(child.complete("final-result"))
        await rig.wait_until(lambda: len(parent.child_terminals()) == 1)
        (recorded,) = parent.child_terminals()
        assert isinstance(recorded, ChildWorkflowCompleted)
        assert recorded.result == Payload.from_json("final-result")
        (command,) = rig.commands_for(child)
        assert command.child_run_id == child.run_id
        await rig.wait_until(lambda: watcher.state.watch_count() == 0)


async def test_missed_doorbell_degrades_to_store_polling_not_a_permanent_park(
    aion_settings: Settings,
) -> None:
    """The record is lost on the wire (reported sent); the sweep re-issues it after grace."""

    def lose_first(real: CommandSender) -> CommandSender:
        return Dropping(real, drops=1)

    async with Rig(aion_settings) as rig, rig.watcher(wrap=lose_first) as watcher:
        parent, child = rig.flow(), rig.flow()
        await rig.publish(parent.start(), child.start(parent), child.complete("muted-doorbell"))
        await rig.wait_until(lambda: len(parent.child_terminals(child)) == 1)
        hits = watcher.metrics.value("aion_watcher_reconciliation_hits_total", parent_status="open")
        assert hits >= 1
        await rig.wait_until(lambda: watcher.state.watch_count() == 0)
        await asyncio.sleep(FAST.grace_period * 2)
        assert len(parent.child_terminals(child)) == 1
        assert len(rig.commands_for(child)) == 1


async def test_registry_miss_backs_off_until_the_child_appears(aion_settings: Settings) -> None:
    """The child's terminal is folded before its parent exists anywhere; the sweep retries it.

    The engine refuses the first record (no such parent yet); once the parent's start is on
    ``aion.events`` the sweep's re-issue lands.
    """
    async with Rig(aion_settings) as rig, rig.watcher() as watcher:
        parent, child = rig.flow(), rig.flow()
        parent_start = parent.start()  # built (so the child can name it) but not published
        await rig.publish(child.start(parent), child.complete("late-result"))
        await rig.wait_until(lambda: len(rig.decisions) == 1)
        assert parent.child_terminals() == []
        await rig.publish(parent_start)
        await rig.wait_until(lambda: len(parent.child_terminals(child)) == 1, timeout=20)
        assert (
            watcher.metrics.value("aion_watcher_reconciliation_hits_total", parent_status="open")
            + watcher.metrics.value(
                "aion_watcher_reconciliation_hits_total", parent_status="unknown"
            )
            >= 1
        )


async def test_marker_failure_after_durable_record_is_non_fatal(aion_settings: Settings) -> None:
    """A durable record whose ack was lost is re-sent; it lands once and work goes on."""

    def lose_ack(real: CommandSender) -> CommandSender:
        return AckLost(real, times=1)

    async with Rig(aion_settings) as rig, rig.watcher(wrap=lose_ack) as watcher:
        parent, child, next_child = rig.flow(), rig.flow(), rig.flow()
        await rig.publish(parent.start(), child.start(parent), child.complete("result"))
        await rig.wait_until(lambda: len(rig.commands_for(child)) == 2)
        assert len({c.command_id for c in rig.commands_for(child)}) == 1
        await rig.publish(next_child.start(parent), next_child.complete())
        await rig.wait_until(lambda: len(parent.child_terminals()) == 2)
        assert len(parent.child_terminals(child)) == 1
        assert watcher.metrics.value("aion_watcher_send_retries_total") == 1


async def test_latest_run_id_reads_the_newest_started_run(aion_settings: Settings) -> None:
    """The fold's current run of a workflow is its newest started run; unknown ids have none."""
    async with Rig(aion_settings) as rig, rig.watcher() as watcher:
        child = rig.flow()
        await rig.publish(child.start())
        first = child.run_id
        await rig.publish(child.continue_as_new())
        second = child.run_id
        await rig.wait_until(lambda: watcher.state.current_run(child.workflow_id) == second)
        assert second != first
        assert watcher.state.current_run("never-seen") is None


async def test_transient_record_failure_is_retried_until_the_terminal_lands(
    aion_settings: Settings,
) -> None:
    """Three failed produces, backed off and retried; nothing is committed until the ack."""
    flaky: list[Flaky] = []

    def fail_three(real: CommandSender) -> CommandSender:
        flaky.append(Flaky(real, failures=3))
        return flaky[0]

    async with Rig(aion_settings) as rig, rig.watcher(wrap=fail_three) as watcher:
        parent, child = rig.flow(), rig.flow()
        await rig.publish(parent.start(), child.start(parent), child.complete("flaky-result"))
        await rig.wait_until(lambda: len(parent.child_terminals(child)) == 1)
        assert flaky[0].attempts == 4
        assert watcher.metrics.value("aion_watcher_send_retries_total") == 3
        assert len(rig.commands_for(child)) == 1, "the retried record must land exactly once"
        assert isinstance(rig.commands_for(child)[0].outcome, Completed)


async def test_current_run_handle_selects_the_latest_run_not_an_arbitrary_one(
    aion_settings: Settings,
) -> None:
    """A reused child id: each record goes to the parent of the run that ended, naming it."""
    async with Rig(aion_settings) as rig, rig.watcher():
        old_parent, new_parent, child = rig.flow(), rig.flow(), rig.flow()
        await rig.publish(old_parent.start(), new_parent.start())
        await rig.publish(child.start(old_parent), child.complete("old"))
        old_run = child.run_id
        await rig.wait_until(lambda: len(old_parent.child_terminals(child)) == 1)
        await rig.publish(child.start(new_parent), child.complete("new"))
        await rig.wait_until(lambda: len(new_parent.child_terminals(child)) == 1)
        by_parent = {c.workflow_id: c.child_run_id for c in rig.commands_for(child)}
        assert by_parent == {old_parent.workflow_id: old_run, new_parent.workflow_id: child.run_id}
        assert old_run != child.run_id
