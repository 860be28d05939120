"""Contract: given event batches, the views hold these rows — on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from projector_script import (
    T0,
    TOPIC,
    Script,
    child_completed,
    child_failed,
    child_scheduled,
    completed,
    continued,
    dump,
    failed,
    signal,
    started,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aion_common.domain import (
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
    WorkflowTimedOut,
)
from aion_projector import (
    Projection,
    WorkflowFilter,
    child_tree,
    describe,
    history,
    list_workflows,
    registry,
    reset,
    stored_offsets,
)

Sessions = async_sessionmaker[AsyncSession]


async def project(sessions: Sessions, deliveries: list) -> None:
    async with sessions() as session:
        await Projection(TOPIC).apply(session, deliveries)


async def test_start_and_complete(sessions: Sessions) -> None:
    s = Script()
    await project(
        sessions,
        [s.batch("w1", started("r1", value=7)), s.batch("w1", signal(), completed({"ok": 1}))],
    )
    async with sessions() as session:
        d = await describe(session, "w1")
        assert d is not None
        assert d.summary.status == "COMPLETED"
        assert d.summary.current_run_id == "r1"
        assert d.summary.last_seq == 3
        assert d.summary.started_at == T0 + timedelta(seconds=1)
        assert d.summary.closed_at == T0 + timedelta(seconds=2)
        assert d.current_run.result == '{"ok":1}'
        assert [e.event_type for e in await history(session, "w1")] == [
            "WorkflowStarted",
            "SignalReceived",
            "WorkflowCompleted",
        ]
        (entry,) = await registry(session, workflow_id="w1")
        assert (entry.status, entry.partition, entry.owner, entry.package_version) == (
            "COMPLETED",
            0,
            "engine-1",
            "1.0.0",
        )
        assert await stored_offsets(session) == {(TOPIC, 0): 2}


@pytest.mark.parametrize(
    ("terminal", "status", "message"),
    [
        (failed("boom", {"trace": "x"}), "FAILED", "boom"),
        ((WorkflowCancelled, {"reason": "user"}), "CANCELLED", "user"),
        ((WorkflowTimedOut, {"timeout": "30s"}), "TIMED_OUT", "30s"),
    ],
)
async def test_unhappy_terminals(sessions: Sessions, terminal, status: str, message: str) -> None:
    s = Script()
    await project(sessions, [s.batch("w1", started("r1")), s.batch("w1", terminal)])
    async with sessions() as session:
        d = await describe(session, "w1")
        assert d is not None
        assert d.summary.status == status
        assert d.current_run.status == status
        assert d.current_run.error_message == message
        assert d.current_run.result is None
        if status == "FAILED":
            assert d.current_run.error_details == '{"trace":"x"}'


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (WorkflowError(message="terminated:by ana", error_type="Terminated"), "TERMINATED"),
        (  # the user's own exception class of that name is a failure like any other
            WorkflowError(message="Terminated: by hand", error_type="Terminated"),
            "FAILED",
        ),
        (
            WorkflowError(
                message="ValueError: nobody to greet",
                error_type="ValueError",
                traceback='  File "greetings.py", line 21, in greet\nValueError: nobody\n',
            ),
            "FAILED",
        ),
    ],
)
async def test_failures_keep_type_and_traceback_and_terminations_show_as_such(
    sessions: Sessions, error: WorkflowError, status: str
) -> None:
    s = Script()
    failure = (WorkflowFailed, {"error": error})
    await project(sessions, [s.batch("w1", started("r1")), s.batch("w1", failure)])
    async with sessions() as session:
        d = await describe(session, "w1")
        assert d is not None
        assert (d.summary.status, d.current_run.status) == (status, status)
        assert d.current_run.error_message == error.message
        assert d.current_run.error_type == error.error_type
        assert d.current_run.error_traceback == (error.traceback or None)


async def test_continue_as_new_chain(sessions: Sessions) -> None:
    s = Script()
    await project(
        sessions,
        [
            s.batch("w1", started("r1")),
            s.batch("w1", continued("r2"), started("r2", first_run_id="r1", previous_run_id="r1")),
        ],
    )
    await project(
        sessions,
        [s.batch("w1", continued("r3"), started("r3", first_run_id="r1", previous_run_id="r2"))],
    )
    async with sessions() as session:
        d = await describe(session, "w1")
        assert d is not None
        assert d.summary.current_run_id == "r3"
        assert d.summary.first_run_id == "r1"
        assert d.summary.status == "RUNNING"
        assert d.summary.closed_at is None
        assert d.summary.started_at == T0 + timedelta(seconds=1)
        chain = [(r.run_id, r.status, r.previous_run_id, r.next_run_id) for r in d.runs]
        assert chain == [
            ("r1", "CONTINUED_AS_NEW", None, "r2"),
            ("r2", "CONTINUED_AS_NEW", "r1", "r3"),
            ("r3", "RUNNING", "r2", None),
        ]
        statuses = {(e.run_id, e.status) for e in await registry(session, workflow_id="w1")}
        assert statuses == {
            ("r1", "CONTINUED_AS_NEW"),
            ("r2", "CONTINUED_AS_NEW"),
            ("r3", "RUNNING"),
        }


async def test_children_scheduled_then_completed_or_failed(sessions: Sessions) -> None:
    s = Script()
    await project(
        sessions,
        [
            s.batch("p", started("pr", "parent"), child_scheduled("c1"), child_scheduled("c2")),
            s.batch("c1", started("c1r", "child", parent=("p", "pr"))),
            s.batch("c2", started("c2r", "child", parent=("p", "pr"))),
        ],
    )
    async with sessions() as session:
        d = await describe(session, "p")
        assert d is not None
        assert [(c.child_workflow_id, c.state) for c in d.children] == [
            ("c1", "SCHEDULED"),
            ("c2", "SCHEDULED"),
        ]
    await project(
        sessions,
        [
            s.batch("c1", completed(1)),
            s.batch("c2", failed("bad")),
            s.batch("p", child_completed("c1", 1)),
            s.batch("p", child_failed("c2", "bad")),
        ],
    )
    async with sessions() as session:
        d = await describe(session, "p")
        assert d is not None
        assert [(c.child_workflow_id, c.state, c.result, c.error_message) for c in d.children] == [
            ("c1", "COMPLETED", "1", None),
            ("c2", "FAILED", None, "bad"),
        ]
        assert all(c.closed_at is not None for c in d.children)
        page = await list_workflows(session, WorkflowFilter(parent_workflow_id="p"))
        assert sorted(w.workflow_id for w in page.items) == ["c1", "c2"]
        tree = await child_tree(session, "p", depth=2)
        assert tree is not None
        assert [(n.workflow_id, n.status) for n in tree.children] == [
            ("c1", "COMPLETED"),
            ("c2", "FAILED"),
        ]


def _story() -> list:
    s = Script()
    return [
        s.batch("p", started("pr", "parent"), child_scheduled("c1")),
        s.batch("c1", started("c1r", "child", parent=("p", "pr"))),
        s.batch(
            "c1",
            signal(),
            continued("c1r2"),
            started("c1r2", "child", first_run_id="c1r", previous_run_id="c1r", parent=("p", "pr")),
        ),
        s.batch("c1", completed("done")),
        s.batch("p", child_completed("c1", "done"), completed("all")),
    ]


async def test_redelivered_batches_change_nothing(engine: AsyncEngine, sessions: Sessions) -> None:
    story = _story()
    await project(sessions, story)
    before = await dump(engine)
    await project(sessions, story)  # the whole run again, same offsets
    await project(sessions, story[1:3] + story[:1])  # a re-delivered slice, out of order
    assert await dump(engine) == before


async def test_duplicates_inside_one_apply_are_skipped(
    engine: AsyncEngine, sessions: Sessions
) -> None:
    story = _story()
    await project(sessions, story)
    once = await dump(engine)
    await reset_and_project(engine, sessions, [d for d in story for _ in range(2)])
    assert await dump(engine) == once


async def reset_and_project(engine: AsyncEngine, sessions: Sessions, deliveries: list) -> None:
    await reset(engine)
    await project(sessions, deliveries)


async def test_zombie_batch_with_held_seq_changes_nothing(
    engine: AsyncEngine, sessions: Sessions
) -> None:
    s = Script()
    await project(sessions, [s.batch("w", started("r1")), s.batch("w", signal("a"))])
    before = await dump(engine)
    zombie = Script(writer="engine-zombie", offset=s.offset)
    zombie.seqs["w"] = 1  # it rebuilt before seq 2 and decides seq 2 again, differently
    zombie.runs["w"] = "r1"
    z = zombie.batch("w", completed("zombie"))
    await project(sessions, [z])
    after = await dump(engine)
    assert after.pop("projector_offsets") != before.pop("projector_offsets")
    assert after == before


async def test_gap_is_held_then_released(engine: AsyncEngine, sessions: Sessions) -> None:
    s = Script()
    first, second, third = (
        s.batch("w", started("r1")),
        s.batch("w", signal("a")),
        s.batch("w", completed(3)),
    )
    await project(sessions, [first, third])
    async with sessions() as session:
        d = await describe(session, "w")
        assert d is not None
        assert (d.summary.last_seq, d.summary.status, d.held_events) == (1, "RUNNING", 1)
    await project(sessions, [second])
    async with sessions() as session:
        d = await describe(session, "w")
        assert d is not None
        assert (d.summary.last_seq, d.summary.status, d.held_events) == (3, "COMPLETED", 0)
        assert [e.seq for e in await history(session, "w")] == [1, 2, 3]
    in_order = await dump(engine)
    await reset_and_project(engine, sessions, [first, second, third])
    clean = await dump(engine)
    in_order.pop("projector_offsets"), clean.pop("projector_offsets")
    assert in_order == clean


class _Crash(RuntimeError):
    pass


class _CrashingProjection(Projection):
    async def _store_offsets(self, session, offsets) -> None:
        raise _Crash("killed between the view writes and the offsets")


async def test_failure_mid_apply_leaves_views_and_offsets_unchanged(
    engine: AsyncEngine, sessions: Sessions
) -> None:
    story = _story()
    await project(sessions, story[:2])
    before = await dump(engine)
    async with sessions() as session:
        with pytest.raises(_Crash):
            await _CrashingProjection(TOPIC).apply(session, story[2:])
    assert await dump(engine) == before
    await project(sessions, story[2:])
    async with sessions() as session:
        assert await stored_offsets(session, TOPIC) == {(TOPIC, 0): len(story)}


async def test_offsets_per_partition_never_move_back(sessions: Sessions) -> None:
    a, b = Script(partition=0), Script(partition=3)
    a.offset, b.offset = 10, 40
    await project(sessions, [a.batch("x", started("xr")), b.batch("y", started("yr"))])
    await project(sessions, [(0, 5, a.batch("x", signal())[2])])
    async with sessions() as session:
        assert await stored_offsets(session) == {(TOPIC, 0): 11, (TOPIC, 3): 41}
        (entry,) = await registry(session, partition=3)
        assert entry.workflow_id == "y"


async def test_list_filters_and_keyset_pagination(sessions: Sessions) -> None:
    s = Script()
    deliveries = []
    for i in range(250):
        wid = f"wf-{i:03d}"
        deliveries.append(s.batch(wid, started(f"r{i}", "even" if i % 2 == 0 else "odd")))
        if i % 5 == 0:
            deliveries.append(s.batch(wid, completed(i)))
    await project(sessions, deliveries)
    async with sessions() as session:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await list_workflows(session, limit=40, after_cursor=cursor)
            seen.extend(w.workflow_id for w in page.items)
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == 7
        assert seen == sorted(seen, reverse=True)
        assert len(seen) == len(set(seen)) == 250

        odd_done: list[str] = []
        cursor = None
        while True:
            where = WorkflowFilter(workflow_type="odd", status="COMPLETED")
            page = await list_workflows(session, where, limit=7, after_cursor=cursor)
            odd_done.extend(w.workflow_id for w in page.items)
            if (cursor := page.next_cursor) is None:
                break
        assert odd_done == [f"wf-{i:03d}" for i in range(249, -1, -1) if i % 2 and i % 5 == 0]

        starts = sorted(w.started_at for w in (await list_workflows(session, limit=1000)).items)
        window = WorkflowFilter(started_from=starts[10], started_before=starts[20])
        assert len((await list_workflows(session, window, limit=100)).items) == 10
        running = await list_workflows(session, WorkflowFilter(status="RUNNING"), limit=1000)
        assert len(running.items) == 200


async def test_unknown_workflow_and_bad_cursor(sessions: Sessions) -> None:
    from aion_common.domain import InvalidInput

    async with sessions() as session:
        assert await describe(session, "nope") is None
        assert await child_tree(session, "nope") is None
        assert await history(session, "nope") == []
        with pytest.raises(InvalidInput):
            await list_workflows(session, after_cursor="not-a-cursor")
        with pytest.raises(InvalidInput):
            await list_workflows(session, limit=0)


async def test_history_from_seq_and_deep_tree(sessions: Sessions) -> None:
    s = Script()
    await project(
        sessions,
        [
            s.batch("a", started("ar", "t"), child_scheduled("b")),
            s.batch("b", started("br", "t", parent=("a", "ar")), child_scheduled("c")),
            s.batch("c", started("cr", "t", parent=("b", "br")), child_scheduled("d")),
            s.batch("d", started("dr", "t", parent=("c", "cr"))),
            s.batch("a", signal("1"), signal("2"), signal("3")),
        ],
    )
    async with sessions() as session:
        entries = await history(session, "a", from_seq=3, limit=2)
        assert [(e.seq, e.event_type) for e in entries] == [
            (3, "SignalReceived"),
            (4, "SignalReceived"),
        ]
        assert entries[0].fields() == {"name": "1", "payload": {"s": "1"}}
        tree = await child_tree(session, "a", depth=2)
        assert tree is not None
        assert tree.children[0].workflow_id == "b"
        assert tree.children[0].children[0].workflow_id == "c"
        assert tree.children[0].children[0].children == []
