"""The engine's changelog: a restore rebuilds exactly the live state, and closed workflows live
in the store (not the heap) with every guard intact."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from engine_harness import World
from engine_workflows import make_registry

from aion_common.codecs import Codec
from aion_common.domain import (
    CommandRefused,
    EventBatch,
    IdReusePolicy,
    RecordChildTerminal,
    RefusalCode,
    StartWorkflow,
    WorkflowCompleted,
    record_child_terminal_id,
)
from aion_common.kafka.changelog import Change, ChangelogStore, Marker
from aion_engine._changelog import (
    FORMAT,
    POSITION_KEY,
    ChangelogCorrupt,
    EngineChangelog,
    position_change,
    read_position,
)
from aion_engine._snapshot import (
    decode_head,
    encode_head,
    head_key,
    observable,
    unknown_fields,
)
from aion_engine._state import WorkflowState


@pytest.fixture
def store(tmp_path: Path) -> ChangelogStore:
    return ChangelogStore(tmp_path / "p0.sqlite")


@pytest.fixture(params=["one store", "split"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, ChangelogStore]:
    """World's stores: every record in one, or engine-closed's in its own (as the service)."""
    found = {"store": ChangelogStore(tmp_path / "p0.sqlite")}
    if request.param == "split":
        found["closed_store"] = ChangelogStore(tmp_path / "p0-closed.sqlite")
    return found


def view(state: WorkflowState | None) -> dict[str, Any] | None:
    return None if state is None else observable(state)


def test_every_workflow_state_field_is_kept_by_the_snapshot() -> None:
    # A new WorkflowState field must be added to aion_engine._snapshot._FIELDS (or _DERIVED).
    assert unknown_fields() == set()


def test_head_round_trips_every_field(store: ChangelogStore) -> None:
    world = World(make_registry())
    # chain starts: a chain, reused after it closed; closed runs: continue-as-new; window
    world.start("w", "counter", 0, command_id="first-chain")
    world.fire_all("w")
    world.fire_all("w")
    world.fire_all("w")
    world.start("w", "waiter", command_id="second-chain")
    world.signal("w", "go", 1)
    state = world.core.state_of("w")
    assert state is not None
    for field in dataclasses.fields(WorkflowState):
        if field.name == "applied":
            continue  # empty once the run closed: rebuilt from an open run's events
        assert getattr(state, field.name), f"the scenario leaves {field.name} empty"
    codec = Codec()
    decoded = decode_head(codec, "w", encode_head(codec, state))
    assert view(decoded) == view(state)
    assert len(state.chain_starts) == 2
    assert len(state.closed_runs) == 4


SCENARIO_WORKFLOWS = ["fanout", "counter", "signals", "guardian", "cleanup", "signal-timeout"]


def _scenario(world: World) -> None:
    specs = [{"mode": m, "i": i} for i, m in enumerate(["complete", "fail", "cancel", "timeout"])]
    world.start("fan", "fanout", specs)
    world.start("count", "counter", 0)
    world.start("sig", "signals")
    world.start("guard", "guardian")
    world.start("clean", "cleanup")
    world.start("st", "signal-timeout")
    world.signal("sig", "x", 1)
    # a running run terminated and a new one started in its place, in one batch
    world.start("st", "signal-timeout", id_reuse_policy=IdReusePolicy.TERMINATE_IF_RUNNING)
    world.cancel("fan/c2")
    world.fire_all()
    world.signal("sig", "x", 2)
    world.cancel("guard")
    world.cancel("clean")
    world.fire_all()
    world.signal("sig", "y", 3)
    world.fire_all()
    world.start("count", "counter", 10)  # closed by now: the id is reused
    world.fire_all()


def test_a_restore_rebuilds_exactly_the_live_state_after_every_command(
    stores: dict[str, ChangelogStore],
) -> None:
    world = World(make_registry(), **stores)
    checked: list[str] = []
    original = world._handle

    def handle_and_check(command: Any) -> Any:
        decision = original(command)
        workflow_id = command.workflow_id
        assert view(world.restored(workflow_id)) == view(world.core.state_of(workflow_id)), (
            f"after {type(command).__name__} to {workflow_id}"
        )
        checked.append(workflow_id)
        return decision

    world._handle = handle_and_check  # type: ignore[method-assign]
    _scenario(world)
    assert len(checked) > 40
    assert world.result("count") == 10


def test_a_restarted_core_continues_where_the_old_one_stopped(store: ChangelogStore) -> None:
    reference = World(make_registry())
    world = World(make_registry(), store=store)
    for w in (reference, world):
        w.start("sig", "signals")
        w.start("st", "signal-timeout")
        w.signal("sig", "x", 1)
    world.restart()
    for w in (reference, world):
        w.fire_all()
        w.signal("sig", "x", 2)
        w.signal("sig", "y", 3)
        w.fire_all()
    assert world.histories == reference.histories
    assert world.result("sig") == [1, 2, 3]


def test_closed_workflows_leave_the_heap_and_every_guard_still_holds(
    stores: dict[str, ChangelogStore],
) -> None:
    world = World(make_registry(), **stores)
    world.start("p", "runs-counter", command_id="start-p")
    for _ in range(3):
        world.fire_all()
    assert world.result("p") == {"final": 3}
    assert {s.workflow_id for s in world.core.workflows_in_memory()} == set()  # all on disk
    world.restart()
    refusals_before = len(world.refusals)
    parent_run = world.history("p")[0].run_id
    history_len = len(world.history("p"))

    # duplicate detection: the same start is a no-op (its chain-start id is kept)
    assert world.start("p", "runs-counter", command_id="start-p").is_noop
    # parent-terminal guard: a late record of a child to the closed parent run appends nothing
    late = RecordChildTerminal(
        command_id=record_child_terminal_id("p", parent_run, "late-child"),
        issued_at=world.now,
        workflow_id="p",
        parent_run_id=parent_run,
        child_workflow_id="late-child",
        child_run_id=parent_run,
        outcome=world_completed(),
    )
    assert world.send(late).is_noop
    # id reuse policy: REJECT_DUPLICATE refuses, naming the closed run
    refused = world.start("p", "runs-counter", id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE)
    assert isinstance(refused.refusal, CommandRefused)
    assert refused.refusal.code is RefusalCode.ID_REUSE_REJECTED
    # commands to a closed workflow are refused as closed, not as unknown
    signal = world.signal("p", "x")
    assert signal.refusal is not None
    assert signal.refusal.code is RefusalCode.WORKFLOW_CLOSED
    assert len(world.history("p")) == history_len
    assert len(world.refusals) == refusals_before + 2
    # and a reuse with ALLOW_DUPLICATE starts a new run after the closed ones
    world.start("p", "waiter")
    assert world.kinds("p")[history_len] == "WorkflowStarted"
    assert world.history("p")[history_len].seq == history_len + 1


def world_completed() -> Any:
    from aion_common.domain import Completed, Payload

    return Completed(result=Payload.from_json(None))


def test_changelog_bytes_stay_within_twice_the_event_bytes(
    stores: dict[str, ChangelogStore],
) -> None:
    world = World(make_registry(), **stores)
    _scenario(world)
    codec = Codec()
    event_bytes = sum(
        len(b.workflow_id.encode()) + len(codec.encode_batch(b, trusted=True))
        for b in world.batches
    )
    assert world.changelog_bytes <= 2 * event_bytes, (world.changelog_bytes, event_bytes)


def test_an_unreadable_head_names_its_partition_and_offset(store: ChangelogStore) -> None:
    store.write([(Change(head_key("w"), b"garbage", closed_at_ms=1), 41)], 42)
    changelog = EngineChangelog(Codec(), 3)
    with pytest.raises(ChangelogCorrupt, match=r"partition 3 offset 41 .*unreadable"):
        changelog.load_closed(store, "w")


def test_an_open_head_without_its_run_records_is_corrupt(store: ChangelogStore) -> None:
    world = World(make_registry(), store=store)
    world.start("w", "waiter")
    world.signal("w", "go")
    world.start("w", "waiter")  # a second run: its head holds the first
    head = store.get(head_key("w"))
    assert head is not None
    fresh = ChangelogStore(store.path.with_name("other.sqlite"))
    fresh.write([(Change(head_key("w"), head[0], open=True), 7)], 8)
    with pytest.raises(ChangelogCorrupt, match="offset 7"):
        list(EngineChangelog(Codec(), 0).restore(fresh))


def test_store_keeps_the_latest_record_per_key_and_the_checkpoint(
    store: ChangelogStore,
) -> None:
    store.write(
        [
            (Change(b"a", b"1", open=True), 0),
            (Change(b"b", b"2", closed_at_ms=5), 1),
            (Change(b"a", None), 2),
        ],
        3,
    )
    assert store.get(b"a") is None
    assert store.get(b"b") == (b"2", 1)
    assert store.checkpoint == 3
    assert store.closed_before(6, 10) == [(b"b", 5)]
    assert store.closed_before(5, 10) == []
    assert list(store.scan_open()) == []


def test_batches_are_encoded_once_per_run_record() -> None:
    # a run record holds exactly the batch's events of the open run
    world = World(make_registry(), store=None)
    world.start("w", "waiter")
    (batch,) = world.batches
    changelog = EngineChangelog(Codec(), 0)
    state = world.core.state_of("w")
    changes = changelog.changes(state, batch)
    # a new workflow's first run needs no head: its run records from seq 1 are its state
    assert [c.key for c in changes] == [b"w\x00000000000001"]
    assert changes[0].open
    decoded = Codec().decode_batch(changes[0].value)
    assert isinstance(decoded, EventBatch)
    assert decoded.events == batch.events
    assert not any(isinstance(e, WorkflowCompleted) for e in decoded.events)
    assert StartWorkflow  # imported for the reader: starts open a run record


def test_closed_heads_move_between_the_changelogs_in_the_batch_that_closes_or_reopens() -> None:
    world = World(make_registry(), store=None)
    changelog = EngineChangelog(Codec(), 0)

    def changes() -> list[tuple[bytes, bool, bool, bool]]:
        batch = world.batches[-1]
        found = changelog.changes(world.core.state_of(batch.workflow_id), batch)
        return [(c.key, c.value is None, c.open, c.closed_log) for c in found]

    world.start("w", "waiter")
    assert changes() == [(b"w\x00000000000001", False, True, False)]  # a first run: no head
    world.signal("w", "go")
    # closed: its run records go, its head goes to engine-closed (none in engine-state)
    assert changes() == [
        (b"w\x00000000000001", True, False, False),
        (b"w", False, False, True),
    ]
    world.start("w", "waiter")  # the id reused: the head moves back, tombstoned first
    third = world.history("w")[-1].seq
    assert changes() == [
        (b"w", True, False, True),
        (b"w", False, True, False),
        (b"w\x00%012d" % third, False, True, False),
    ]
    world.signal("w", "go")  # closed again: out of engine-state, into engine-closed
    assert changes() == [
        (b"w\x00%012d" % third, True, False, False),
        (b"w", True, False, False),
        (b"w", False, False, True),
    ]


def test_the_position_is_read_back_and_is_not_a_workflow(store: ChangelogStore) -> None:
    assert read_position(store, 0) is None  # a log from before positions
    store.write([(position_change(41), 7), (position_change(42), 9)], 10)
    assert read_position(store, 0) == 42
    assert list(EngineChangelog(Codec(), 0).restore(store)) == []  # not open work
    assert store.counts() == (0, 1)


def test_a_position_a_complete_build_wrote_survives_its_marker(store: ChangelogStore) -> None:
    # what a build's complete transaction leaves: the position above where the build began
    store.write([(position_change(5), 3)], 4)
    store.write([(position_change(5), 12)], 14, marker=(Marker("complete", 10, FORMAT), 13))
    assert read_position(store, 0) == 5
    store.write([], 30, marker=(Marker("complete", 20, FORMAT), 29))  # a later build without it
    assert read_position(store, 0) is None


@pytest.mark.parametrize("value", [b"-1", b"forty", b"\xff"])
def test_an_unreadable_position_names_its_partition_and_offset(
    store: ChangelogStore, value: bytes
) -> None:
    store.write([(Change(POSITION_KEY, value), 6)], 7)
    with pytest.raises(ChangelogCorrupt, match="partition 3 offset 6"):
        read_position(store, 3)
