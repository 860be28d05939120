"""The workflow SDK: what workflow authors import.

```python
from aion_engine import workflow


@workflow.defn("order")
async def run(ctx: workflow.WorkflowContext, order: dict) -> dict:
    payment = await ctx.execute_child("pay", order["total"])
    await ctx.sleep(60)
    return {"paid": payment}
```

Workflow code must be deterministic: time, randomness and ids come from ``ctx``
(``ctx.now()``, ``ctx.random()``, ``ctx.uuid4()``), and only ``ctx`` operations may be
awaited; the engine replays the code against its history and fails a run whose replay
diverges (non-determinism).
"""

from aion_common.domain import ParentClosePolicy
from aion_engine._context import (
    ChildHandle,
    ChildWorkflowFailed,
    SignalTimeout,
    WorkflowContext,
    WorkflowInfo,
)
from aion_engine.registry import (
    WorkflowFn,
    WorkflowRegistry,
    default_registry,
    defn,
    load_modules,
)

__all__ = [
    "ChildHandle",
    "ChildWorkflowFailed",
    "ParentClosePolicy",
    "SignalTimeout",
    "WorkflowContext",
    "WorkflowFn",
    "WorkflowInfo",
    "WorkflowRegistry",
    "default_registry",
    "defn",
    "load_modules",
]
