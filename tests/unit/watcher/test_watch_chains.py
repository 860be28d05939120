"""A workflow that continues-as-new forever keeps bounded facts in the watcher's fold: the
latest runs in order, and of the runs it continued from only those still holding a carried
child; a run let go answers as the engine would."""

from __future__ import annotations

from pathlib import Path

from test_watch_changelog import Logged
from test_watch_state import GRACE, Flow, new_state

from aion_common.codecs import Codec
from aion_watcher import ParentStatus, WatchState
from aion_watcher.changelog import RUNS_KEPT, decode_workflow, workflow_key

CHAIN = 10_000


def test_an_endless_continue_as_new_chain_keeps_bounded_facts() -> None:
    """A polling loop: every tenth run starts a child, most end within the run, every
    hundredth is carried over three continue-as-news before its parent records it."""
    state = WatchState(blind_limit=2, codec=Codec())
    state.own(0)
    parent = Flow()
    state.apply(parent.start(), partition=0, now=0)
    slow: list[tuple[Flow, str, int]] = []  # (child, run that scheduled it, ends at run)
    started = [parent.run_id]
    for n in range(CHAIN):
        if n % 10 == 0:
            child = Flow()
            state.apply(child.start(parent.link()), partition=0, now=n)
            if n % 100 == 0:
                slow.append((child, parent.run_id, n + 3))
            else:
                state.apply(child.complete(), partition=0, now=n)
                state.apply(parent.record_child(child.workflow_id), partition=0, now=n)
        for child in [c for c, _, ends in slow if ends == n]:
            state.apply(child.complete(), partition=0, now=n)
            state.apply(parent.record_child(child.workflow_id), partition=0, now=n)
        slow = [s for s in slow if s[2] > n]
        carry = {child.workflow_id: origin for child, origin, _ in slow}
        state.apply(parent.continue_as_new(carry), partition=0, now=n)
        started.append(parent.run_id)
        facts = state._workflows[parent.workflow_id]
        assert len(facts.runs) <= RUNS_KEPT
        assert facts.continued == {origin for _, origin, _ in slow}
        held = [k for k in state._parent_runs if k[0] == parent.workflow_id]
        assert len(held) <= 2  # the current run and a carrying one
        assert state.watch_count() <= 1
        state.take_changes()  # the service writes them out
    facts = state._workflows[parent.workflow_id]
    assert tuple(facts.runs) == tuple(started[-RUNS_KEPT:])  # the latest, oldest first
    # its changelog records: the workflow's and at most a watch and a recorded child
    mine = [c for c in state.dump(0) if c.key[1:].split(b"\x00")[0] == parent.workflow_id.encode()]
    assert len(mine) <= 3
    assert state.sweep(now=CHAIN + 100, grace=GRACE) == []


def test_the_changelog_keeps_the_latest_runs_in_order(tmp_path: Path) -> None:
    log = Logged(tmp_path / "w.sqlite")
    parent = Flow()
    log.state.apply(parent.start(), partition=0, now=0)
    started = [parent.run_id]
    for _ in range(3 * RUNS_KEPT):
        log.state.apply(parent.continue_as_new(), partition=0, now=0)
        started.append(parent.run_id)
    log.flush()
    found = log.store.get(workflow_key(parent.workflow_id))
    assert found is not None
    assert decode_workflow(parent.workflow_id, found[0]).runs == tuple(started[-RUNS_KEPT:])

    again = log.restored()
    for fold in (log.state, again):  # a restored fold answers as the running one
        assert fold.parent_status(parent.workflow_id, started[-1]) is ParentStatus.OPEN
        assert fold.parent_status(parent.workflow_id, started[-RUNS_KEPT]) is ParentStatus.CLOSED
        # an older run is not told from one not started yet: its late records go blind
        assert fold.parent_status(parent.workflow_id, started[0]) is ParentStatus.UNKNOWN


def test_a_continued_run_keeps_its_watch_while_its_child_is_carried() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    origin = parent.run_id
    for _ in range(1_000):  # the engine carries the open child into every next run
        state.apply(parent.continue_as_new({child.workflow_id: origin}), partition=0, now=0)
        assert state._workflows[parent.workflow_id].continued == {origin}
    assert state.parent_status(parent.workflow_id, origin) is ParentStatus.OPEN
    assert state.watch_count() == 1
    (record,) = state.apply(child.complete(), partition=0, now=1).records
    assert record.parent_run_id == origin  # as the child's start names it
    assert [i.command for i in state.sweep(now=1 + GRACE, grace=GRACE)] == [record]
    state.apply(parent.record_child(child.workflow_id), partition=0, now=2)  # the newest run
    assert state.watch_count() == 0
    state.apply(parent.continue_as_new(), partition=0, now=3)  # carries nothing now
    assert state._workflows[parent.workflow_id].continued == set()
    assert state.parent_status(parent.workflow_id, origin) is ParentStatus.CLOSED
    assert state.sweep(now=100, grace=GRACE) == []


def test_a_child_read_after_its_parent_moved_on_is_still_watched() -> None:
    """The child's partition is read behind its parent's: its start arrives three runs later.
    Its run is still carried by the engine, so the fold keeps it open though it held no watch
    of it, and the record is issued."""
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    origin, link = parent.run_id, parent.link()
    for _ in range(3):
        state.apply(parent.continue_as_new({child.workflow_id: origin}), partition=0, now=0)
    state.apply(child.start(link), partition=0, now=1)
    assert state.watch_count() == 1
    (record,) = state.apply(child.complete(), partition=0, now=1).records
    assert record.parent_run_id == origin


def test_a_late_child_of_a_run_let_go_is_suppressed_as_the_engine_drops_it() -> None:
    """The parent's partition is read ahead: its chain carried the child, recorded it and moved
    on, so its first run was let go. The child's start and terminal, read after, arm nothing and
    issue nothing: the engine would answer the record AlreadyRecorded or ParentTerminal."""
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    origin, link = parent.run_id, parent.link()
    state.apply(parent.continue_as_new({child.workflow_id: origin}), partition=0, now=0)
    state.apply(parent.record_child(child.workflow_id), partition=0, now=0)  # the engine did
    state.apply(parent.continue_as_new(), partition=0, now=0)
    assert state.parent_status(parent.workflow_id, origin) is ParentStatus.CLOSED
    state.apply(child.start(link), partition=0, now=1)
    assert state.watch_count() == 0
    applied = state.apply(child.complete(), partition=0, now=1)
    assert (applied.records, applied.terminals, applied.suppressed) == ((), 1, 1)
    assert state.sweep(now=100, grace=GRACE) == []
