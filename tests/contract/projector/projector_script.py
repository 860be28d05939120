"""Builds event batches for projector tests: seqs, run ids, times and offsets filled in."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    EventBatch,
    ParentClosePolicy,
    ParentLink,
    Payload,
    SignalReceived,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowPurged,
    WorkflowStarted,
)
from aion_projector.schema import Base

TOPIC = "aion.events"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Script:
    """Hands out batches the way the engine would append them to one partition."""

    partition: int = 0
    writer: str = "engine-1"
    seqs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    runs: dict[str, str] = field(default_factory=dict)
    offset: int = 0
    tick: int = 0

    def _now(self) -> datetime:
        self.tick += 1
        return T0 + timedelta(seconds=self.tick)

    def batch(
        self, workflow_id: str, *events: tuple[type[Any], dict[str, Any]]
    ) -> tuple[int, int, EventBatch]:
        """One record holding ``events`` (class, own fields) for ``workflow_id``."""
        built = []
        command_id = f"cmd-{workflow_id}-{self.seqs[workflow_id] + 1}"
        now = self._now()
        for cls, fields in events:
            if cls is WorkflowStarted:
                self.runs[workflow_id] = fields["run_id"]
            self.seqs[workflow_id] += 1
            envelope = {
                "workflow_id": workflow_id,
                "run_id": self.runs[workflow_id],
                "seq": self.seqs[workflow_id],
                "recorded_at": now,
                "command_id": command_id,
            }
            built.append(cls(**{**envelope, **fields}))
        delivery = (
            self.partition,
            self.offset,
            EventBatch(
                workflow_id=workflow_id,
                command_id=command_id,
                writer=self.writer,
                events=tuple(built),
            ),
        )
        self.offset += 1
        return delivery


def started(
    run_id: str,
    workflow_type: str = "order",
    *,
    first_run_id: str | None = None,
    previous_run_id: str | None = None,
    parent: tuple[str, str] | None = None,
    value: object = None,
) -> tuple[type[Any], dict[str, Any]]:
    link = None if parent is None else ParentLink(workflow_id=parent[0], run_id=parent[1])
    return WorkflowStarted, {
        "run_id": run_id,
        "workflow_type": workflow_type,
        "input": Payload.from_json({"in": value}),
        "first_run_id": first_run_id or run_id,
        "previous_run_id": previous_run_id,
        "parent": link,
        "package_version": "1.0.0",
    }


def completed(result: object) -> tuple[type[Any], dict[str, Any]]:
    return WorkflowCompleted, {"result": Payload.from_json(result)}


def failed(message: str, details: object = None) -> tuple[type[Any], dict[str, Any]]:
    payload = None if details is None else Payload.from_json(details)
    return WorkflowFailed, {"error": WorkflowError(message=message, details=payload)}


def continued(next_run_id: str) -> tuple[type[Any], dict[str, Any]]:
    return WorkflowContinuedAsNew, {
        "input": Payload.from_json({"n": 1}),
        "workflow_type": None,
        "next_run_id": next_run_id,
    }


def signal(name: str = "go") -> tuple[type[Any], dict[str, Any]]:
    return SignalReceived, {"name": name, "payload": Payload.from_json({"s": name})}


def child_scheduled(child_id: str, child_type: str = "child") -> tuple[type[Any], dict[str, Any]]:
    return ChildWorkflowScheduled, {
        "child_workflow_id": child_id,
        "child_workflow_type": child_type,
        "input": Payload.from_json({}),
        "parent_close_policy": ParentClosePolicy.TERMINATE,
        "start_command_id": f"start-{child_id}",
    }


def child_completed(child_id: str, result: object) -> tuple[type[Any], dict[str, Any]]:
    return ChildWorkflowCompleted, {
        "child_workflow_id": child_id,
        "result": Payload.from_json(result),
    }


def child_failed(child_id: str, message: str) -> tuple[type[Any], dict[str, Any]]:
    return ChildWorkflowFailed, {
        "child_workflow_id": child_id,
        "error": WorkflowError(message=message),
    }


async def dump(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every projector table, every row, in primary-key order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            result = await connection.execute(text(f"SELECT * FROM {table.name} ORDER BY {keys}"))
            tables[table.name] = [tuple(row) for row in result]
    return tables


def purged(reason: str = "retention ran out") -> tuple[type[Any], dict[str, Any]]:
    return WorkflowPurged, {"reason": reason}
