"""Replay a recorded history against workflow code: the golden-history check for tests and CI.

```python
from aion_engine import replay_history

replay_history(history, registry)  # raises NonDeterminism if the code no longer matches
```
"""

from __future__ import annotations

from collections.abc import Sequence

from aion_common.domain import Event, InvalidInput, WorkflowStarted, check_history
from aion_engine._replay import replay_run
from aion_engine.registry import WorkflowRegistry

__all__ = ["replay_history"]


def replay_history(history: Sequence[Event], registry: WorkflowRegistry) -> None:
    """Replay every run of one workflow's ``history``; raise on any divergence.

    Raises :class:`~aion_common.domain.NonDeterminism` naming the seq where the code's
    decisions differ, :class:`~aion_common.domain.InvariantViolation` for a malformed history,
    and :class:`~aion_common.domain.InvalidInput` for a workflow type the registry lacks.
    """
    check_history(history)
    starts = [index for index, event in enumerate(history) if isinstance(event, WorkflowStarted)]
    for begin, end in zip(starts, [*starts[1:], len(history)], strict=True):
        started = history[begin]
        assert isinstance(started, WorkflowStarted)
        fn = registry.get(started.workflow_type)
        if fn is None:
            raise InvalidInput(f"workflow type {started.workflow_type!r} is not registered")
        replay_run(fn, history[begin:end]).close()
