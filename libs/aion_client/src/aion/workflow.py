"""The workflow SDK: what workflow code imports.

```python
from aion import activity, workflow


@activity.defn
async def charge(order_id: str, amount: int) -> str:
    ...  # call the payment service; runs on an `aion worker`


@workflow.defn("order")
async def order(ctx: workflow.WorkflowContext, order: dict) -> dict:
    receipt = await ctx.execute_activity(charge, order["id"], order["total"], start_to_close=10)
    await ctx.sleep(60)
    return {"receipt": receipt}
```

``@workflow.query("name")`` on a function defined inside the workflow makes it answer that
query from the workflow's variables (read-only; see :func:`query`).

Workflow code must be deterministic: time, randomness and ids come from ``ctx``
(``ctx.now()``, ``ctx.random()``, ``ctx.uuid4()``), every effect on the world is an activity,
and only ``ctx`` operations may be awaited. The engine replays the code against its history;
a replay that decides differently fails the run with a non-determinism error, and I/O inside
workflow code is refused with :class:`SandboxViolation`.
"""

from aion._failures import (
    ActivityError,
    ApplicationError,
    ChildWorkflowFailed,
    SandboxViolation,
    SignalTimeout,
)
from aion._publish import AvroSchema
from aion._retry import RetryPolicy
from aion._workflow import (
    ActivityHandle,
    ChildHandle,
    WorkflowContext,
    WorkflowDefinition,
    WorkflowInfo,
    definition,
    defn,
    query,
)
from aion_common.domain import ParentClosePolicy

__all__ = [
    "ActivityError",
    "ActivityHandle",
    "ApplicationError",
    "AvroSchema",
    "ChildHandle",
    "ChildWorkflowFailed",
    "ParentClosePolicy",
    "RetryPolicy",
    "SandboxViolation",
    "SignalTimeout",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowInfo",
    "definition",
    "defn",
    "query",
]
