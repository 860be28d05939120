"""Activities in the engine's core: given events / when a worker reports / then events.

Each scenario drives :class:`EngineCore` through the broker-free :class:`World`, plays the
worker by hand (reports built from the task records the core emits), fires the activity
clocks the core asked for, and replays every resulting history against the same code.
"""

from __future__ import annotations

import asyncio
import gc
import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_harness import T0, World, payload

from aion import activity
from aion.workflow import ActivityError, RetryPolicy, WorkflowContext
from aion_common.domain import (
    ActivityTask,
    CancelActivityTask,
    CompleteActivity,
    EventBatch,
    FailActivityAttempt,
    RecordActivityHeartbeat,
    RecordActivityStarted,
    RefusalCode,
    TimeoutKind,
    WorkflowError,
    activity_outcome_id,
)
from aion_engine import EngineCore, TimerRequest, replay_history
from aion_engine.registry import WorkflowRegistry


@activity.defn
def charge(order: str, amount: int) -> str:
    return f"receipt-{order}-{amount}"


def _error_fields(err: ActivityError) -> dict[str, Any]:
    return {
        "type": err.cause_type,
        "message": err.cause_message,
        "attempt": err.attempt,
        "timeout": err.timeout,
        "non_retryable": err.non_retryable,
        "cancelled": err.cancelled,
    }


def make_registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("act.one")
    async def one(ctx: WorkflowContext, spec: dict[str, Any]) -> Any:
        try:
            return await ctx.execute_activity(
                charge,
                "A-1",
                spec.get("amount", 10),
                start_to_close=spec.get("s2c_start", 10),
                schedule_to_close=spec.get("s2c"),
                schedule_to_start=spec.get("s2s"),
                heartbeat_timeout=spec.get("hb"),
                retry=RetryPolicy(
                    initial_interval=1,
                    maximum_attempts=spec.get("max", 0),
                    non_retryable_errors=spec.get("non_retryable", ()),
                ),
                task_queue=spec.get("queue"),
            )
        except ActivityError as err:
            return {"error": _error_fields(err)}

    @registry.defn("act.fan")
    async def fan(ctx: WorkflowContext, n: int) -> list[Any]:
        handles = [
            await ctx.start_activity("charge", f"o{i}", i, start_to_close=5) for i in range(n)
        ]
        return [await h.result() for h in handles]

    @registry.defn("act.cancel_own")
    async def cancel_own(ctx: WorkflowContext, _: Any) -> Any:
        handle = await ctx.start_activity(charge, "A", 1, start_to_close=60)
        await ctx.wait_signal("stop")
        await handle.cancel("no longer needed")
        try:
            return await handle.result()
        except ActivityError as err:
            return {"error": _error_fields(err)}

    @registry.defn("act.cancellable")
    async def cancellable(ctx: WorkflowContext, _: Any) -> Any:
        return await ctx.execute_activity(charge, "A", 1, start_to_close=60)

    @registry.defn("act.cancel_catch")
    async def cancel_catch(ctx: WorkflowContext, _: Any) -> Any:
        handle = await ctx.start_activity(charge, "A", 1, start_to_close=60)
        try:
            await ctx.wait_signal("never")
        except asyncio.CancelledError:
            try:
                return await handle.result()
            except ActivityError as err:
                return {"error": _error_fields(err)}
        return None

    @registry.defn("act.no_timeout")
    async def no_timeout(ctx: WorkflowContext, _: Any) -> Any:
        return await ctx.execute_activity(charge, "A", 1)

    @registry.defn("act.not_an_activity")
    async def not_an_activity(ctx: WorkflowContext, _: Any) -> Any:
        return await ctx.execute_activity(len, "A", start_to_close=1)

    @registry.defn("bad.open")
    async def bad_open(ctx: WorkflowContext, path: str) -> Any:
        return Path(path).read_text(encoding="utf-8")

    @registry.defn("bad.sleep")
    async def bad_sleep(ctx: WorkflowContext, _: Any) -> Any:
        time.sleep(0.001)  # noqa: ASYNC251 - the point: refused inside workflow code

    @registry.defn("bad.urllib")
    async def bad_urllib(ctx: WorkflowContext, _: Any) -> Any:
        return urllib.request.urlopen("http://127.0.0.1:9/")  # noqa: ASYNC210

    @registry.defn("bad.caught")
    async def bad_caught(ctx: WorkflowContext, path: str) -> Any:
        try:
            Path(path).write_text("x", encoding="utf-8")
        except Exception:  # noqa: BLE001 - the workflow tries to hide the violation
            return "hidden"
        return "written"

    @registry.defn("fine.gc")
    async def fine_gc(ctx: WorkflowContext, _: Any) -> Any:
        gc.collect()  # as an allocation would when the collector is due: its callbacks run here
        return 2

    @registry.defn("fine.print")
    async def fine_print(ctx: WorkflowContext, _: Any) -> Any:
        print("workflow code may print")
        return 1

    return registry


@dataclass
class Worker:
    """Plays ``aion worker`` for one world: reports on the tasks the core dispatched."""

    world: World
    counter: int = 0

    def tasks(self, workflow_id: str) -> list[ActivityTask]:
        return [
            t
            for _, t in self.world.tasks
            if isinstance(t, ActivityTask) and t.workflow_id == workflow_id
        ]

    def notices(self, workflow_id: str) -> list[CancelActivityTask]:
        return [
            t
            for _, t in self.world.tasks
            if isinstance(t, CancelActivityTask) and t.workflow_id == workflow_id
        ]

    def last(self, workflow_id: str) -> ActivityTask:
        return self.tasks(workflow_id)[-1]

    def _ids(self, task: ActivityTask, kind: str) -> dict[str, Any]:
        return {
            "command_id": activity_outcome_id(task.activity_id, task.attempt, kind),
            "issued_at": self.world.now,
            "workflow_id": task.workflow_id,
            "run_id": task.run_id,
            "activity_id": task.activity_id,
            "attempt": task.attempt,
        }

    def start(self, task: ActivityTask) -> Any:
        return self.world.send(RecordActivityStarted(**self._ids(task, "started"), worker="w1"))

    def heartbeat(self, task: ActivityTask, details: object = None) -> Any:
        self.counter += 1
        ids = self._ids(task, f"heartbeat-{self.counter}")
        return self.world.send(
            RecordActivityHeartbeat(**ids, details=None if details is None else payload(details))
        )

    def complete(self, task: ActivityTask, result: object) -> Any:
        return self.world.send(
            CompleteActivity(**self._ids(task, "completed"), result=payload(result))
        )

    def fail(
        self,
        task: ActivityTask,
        message: str = "boom",
        *,
        error_type: str = "RuntimeError",
        non_retryable: bool = False,
        cancelled: bool = False,
    ) -> Any:
        error = WorkflowError(
            message=f"{error_type}: {message}", error_type=error_type, traceback="tb"
        )
        return self.world.send(
            FailActivityAttempt(
                **self._ids(task, "failed"),
                error=error,
                non_retryable=non_retryable,
                cancelled=cancelled,
            )
        )


def due(world: World, workflow_id: str) -> list[TimerRequest]:
    return sorted(
        (r for r in world.timers.values() if r.command.workflow_id == workflow_id),
        key=lambda r: r.fire_at,
    )


def fire_next(world: World, workflow_id: str) -> TimerRequest:
    request = due(world, workflow_id)[0]
    del world.timers[request.command.command_id]
    world.fire(request)
    return request


@pytest.fixture
def world() -> World:
    return World(make_registry())


@pytest.fixture
def worker(world: World) -> Worker:
    return Worker(world)


def replays(world: World, workflow_id: str) -> None:
    replay_history(world.history(workflow_id), make_registry())


def test_an_activity_is_dispatched_and_its_result_returned(world: World, worker: Worker) -> None:
    world.start("w", "act.one", {"amount": 42, "queue": "payments"})
    assert world.kinds("w") == ["WorkflowStarted", "ActivityScheduled"]
    queue, task = world.tasks[0]
    assert queue == "payments"
    assert isinstance(task, ActivityTask)
    assert (task.activity_type, task.attempt, task.input.to_json()) == ("charge", 1, ["A-1", 42])
    assert task.options.start_to_close_ms == 10_000
    worker.complete(task, "receipt-A-1-42")
    assert world.kinds("w")[-2:] == ["ActivityCompleted", "WorkflowCompleted"]
    assert world.result("w") == "receipt-A-1-42"
    assert not due(world, "w"), "every clock of the activity is disarmed"
    replays(world, "w")


def test_failures_are_retried_with_backoff_then_the_result_is_returned(
    world: World, worker: Worker
) -> None:
    world.start("w", "act.one", {})
    for attempt, backoff in ((1, 1), (2, 2)):
        task = worker.last("w")
        assert task.attempt == attempt
        worker.start(task)
        worker.fail(task, f"transient {attempt}")
        failed = world.history("w")[-1]
        assert type(failed).__name__ == "ActivityAttemptFailed"
        assert failed.next_attempt_at == world.now + timedelta(seconds=backoff)  # type: ignore[union-attr]
        retry = fire_next(world, "w")
        assert retry.fire_at == failed.next_attempt_at  # type: ignore[union-attr]
        assert world.kinds("w")[-1] == "ActivityAttemptScheduled"
    third = worker.last("w")
    assert third.attempt == 3
    worker.complete(third, "ok")
    assert world.kinds("w").count("ActivityAttemptFailed") == 2
    assert world.kinds("w").count("ActivityCompleted") == 1
    assert world.result("w") == "ok"
    replays(world, "w")


def test_a_non_retryable_error_fails_the_activity_at_once(world: World, worker: Worker) -> None:
    world.start("w", "act.one", {"non_retryable": ["CardDeclined"]})
    worker.fail(worker.last("w"), "no funds", error_type="CardDeclined")
    assert world.kinds("w")[-2:] == ["ActivityFailed", "WorkflowCompleted"]
    assert world.result("w") == {
        "error": {
            "type": "CardDeclined",
            "message": "CardDeclined: no funds",
            "attempt": 1,
            "timeout": None,
            "non_retryable": True,
            "cancelled": False,
        }
    }
    world.start("v", "act.one", {})
    worker.fail(worker.last("v"), "flagged", error_type="ApplicationError", non_retryable=True)
    assert world.kinds("v")[-2] == "ActivityFailed"
    replays(world, "w")


def test_used_up_attempts_fail_the_activity(world: World, worker: Worker) -> None:
    world.start("w", "act.one", {"max": 2})
    worker.fail(worker.last("w"))
    fire_next(world, "w")
    worker.fail(worker.last("w"))
    error = world.result("w")["error"]  # type: ignore[index]
    assert (error["attempt"], error["non_retryable"]) == (2, False)


def test_a_hanging_attempt_times_out_start_to_close_and_is_retried(
    world: World, worker: Worker
) -> None:
    world.start("w", "act.one", {"s2c_start": 5})
    first = worker.last("w")
    worker.start(first)
    timer = fire_next(world, "w")
    assert timer.fire_at == T0 + timedelta(seconds=5)
    failed = world.history("w")[-1]
    assert failed.timeout is TimeoutKind.START_TO_CLOSE  # type: ignore[union-attr]
    assert "start-to-close" in failed.error.message  # type: ignore[union-attr]
    assert worker.notices("w")[-1].target_attempt == 1, "the worker is told to stop attempt 1"
    fire_next(world, "w")  # the retry
    second = worker.last("w")
    assert second.attempt == 2
    late = worker.complete(first, "too late")
    assert late.refusal is not None
    assert late.refusal.code is RefusalCode.STALE_ACTIVITY_REPORT
    worker.complete(second, "in time")
    assert world.result("w") == "in time"
    replays(world, "w")


def test_a_silent_attempt_times_out_on_heartbeats_and_the_next_sees_its_details(
    world: World, worker: Worker
) -> None:
    world.start("w", "act.one", {"hb": 2, "s2c_start": 60})
    first = worker.last("w")
    worker.start(first)
    world.tick(1.5)
    worker.heartbeat(first, {"done": 7})
    clocks = due(world, "w")
    assert any(r.fire_at == world.now + timedelta(seconds=2) for r in clocks), "clock restarted"
    assert all(r.fire_at != T0 + timedelta(seconds=2) for r in clocks), "old clock disarmed"
    fire_next(world, "w")  # the heartbeat clock: the attempt went silent
    failed = world.history("w")[-1]
    assert failed.timeout is TimeoutKind.HEARTBEAT  # type: ignore[union-attr]
    fire_next(world, "w")  # the retry
    second = worker.last("w")
    assert second.attempt == 2
    assert second.heartbeat_details is not None
    assert second.heartbeat_details.to_json() == {"done": 7}
    worker.complete(second, "resumed")
    assert world.result("w") == "resumed"
    replays(world, "w")


def test_schedule_to_close_ends_a_retrying_activity(world: World, worker: Worker) -> None:
    world.start("w", "act.one", {"s2c": 3.5})
    for _ in range(2):
        worker.fail(worker.last("w"))
        fire_next(world, "w")  # retries after 1 s, then 2 s
    worker.fail(worker.last("w"))  # the next retry (4 s) would start after the deadline
    error = world.result("w")["error"]  # type: ignore[index]
    assert (error["timeout"], error["attempt"]) == ("SCHEDULE_TO_CLOSE", 3)
    assert error["message"] == "RuntimeError: boom"
    world.start("v", "act.one", {"s2c": 30, "s2c_start": None})
    worker.start(worker.last("v"))
    timer = fire_next(world, "v")
    assert timer.fire_at == world.history("v")[1].recorded_at + timedelta(seconds=30)
    assert world.result("v")["error"]["timeout"] == "SCHEDULE_TO_CLOSE"  # type: ignore[index]
    replays(world, "w")
    replays(world, "v")


def test_schedule_to_start_ends_an_activity_no_worker_picked_up(
    world: World, worker: Worker
) -> None:
    world.start("w", "act.one", {"s2s": 1})
    fire_next(world, "w")
    assert world.result("w")["error"]["timeout"] == "SCHEDULE_TO_START"  # type: ignore[index]


def test_reports_that_cannot_apply_are_refused_or_dropped(world: World, worker: Worker) -> None:
    world.start("w", "act.one", {})
    task = worker.last("w")
    assert worker.start(task).batch is not None
    assert worker.start(task).is_noop, "a second start report"
    refused = worker.complete(_replace(task, activity_id="nope"), 1)
    assert refused.refusal is not None
    assert refused.refusal.code is RefusalCode.UNKNOWN_ACTIVITY
    worker.complete(task, "done")
    assert worker.complete(task, "done").is_noop, "the same report twice"
    again = worker.fail(task)
    assert again.refusal is not None
    assert again.refusal.code is RefusalCode.STALE_ACTIVITY_REPORT
    assert "has closed" in again.refusal.reason or "ended" in again.refusal.reason


def _replace(task: ActivityTask, **changes: Any) -> ActivityTask:
    import dataclasses

    return dataclasses.replace(task, **changes)


def test_cancelling_the_workflow_reaches_a_running_activity(world: World, worker: Worker) -> None:
    world.start("w", "act.cancellable")
    task = worker.last("w")
    worker.start(task)
    world.cancel("w", "user")
    # the code got CancelledError at its await and let it end the run; the worker is told
    assert world.kinds("w")[-2:] == ["CancelRequested", "WorkflowCancelled"]
    notice = worker.notices("w")[-1]
    assert (notice.activity_id, notice.target_attempt) == (task.activity_id, 0)
    assert not due(world, "w"), "the closed run's activity clocks are disarmed"
    replays(world, "w")


@pytest.mark.parametrize("started", [False, True])
def test_the_runs_cancellation_cancels_its_activities(
    world: World, worker: Worker, started: bool
) -> None:
    world.start("w", "act.cancel_catch")
    task = worker.last("w")
    if started:
        worker.start(task)
    world.cancel("w", "user")
    request = world.history("w")[
        next(
            i
            for i, e in enumerate(world.history("w"))
            if type(e).__name__ == "ActivityCancelRequested"
        )
    ]
    assert request.by_workflow_code is False  # type: ignore[union-attr]
    assert worker.notices("w")[-1].activity_id == task.activity_id
    if started:
        assert "WorkflowCompleted" not in world.kinds("w"), "waits for the worker"
        worker.fail(task, "stopped", error_type="CancelledError", cancelled=True)
    assert world.kinds("w")[-2:] == ["ActivityCancelled", "WorkflowCompleted"]
    error = world.result("w")["error"]  # type: ignore[index]
    assert (error["cancelled"], error["message"]) == (True, "workflow cancelled: user")
    replays(world, "w")


def test_a_cancelled_running_activity_ends_when_its_worker_confirms(
    world: World, worker: Worker
) -> None:
    world.start("w", "act.cancel_own")
    task = worker.last("w")
    worker.start(task)
    world.signal("w", "stop")
    assert world.kinds("w")[-1] == "ActivityCancelRequested"
    assert worker.notices("w")[-1].activity_id == task.activity_id
    worker.fail(task, "cancelled", error_type="CancelledError", cancelled=True)
    assert world.kinds("w")[-2:] == ["ActivityCancelled", "WorkflowCompleted"]
    assert world.result("w")["error"]["cancelled"] is True  # type: ignore[index]
    replays(world, "w")


def test_a_queued_activity_is_cancelled_at_once(world: World, worker: Worker) -> None:
    world.start("w", "act.cancel_own")
    world.signal("w", "stop")
    assert world.kinds("w")[-3:] == [
        "ActivityCancelRequested",
        "ActivityCancelled",
        "WorkflowCompleted",
    ]
    assert world.result("w")["error"]["cancelled"] is True  # type: ignore[index]
    replays(world, "w")


def test_many_activities_at_once(world: World, worker: Worker) -> None:
    world.start("w", "act.fan", 5)
    tasks = worker.tasks("w")
    assert len({t.activity_id for t in tasks}) == 5
    for task in reversed(tasks):
        worker.complete(task, task.input.to_json()[1] * 10)
    assert world.result("w") == [0, 10, 20, 30, 40]
    replays(world, "w")


def test_a_rebuilt_core_rearms_the_activity_clocks_and_takes_the_reports(
    world: World, worker: Worker
) -> None:
    world.start("w", "act.one", {"hb": 3, "s2c_start": 30})
    task = worker.last("w")
    worker.start(task)
    worker.heartbeat(task, {"p": 1})
    rebuilt = EngineCore(make_registry(), writer="test")
    for batch in world.batches:
        rebuilt.apply_batch(batch)
    pending = {r.command.command_id for r in rebuilt.pending_timers()}
    assert pending == {r.command.command_id for r in due(world, "w")}
    world.core = rebuilt
    worker.complete(task, "after rebuild")
    assert world.result("w") == "after rebuild"


def test_activity_calls_without_a_timeout_or_not_an_activity_fail_clearly(world: World) -> None:
    world.start("w", "act.no_timeout")
    failed = world.history("w")[-1]
    assert type(failed).__name__ == "WorkflowFailed"
    assert "start_to_close or schedule_to_close" in failed.error.message  # type: ignore[union-attr]
    world.start("v", "act.not_an_activity")
    assert "@activity.defn" in world.history("v")[-1].error.message  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("workflow_type", "named"),
    [
        ("bad.open", "open('/etc/hostname'"),
        ("bad.sleep", "time.sleep(0.001)"),
        ("bad.urllib", "urllib request to 'http://127.0.0.1:9/'"),
    ],
)
def test_io_in_workflow_code_blocks_the_run_naming_the_call(
    world: World, workflow_type: str, named: str
) -> None:
    world.start("w", workflow_type, "/etc/hostname")
    blocked = world.history("w")[-1]
    assert type(blocked).__name__ == "WorkflowBlocked"  # not failed: a fixed version resumes it
    error = blocked.error  # type: ignore[union-attr]
    assert error.error_type == "SandboxViolation"
    assert named in error.message
    assert "activity" in error.message
    world.start("ok", "fine.print")
    assert world.result("ok") == 1, "the engine keeps serving other workflows; print is fine"


def test_a_caught_violation_still_stops_the_run(world: World, tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    world.start("w", "bad.caught", str(target))
    assert type(world.history("w")[-1]).__name__ == "WorkflowBlocked"
    assert world.history("w")[-1].error.error_type == "SandboxViolation"  # type: ignore[union-attr]
    assert not target.exists()


def test_a_gc_callbacks_io_during_a_step_is_the_processs_not_the_workflows(
    world: World, tmp_path: Path
) -> None:
    # A profiler or APM agent that logs collections to a file: the collector may run it in the
    # middle of workflow code; refusing it there failed whichever workflow allocated then.
    log = tmp_path / "gc.log"

    class Recorder:
        def __call__(self, phase: str, info: dict[str, int]) -> None:
            with log.open("a", encoding="utf-8") as out:
                out.write(f"{phase} {info['generation']}\n")

    def noted(phase: str, info: dict[str, int]) -> None:
        (tmp_path / "noted").write_text(phase, encoding="utf-8")

    callbacks = [Recorder(), noted]
    gc.callbacks.extend(callbacks)
    try:
        world.start("w", "fine.gc")
    finally:
        for callback in callbacks:
            gc.callbacks.remove(callback)
    assert world.result("w") == 2
    assert "stop 2" in log.read_text(encoding="utf-8")
    assert (tmp_path / "noted").read_text(encoding="utf-8") == "stop"
    world.start("v", "bad.open", "/etc/hostname")  # the workflow's own I/O is still refused
    assert world.history("v")[-1].error.error_type == "SandboxViolation"  # type: ignore[union-attr]


def test_the_engines_own_io_outside_workflow_steps_is_untouched(tmp_path: Path) -> None:
    World(make_registry()).start("w", "bad.open", "/etc/hostname")
    (tmp_path / "x").write_text("engine code may write", encoding="utf-8")
    time.sleep(0)
    asyncio.run(asyncio.sleep(0))


def test_every_history_decodes_through_the_codec(world: World, worker: Worker) -> None:
    from aion_common.codecs import Codec

    world.start("w", "act.one", {"hb": 1, "s2c": 100, "s2s": 50})
    worker.start(worker.last("w"))
    worker.heartbeat(worker.last("w"), [1, 2])
    worker.fail(worker.last("w"))
    fire_next(world, "w")
    worker.complete(worker.last("w"), {"ok": True})
    codec = Codec()
    for batch in world.batches:
        assert codec.decode_batch(codec.encode_batch(batch, trusted=True)) == batch
        assert isinstance(batch, EventBatch)
    for _, task in world.tasks:
        assert codec.decode_task(codec.encode_task(task)) == task
