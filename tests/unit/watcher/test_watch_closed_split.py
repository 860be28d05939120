"""Closed workflows in a changelog of their own (decision 57): a closed workflow's record goes
to ``watcher-closed`` and its open record is tombstoned only while it is still closed; while a
partition's closed workflows load, the batches that need one wait."""

from __future__ import annotations

from pathlib import Path

from test_watch_changelog import Logged
from test_watch_state import Flow

from aion_watcher import ParentStatus
from aion_watcher.changelog import WORKFLOW


def _workflow_changes(log: Logged) -> list[tuple[bool, bool]]:
    """(goes to watcher-closed, is a tombstone) of the workflow records taken."""
    return [
        (c.closed_log, c.value is None)
        for _, c in log.state.take_changes()
        if c.key[:1] == WORKFLOW
    ]


def test_a_close_goes_to_the_closed_log_and_its_open_record_is_tombstoned_after(
    tmp_path: Path,
) -> None:
    log = Logged(tmp_path / "w.sqlite")
    flow = Flow()
    log.state.apply(flow.start(), partition=0, now=0)
    assert _workflow_changes(log) == [(False, False)]
    log.state.apply(flow.complete(), partition=0, now=0)
    assert _workflow_changes(log) == [(True, False)]  # the closed record, to watcher-closed
    ((_, workflow_id, token),) = log.state.take_deferred()
    assert workflow_id == flow.workflow_id
    assert log.state.still_closed(workflow_id, token)  # its open record is tombstoned now
    assert not log.state.still_closed(workflow_id, token)  # once


def test_a_workflow_started_again_keeps_its_open_record(tmp_path: Path) -> None:
    """The tombstone of a close is sent once the closed record is acknowledged; if the id was
    started again meanwhile (its open record sent after), it is not sent; if it closed again,
    only the newest close's is."""
    log = Logged(tmp_path / "w.sqlite")
    flow = Flow()
    log.state.apply(flow.start(), partition=0, now=0)
    log.state.apply(flow.complete(), partition=0, now=0)
    ((_, _, first),) = log.state.take_deferred()
    log.state.apply(flow.start(), partition=0, now=1)  # reused: continues the seqs
    assert not log.state.still_closed(flow.workflow_id, first)
    log.state.apply(flow.complete(), partition=0, now=1)
    ((_, _, second),) = log.state.take_deferred()
    log.state.apply(flow.start(), partition=0, now=2)
    log.state.apply(flow.complete(), partition=0, now=2)
    ((_, _, third),) = log.state.take_deferred()
    assert not log.state.still_closed(flow.workflow_id, second)
    assert log.state.still_closed(flow.workflow_id, third)


def test_a_continue_as_new_writes_one_open_record(tmp_path: Path) -> None:
    log = Logged(tmp_path / "w.sqlite")
    flow = Flow()
    log.state.apply(flow.start(), partition=0, now=0)
    log.state.take_changes()
    log.state.apply(flow.continue_as_new(), partition=0, now=0)
    assert _workflow_changes(log) == [(False, False)]  # the chain goes on: open
    assert log.state.take_deferred() == []


def test_a_purge_tombstones_both_records(tmp_path: Path) -> None:

    log = Logged(tmp_path / "w.sqlite")
    flow = Flow()
    log.state.apply(flow.start(), partition=0, now=0)
    log.state.apply(flow.complete(), partition=0, now=0)
    log.flush()
    log.state.apply(flow.purge(), partition=0, now=1)
    assert sorted(_workflow_changes(log)) == [(False, True), (True, True)]


def test_while_the_closed_load_runs_what_needs_a_closed_workflow_waits(tmp_path: Path) -> None:
    log = Logged(tmp_path / "w.sqlite")
    closed_parent, open_parent, orphan = Flow(), Flow(), Flow()
    log.state.apply(closed_parent.start(), partition=0, now=0)
    log.state.apply(open_parent.start(), partition=0, now=0)
    log.state.apply(orphan.start(closed_parent.link()), partition=0, now=0)  # abandoned child
    log.state.apply(closed_parent.complete(), partition=0, now=0)
    done = Flow()
    log.state.apply(done.start(), partition=0, now=0)
    log.state.apply(done.complete(), partition=0, now=0)
    log.flush()

    state = log.restored()  # open work: the open parent and the orphan
    reads: list[str] = []
    loader = state._load_closed
    assert loader is not None

    def counted(workflow_id: str) -> object:
        reads.append(workflow_id)
        return loader(workflow_id)

    state._load_closed = counted  # type: ignore[assignment]  # a test spy
    state.loading(0)
    child, fresh = Flow(), Flow()
    assert state.waits_for(child.start(open_parent.link())) is None  # a new id, an open parent
    assert state.waits_for(fresh.start()) is None
    assert state.waits_for(done.start()) == done.workflow_id  # a closed id started again
    ending = orphan.complete()
    assert state.waits_for(ending) == closed_parent.workflow_id  # its parent's status
    assert state.parent_status(closed_parent.workflow_id, closed_parent.run_id) is (
        ParentStatus.UNKNOWN
    )
    assert reads == []  # the store is not read while it loads

    state.loading(0, active=False)
    assert state.waits_for(ending) is None
    applied = state.apply(ending, partition=0, now=1)
    assert applied.suppressed == 1  # the parent is known closed: nothing to record
    assert state.apply(done.start(), partition=0, now=1).duplicate is False
    assert state.current_run(done.workflow_id) == done.run_id
    assert closed_parent.workflow_id in reads


def test_dropping_a_partition_ends_its_load_and_its_pending_tombstones(tmp_path: Path) -> None:
    log = Logged(tmp_path / "w.sqlite")
    flow = Flow()
    log.state.apply(flow.start(), partition=0, now=0)
    log.state.apply(flow.complete(), partition=0, now=0)
    log.state.loading(0)
    log.state.drop_partition(0)
    assert log.state.loading_partitions == frozenset()
    assert log.state.take_deferred() == []


async def test_what_is_written_to_a_loading_closed_store_waits_for_the_load(
    tmp_path: Path,
) -> None:
    """Written before the load read its topic, a record would move the store's checkpoint past
    what the load must read: it is applied after, never moving the checkpoint back."""
    from aion_common.codecs import Codec
    from aion_common.kafka.changelog import Change
    from aion_common.settings import Settings
    from aion_watcher.stores import Logged, WatcherStores

    stores = WatcherStores(Settings(state_dir=str(tmp_path), partitions=1), Codec())
    try:
        stores.begin_closed_load(0)
        stores.apply(Logged([(0, Change(b"wx", b"{}", closed_log=True), 7)]))
        closed = stores.closed_store(0)
        assert closed.get(b"wx") is None
        assert stores.load_closed("x") is None  # not read while it loads
        closed.write([], 20)  # the load read to offset 20
        assert stores.closed_loaded(0) == 1
        assert closed.get(b"wx") == (b"{}", 7)
        assert closed.checkpoint == 20
    finally:
        await stores.stop()
