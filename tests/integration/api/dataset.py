"""A small, fixed set of workflows projected into real views through ``Projection.apply``.

- ``order-1``: completed with ``{"total": 42}`` after a signal; it scheduled two children,
  ``pay-1`` (completed) and ``ship-1`` (failed), and ``pay-1`` scheduled ``audit-1``.
- ``order-2``: failed (``boom``, details ``{"code": 7}``, a ``ValueError`` with
  :data:`TRACEBACK`).
- ``loop-1``: continued-as-new once, its second run still running.
- ``order-3``: running; ``order-0`` … : filler for pagination (``FILLER`` of them).
- refusals (:data:`REFUSALS`): a second start of ``order-1`` (``ID_REUSE_REJECTED``) and a
  start of ``ghost-1``, a workflow that never existed (``UNKNOWN_WORKFLOW_TYPE``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    CommandRefused,
    EventBatch,
    ParentClosePolicy,
    ParentLink,
    Payload,
    RefusalCode,
    SignalReceived,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowStarted,
)
from aion_projector import Delivery, Projection
from aion_projector.projection import record_refusals

TOPIC = "aion.events"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FILLER = 12
TRACEBACK = (
    'Traceback (most recent call last):\n  File "orders.py", line 7, in order\nValueError: boom\n'
)
Spec = tuple[type[Any], dict[str, Any]]


class Script:
    """Hands out batches as the engine would append them to partition 0."""

    def __init__(self) -> None:
        self.seqs: dict[str, int] = defaultdict(int)
        self.runs: dict[str, str] = {}
        self.offset = 0
        self.tick = 0
        self.deliveries: list[Delivery] = []

    def batch(self, workflow_id: str, *events: Spec) -> None:
        """Append one record holding ``events`` for ``workflow_id``."""
        self.tick += 1
        now = T0 + timedelta(seconds=self.tick)
        command_id = f"cmd-{workflow_id}-{self.seqs[workflow_id] + 1}"
        built = []
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
        batch = EventBatch(
            workflow_id=workflow_id, command_id=command_id, writer="engine-1", events=tuple(built)
        )
        self.deliveries.append((0, self.offset, batch))
        self.offset += 1


def started(
    run_id: str,
    workflow_type: str = "order",
    *,
    parent: tuple[str, str] | None = None,
    first_run_id: str | None = None,
    previous_run_id: str | None = None,
) -> Spec:
    link = None if parent is None else ParentLink(workflow_id=parent[0], run_id=parent[1])
    return WorkflowStarted, {
        "run_id": run_id,
        "workflow_type": workflow_type,
        "input": Payload.from_json({"run": run_id}),
        "first_run_id": first_run_id or run_id,
        "previous_run_id": previous_run_id,
        "parent": link,
        "package_version": "1.0.0",
    }


def scheduled(child_id: str, child_type: str) -> Spec:
    return ChildWorkflowScheduled, {
        "child_workflow_id": child_id,
        "child_workflow_type": child_type,
        "input": Payload.from_json({}),
        "parent_close_policy": ParentClosePolicy.TERMINATE,
        "start_command_id": f"start-{child_id}",
    }


def build() -> list[Delivery]:
    """Every delivery of the data set, in append order."""
    s = Script()
    for n in range(FILLER):
        s.batch(f"filler-{n:02d}", started(f"fr-{n}", "filler"))
    s.batch("order-1", started("r-o1"))
    s.batch("order-1", scheduled("pay-1", "payment"), scheduled("ship-1", "shipping"))
    s.batch("pay-1", started("r-p1", "payment", parent=("order-1", "r-o1")))
    s.batch("pay-1", scheduled("audit-1", "audit"))
    s.batch("audit-1", started("r-a1", "audit", parent=("pay-1", "r-p1")))
    s.batch("ship-1", started("r-s1", "shipping", parent=("order-1", "r-o1")))
    s.batch("pay-1", (WorkflowCompleted, {"result": Payload.from_json({"paid": True})}))
    s.batch("ship-1", (WorkflowFailed, {"error": WorkflowError(message="no truck", details=None)}))
    s.batch(
        "order-1",
        (ChildWorkflowCompleted, {"child_workflow_id": "pay-1", "result": Payload.from_json(1)}),
    )
    s.batch(
        "order-1",
        (
            ChildWorkflowFailed,
            {"child_workflow_id": "ship-1", "error": WorkflowError(message="no truck")},
        ),
    )
    s.batch("order-1", (SignalReceived, {"name": "go", "payload": Payload.from_json({"s": 1})}))
    s.batch("order-1", (WorkflowCompleted, {"result": Payload.from_json({"total": 42})}))
    s.batch("order-2", started("r-o2"))
    s.batch(
        "order-2",
        (
            WorkflowFailed,
            {
                "error": WorkflowError(
                    message="boom",
                    details=Payload.from_json({"code": 7}),
                    error_type="ValueError",
                    traceback=TRACEBACK,
                )
            },
        ),
    )
    s.batch("loop-1", started("r-l1", "loop"))
    s.batch(
        "loop-1",
        (
            WorkflowContinuedAsNew,
            {"input": Payload.from_json({"n": 2}), "workflow_type": None, "next_run_id": "r-l2"},
        ),
    )
    s.batch("loop-1", started("r-l2", "loop", first_run_id="r-l1", previous_run_id="r-l1"))
    s.batch("order-3", started("r-o3"))
    return s.deliveries


REFUSALS = (
    CommandRefused(
        command_id="cmd-order-1-again",
        workflow_id="order-1",
        command_type="StartWorkflow",
        code=RefusalCode.ID_REUSE_REJECTED,
        reason="workflow id 'order-1' was used by run 'r-o1'",
        refused_at=T0 + timedelta(hours=1),
    ),
    CommandRefused(
        command_id="cmd-ghost",
        workflow_id="ghost-1",
        command_type="StartWorkflow",
        code=RefusalCode.UNKNOWN_WORKFLOW_TYPE,
        reason="no workflow type 'nope' is registered",
        refused_at=T0 + timedelta(hours=2),
    ),
)


async def populate(sessions: Any) -> None:
    """Project the data set into the views ``sessions`` opens."""
    async with sessions() as session:
        await Projection(TOPIC).apply(session, build())
    async with sessions() as session, session.begin():
        await record_refusals(session, [(0, i, r) for i, r in enumerate(REFUSALS)])
