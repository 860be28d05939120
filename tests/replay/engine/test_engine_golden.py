"""Golden histories: the example workflows replayed against committed histories.

A change to ``aion_engine.examples`` that would make a running workflow diverge from its
history fails here with the seq that differs. After an intended change to the engine's
output, regenerate with ``AION_REGENERATE_GOLDEN=1 pytest tests/replay/engine``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aion.workflow import WorkflowContext
from aion_common.domain import (
    EVENT_TYPES,
    Command,
    Event,
    NonDeterminism,
    ParentClosePolicy,
    ParentLink,
    Payload,
    RecordChildTerminal,
    SignalWorkflow,
    StartWorkflow,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowStarted,
    outcome_of,
    record_child_terminal_id,
)
from aion_engine import EngineCore, TimerRequest, load_modules, replay_history
from aion_engine.registry import WorkflowRegistry


def _examples() -> WorkflowRegistry:
    """The engine's shipped example workflows (``aion_engine.examples``)."""
    registry = WorkflowRegistry()
    load_modules(["aion_engine.examples"], registry)
    return registry


GOLDEN = Path(__file__).parent / "golden" / "example_order.json"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_CLASSES = {cls.__name__: cls for cls in EVENT_TYPES}


def _encode(value: object) -> object:
    match value:
        case Payload(data=data):
            return {"payload": data.decode("utf-8")}
        case WorkflowError(message=message, details=details):
            encoded = {"message": message, "details": _encode(details)}
            if value.error_type or value.traceback:
                encoded |= {"error_type": value.error_type, "traceback": _portable(value.traceback)}
            return encoded
        case ParentLink():
            return {
                "workflow_id": value.workflow_id,
                "run_id": value.run_id,
                "close_policy": value.close_policy.value,
            }
        case ParentClosePolicy():
            return value.value
        case datetime():
            return value.isoformat()
        case _:
            return value


def _portable(traceback: str) -> str:
    """A traceback without the checkout's location (``File ".../aion_engine/x.py"``)."""
    return re.sub(r'File "[^"]*/(aion_engine/[^"/]+)"', r'File "\1"', traceback)


def portable(histories: dict[str, list[Event]]) -> dict[str, list[Event]]:
    """``histories`` with every recorded traceback made :func:`_portable`."""

    def one(event: Event) -> Event:
        error = getattr(event, "error", None)
        if isinstance(error, WorkflowError) and error.traceback:
            fixed = dataclasses.replace(error, traceback=_portable(error.traceback))
            return dataclasses.replace(event, error=fixed)  # type: ignore[call-arg]
        return event

    return {wid: [one(e) for e in events] for wid, events in histories.items()}


def event_to_json(event: Event) -> dict[str, object]:
    fields = {f.name: _encode(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return {"type": type(event).__name__, **fields}


def _decode(name: str, value: Any) -> object:  # noqa: PLR0911 - one return per field kind
    if value is None:
        return None
    if name in {"input", "result", "payload"}:
        return Payload(value["payload"].encode("utf-8"))
    if name == "error":
        return WorkflowError(
            message=value["message"],
            details=_decode("payload", value["details"]),
            error_type=value.get("error_type", ""),
            traceback=value.get("traceback", ""),
        )
    if name in {"recorded_at", "fire_at"}:
        return datetime.fromisoformat(value)
    if name == "parent":
        return ParentLink(
            workflow_id=value["workflow_id"],
            run_id=value["run_id"],
            close_policy=ParentClosePolicy(value["close_policy"]),
        )
    if name == "parent_close_policy":
        return ParentClosePolicy(value)
    if name == "carried_children":
        return tuple(value)  # none in these histories: the example order never carries one
    return value


def event_from_json(raw: dict[str, Any]) -> Event:
    cls = _CLASSES[raw["type"]]
    kwargs = {name: _decode(name, value) for name, value in raw.items() if name != "type"}
    return cls(**kwargs)  # type: ignore[return-value]


def run_example() -> dict[str, list[Event]]:
    """Drive the example order through the core, playing clients, watcher and timers."""
    core = EngineCore(_examples(), writer="golden")
    histories: dict[str, list[Event]] = {}
    timers: list[TimerRequest] = []
    queue: deque[Command] = deque()
    now = T0

    def run(command: Command) -> None:
        queue.append(command)
        while queue:
            decision = core.handle(queue.popleft(), now=now)
            assert decision.refusal is None, decision.refusal
            queue.extend(decision.outgoing)
            timers.extend(decision.timers)
            if decision.batch is not None:
                history = histories.setdefault(decision.batch.workflow_id, [])
                history.extend(decision.batch.events)
                queue.extend(_watch(history, decision.batch.events, now))

    spec = {"lines": [10, -5, 7], "approval_timeout": 600, "ship_delay": 60}
    run(
        StartWorkflow(
            command_id="golden-start",
            issued_at=now,
            workflow_id="order-1",
            workflow_type="example.order",
            input=Payload.from_json(spec),
        )
    )
    now += timedelta(seconds=30)
    run(
        SignalWorkflow(
            command_id="golden-approve",
            issued_at=now,
            workflow_id="order-1",
            name="approve",
            payload=Payload.from_json("alice"),
        )
    )
    while timers:
        timers.sort(key=lambda request: request.fire_at)
        request = timers.pop(0)
        now = max(now, request.fire_at)
        run(request.command)
    return histories


def _watch(history: list[Event], events: tuple[Event, ...], now: datetime) -> list[Command]:
    records: list[Command] = []
    for event in events:
        outcome = outcome_of(event)
        if outcome is None or isinstance(event, WorkflowContinuedAsNew):
            continue
        started = next(e for e in reversed(history) if isinstance(e, WorkflowStarted))
        if started.parent is None:
            continue
        parent = started.parent
        records.append(
            RecordChildTerminal(
                command_id=record_child_terminal_id(
                    parent.workflow_id, parent.run_id, event.workflow_id
                ),
                issued_at=now,
                workflow_id=parent.workflow_id,
                parent_run_id=parent.run_id,
                child_workflow_id=event.workflow_id,
                child_run_id=event.run_id,
                outcome=outcome,
            )
        )
    return records


def _load() -> dict[str, list[Event]]:
    raw = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return {wid: [event_from_json(e) for e in events] for wid, events in raw.items()}


def test_regenerate_when_asked() -> None:
    if os.environ.get("AION_REGENERATE_GOLDEN") != "1":
        return
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    histories = run_example()
    encoded = {wid: [event_to_json(e) for e in events] for wid, events in histories.items()}
    GOLDEN.write_text(json.dumps(encoded, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def test_golden_histories_replay_against_the_example_code() -> None:
    histories = _load()
    assert len(histories) == 5  # the order, three payments, the reminder chain
    for history in histories.values():
        replay_history(history, _examples())


def test_golden_order_closed_as_recorded() -> None:
    order = _load()["order-1"]
    last = order[-1]
    assert type(last).__name__ == "WorkflowCompleted"
    result = last.result.to_json()  # type: ignore[union-attr]
    assert result["approval"] == "alice"
    assert result["reminders"] == 3
    assert result["charged"][1] == {"error": "ValueError: cannot charge -5"}


def test_the_engine_still_writes_the_golden_histories() -> None:
    assert portable(run_example()) == _load()


def test_json_round_trip() -> None:
    for history in portable(run_example()).values():
        for event in history:
            assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event


def test_a_changed_order_workflow_is_caught() -> None:
    changed = WorkflowRegistry()

    @changed.defn("example.order")
    async def order(ctx: WorkflowContext, spec: dict[str, Any]) -> None:
        await ctx.sleep(1)  # a new first step: running orders can no longer replay

    with pytest.raises(NonDeterminism) as caught:
        replay_history(_load()["order-1"], changed)
    assert caught.value.seq == 2
    assert "code scheduled TimerScheduled(" in caught.value.detail
