"""The watcher's changelog: what the fold records restores a fold that behaves the same, from
open work only; closed workflows leave memory and are read back on demand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_watch_state import Flow

from aion_common.codecs import Codec
from aion_common.kafka.changelog import Change, ChangelogStore
from aion_watcher import ParentStatus, WatchState
from aion_watcher.changelog import (
    ChangelogUnreadable,
    WorkflowFacts,
    decode_workflow,
    workflow_key,
)
from aion_watcher.state import _Workflow


class Logged:
    """A fold whose changes go to local stores as the service writes them: open work to the
    store of ``watcher-state``, closed workflows to that of ``watcher-closed``, and a closed
    workflow's open record tombstoned after (if it is still closed then)."""

    def __init__(self, path: Path) -> None:
        self.store = ChangelogStore(path)
        self.closed = ChangelogStore(path.with_name(f"{path.stem}-closed.sqlite"))
        self.offset = 0
        self.state = self.fresh()

    def fresh(self) -> WatchState:
        state = WatchState(blind_limit=2, codec=Codec(), closed=self.load)
        state.own(0)
        return state

    def load(self, workflow_id: str) -> tuple[int, object] | None:
        found = self.closed.get(workflow_key(workflow_id))
        return None if found is None else (0, decode_workflow(workflow_id, found[0]))

    def flush(self) -> None:
        changes = [c for _, c in self.state.take_changes()]
        changes += [
            Change(workflow_key(w), None)
            for _, w, token in self.state.take_deferred()
            if self.state.still_closed(w, token)
        ]
        written = []
        for change in changes:
            written.append((change, self.offset))
            self.offset += 1
        for store, closed in ((self.store, False), (self.closed, True)):
            store.write([(c, o) for c, o in written if c.closed_log is closed], self.offset)
        self.state.release_closed(
            c.key[1:].decode() for c, _ in written if c.key[:1] == b"w" and not c.open
        )

    def restored(self) -> WatchState:
        state = self.fresh()
        state.restore(0, self.store.scan_open(), now=100.0)
        return state


def test_a_restore_holds_the_watches_and_parents_of_open_work(tmp_path: Path) -> None:
    log = Logged(tmp_path / "w.sqlite")
    parent, done_parent = Flow(), Flow()
    waiting, finished, recorded = Flow(), Flow(), Flow()
    for batch in (parent.start(), done_parent.start()):
        log.state.apply(batch, partition=0, now=0)
    for child in (waiting, finished, recorded):
        log.state.apply(child.start(parent.link()), partition=0, now=0)
    (record,) = log.state.apply(finished.complete(), partition=0, now=1).records
    log.state.apply(recorded.complete(), partition=0, now=1)
    log.state.apply(parent.record_child(recorded.workflow_id), partition=0, now=2)
    log.state.apply(done_parent.complete(), partition=0, now=2)
    log.flush()

    again = log.restored()
    assert again.watches() == log.state.watches()
    assert again.pending() == (record,)  # the finished child's record, due for the sweep
    assert again.parent_status(parent.workflow_id, parent.run_id) is ParentStatus.OPEN
    # closed: read back from the store, not restored into memory
    assert again.parent_status(done_parent.workflow_id, done_parent.run_id) is (ParentStatus.CLOSED)
    # the recorded child is known recorded: its terminal again issues nothing
    assert again.apply(recorded.complete(), partition=0, now=3).records == ()
    # a restored watch still issues when its child ends
    (late,) = again.apply(waiting.complete(), partition=0, now=4).records
    assert late.child_workflow_id == waiting.workflow_id
    # the sweep re-issues the restored record a grace period after the restore, not before
    assert [i.command for i in again.sweep(now=100.0 + 4, grace=5.0)] == [late]
    assert [i.command for i in again.sweep(now=100.0 + 5, grace=5.0)] == [record]


def test_closed_workflows_leave_memory_once_stored(tmp_path: Path) -> None:
    log = Logged(tmp_path / "w.sqlite")
    flows = [Flow() for _ in range(20)]
    for flow in flows:
        log.state.apply(flow.start(), partition=0, now=0)
        log.state.apply(flow.complete(), partition=0, now=0)
    log.flush()
    assert log.state._workflows == {}  # every one closed and stored
    assert log.store.counts() == (0, 0)  # open work only: the open records were tombstoned
    assert log.closed.counts() == (0, 20)
    restored = log.restored()
    assert restored._workflows == {}
    assert restored.current_run(flows[3].workflow_id) == flows[3].run_id  # read back


def test_a_closed_parents_recorded_children_are_tombstoned(tmp_path: Path) -> None:
    log = Logged(tmp_path / "w.sqlite")
    parent, child = Flow(), Flow()
    log.state.apply(parent.start(), partition=0, now=0)
    log.state.apply(child.start(parent.link()), partition=0, now=0)
    log.state.apply(child.complete(), partition=0, now=0)
    log.state.apply(parent.record_child(child.workflow_id), partition=0, now=0)
    log.flush()
    assert log.store.counts()[0] == 2  # the open parent and its recorded child
    log.state.apply(parent.complete(), partition=0, now=0)
    log.flush()
    assert log.store.counts() == (0, 0)  # nothing open
    assert log.closed.counts() == (0, 2)  # two closed workflows


def test_an_unreadable_record_names_its_offset(tmp_path: Path) -> None:
    log = Logged(tmp_path / "w.sqlite")
    log.store.write([(Change(b"wbad", b"{not json", open=True), 7)], 8)
    with pytest.raises(ChangelogUnreadable, match="offset 7"):
        log.restored()


@pytest.mark.parametrize("stored_between", [True, False])
def test_a_purged_id_started_again_is_a_new_history(tmp_path: Path, stored_between: bool) -> None:

    log = Logged(tmp_path / "w.sqlite")
    parent, child = Flow(workflow_id="p"), Flow(workflow_id="p-child")
    log.state.apply(parent.start(), partition=0, now=0)
    log.state.apply(child.start(parent.link()), partition=0, now=0)
    log.state.apply(child.complete(), partition=0, now=0)
    log.state.apply(parent.record_child(child.workflow_id), partition=0, now=0)
    log.state.apply(parent.complete(), partition=0, now=0)
    log.flush()  # both closed, in the store, out of memory
    for flow in (child, parent):
        log.state.apply(flow.purge(), partition=0, now=1)
    if stored_between:
        log.flush()
    again, again_child = Flow(workflow_id="p"), Flow(workflow_id="p-child")
    assert not log.state.apply(again.start(), partition=0, now=2).duplicate
    assert not log.state.apply(again_child.start(again.link()), partition=0, now=2).duplicate
    (record,) = log.state.apply(again_child.complete(), partition=0, now=2).records
    assert record.parent_run_id == again.run_id


def test_every_fact_the_fold_keeps_of_a_workflow_is_in_its_changelog_record() -> None:
    """A field added to the fold's per-workflow facts must be written to (and restored from)
    the workflow record, or a restore would lose it: add it to ``WorkflowFacts`` too."""
    kept = {f.name for f in dataclasses.fields(_Workflow)} - {"partition"}  # from the key
    written = {f.name for f in dataclasses.fields(WorkflowFacts)} - {"workflow_id"}
    assert kept == written


def test_a_restore_keeps_the_runs_a_chain_continued_from(tmp_path: Path) -> None:
    """A child carried over a parent's continue-as-new (issue 17) is watched under the run
    that started it: after a restore that run is still open (its chain goes on), and the
    chain's end closes it."""
    log = Logged(tmp_path / "w.sqlite")
    parent, child = Flow(), Flow()
    log.state.apply(parent.start(), partition=0, now=0)
    log.state.apply(child.start(parent.link()), partition=0, now=0)
    origin = parent.run_id
    log.state.apply(parent.continue_as_new({child.workflow_id: origin}), partition=0, now=0)
    log.flush()

    again = log.restored()
    assert again.parent_status(parent.workflow_id, origin) is ParentStatus.OPEN
    assert again.watches() == log.state.watches()
    (record,) = again.apply(child.complete(), partition=0, now=1).records
    assert record.parent_run_id == origin
    again.apply(parent.complete(), partition=0, now=2)  # the chain ends
    assert again.parent_status(parent.workflow_id, origin) is ParentStatus.CLOSED
    assert again.watch_count() == 0


def test_a_batch_reads_the_closed_store_once_at_most(tmp_path: Path) -> None:
    # The hot path of a fan-out: every child's first batch is of a workflow found nowhere, and
    # a closed one's next start is read back; neither looks it up again per event.
    log = Logged(tmp_path / "w.sqlite")
    looked: list[str] = []
    read = log.load

    def load(workflow_id: str) -> tuple[int, object] | None:
        looked.append(workflow_id)
        return read(workflow_id)

    log.load = load  # type: ignore[method-assign]
    log.state = log.fresh()
    parent, child = Flow(), Flow()
    log.state.apply(parent.start(), partition=0, now=0)
    log.state.apply(child.start(parent.link()), partition=0, now=0)
    assert looked == [parent.workflow_id, child.workflow_id]
    log.state.apply(child.complete(), partition=0, now=0)
    log.flush()
    again = log.restored()  # the closed child is in the closed store only
    looked.clear()
    assert again.apply(child.start(), partition=0, now=1).records == ()  # started again
    assert looked == [child.workflow_id]
    assert again.current_run(child.workflow_id) == child.run_id
