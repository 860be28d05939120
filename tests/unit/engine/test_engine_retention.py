"""Retention: a purge forgets a closed workflow everywhere the engine keeps it, frees its id,
and never touches a workflow that is open or moved on."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import World
from engine_workflows import make_registry

from aion_common.domain import RefusalCode, WorkflowPurged
from aion_common.kafka.changelog import ChangelogStore
from aion_engine import EngineCore
from aion_engine._snapshot import head_key
from aion_engine.retention import RetentionSweep, expired_in, purge_command


@pytest.fixture(params=["one store", "split"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    closed = None
    if request.param == "split":  # engine-closed's records in their own store, as the service
        closed = ChangelogStore(tmp_path / "p0-closed.sqlite")
    return World(make_registry(), store=ChangelogStore(tmp_path / "p0.sqlite"), closed_store=closed)


def _closed(world: World, workflow_id: str = "w") -> int:
    world.start(workflow_id, "waiter")
    world.signal(workflow_id, "go", 1)
    return len(world.history(workflow_id))


def test_a_purge_forgets_a_closed_workflow_and_frees_its_id(world: World) -> None:
    last = _closed(world)
    decision = world.send(purge_command("w", last, world.now))
    assert decision.batch is not None
    (event,) = decision.batch.events
    assert isinstance(event, WorkflowPurged)
    assert event.seq == last + 1
    assert world.store is not None
    assert world.store.get(head_key("w")) is None  # tombstoned in the changelog
    if world.closed_store is not None:
        assert world.closed_store.get(head_key("w")) is None
    assert world.core.state_of("w") is None
    world.restart()
    assert world.core.state_of("w") is None
    refused = world.signal("w", "go")
    assert refused.refusal is not None
    assert refused.refusal.code is RefusalCode.UNKNOWN_WORKFLOW
    started = world.start("w", "waiter")
    assert started.batch is not None
    assert started.batch.events[0].seq == 1  # a new history


def test_a_purge_is_a_no_op_for_an_open_a_moved_on_or_an_unknown_workflow(world: World) -> None:
    world.start("open", "waiter")
    assert world.send(purge_command("open", 1, world.now)).is_noop
    last = _closed(world, "reused")
    world.start("reused", "waiter")  # started again after the sweep looked
    assert world.send(purge_command("reused", last, world.now)).is_noop
    assert world.send(purge_command("nobody", 3, world.now)).is_noop
    last = _closed(world, "twice")
    assert not world.send(purge_command("twice", last, world.now)).is_noop
    assert world.send(purge_command("twice", last, world.now)).is_noop  # a re-issued sweep


def test_a_purged_workflow_is_not_read_back_before_its_tombstone_is_stored(world: World) -> None:
    last = _closed(world)
    core = world.core
    decision = core.handle(purge_command("w", last, world.now), now=world.now)
    assert decision.batch is not None
    # not yet written to the store (the commit has not happened): still gone for the core
    assert core.state_of("w") is None
    started = core.handle(world_start("w", world), now=world.now)
    assert started.batch is not None
    assert started.batch.events[0].seq == 1


def world_start(workflow_id: str, world: World) -> object:
    from aion_common.domain import Payload, StartWorkflow

    return StartWorkflow(
        command_id=world.next_id("start"),
        issued_at=world.now,
        workflow_id=workflow_id,
        workflow_type="waiter",
        input=Payload.from_json(None),
    )


def test_a_rebuild_from_the_event_log_forgets_at_the_purge(world: World) -> None:
    last = _closed(world)
    world.send(purge_command("w", last, world.now))
    world.start("w", "waiter")
    rebuilt = EngineCore(make_registry())
    for batch in world.batches:
        rebuilt.apply_batch(batch)
    state = rebuilt.state_of("w")
    assert state is not None
    assert state.last_seq == 1
    assert state.open_run is not None


async def test_the_sweep_sends_one_purge_per_expired_workflow(world: World) -> None:
    _closed(world, "a")
    _closed(world, "b")
    world.start("c", "waiter")  # open: never expires
    store = world.closed_store or world.store  # the sweep reads engine-closed's store
    assert store is not None
    sent: list[object] = []

    async def send(command: object) -> None:
        sent.append(command)

    def expired(before_ms: int) -> list[tuple[int, str, int]]:
        return [(0, w, s) for w, s in expired_in(store, world.core.state_of, before_ms)]

    sweep = RetentionSweep(1, expired, send)  # type: ignore[arg-type]
    assert await sweep.sweep_once() == 2
    assert sorted(c.workflow_id for c in sent) == ["a", "b"]  # type: ignore[attr-defined]
    assert await sweep.sweep_once() == 0  # sent already: not again before its re-issue time
    long = RetentionSweep(10**12, expired, send)  # type: ignore[arg-type]
    assert await long.sweep_once() == 0  # nothing closed that long ago
