"""The engine's side of queries, played in memory: a desk that answers each query with a
function of it (for the API's and the UI's query tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aion_common.domain import Payload, QueryAnswer, QueryStatus, QueryWorkflow

__all__ = ["MemoryDesk", "answered", "refused"]

Respond = Callable[[QueryWorkflow], QueryAnswer | None]


def answered(query: QueryWorkflow, result: object, **extra: object) -> QueryAnswer:
    return QueryAnswer(
        command_id=query.command_id,
        workflow_id=query.workflow_id,
        name=query.name,
        status=QueryStatus.ANSWERED,
        message="",
        answered_at=datetime.now(UTC),
        run_id=query.run_id or "run-x",
        result=Payload.from_json(result),
        **extra,  # type: ignore[arg-type]
    )


def refused(
    query: QueryWorkflow, status: QueryStatus, message: str, **extra: object
) -> QueryAnswer:
    return QueryAnswer(
        command_id=query.command_id,
        workflow_id=query.workflow_id,
        name=query.name,
        status=status,
        message=message,
        answered_at=datetime.now(UTC),
        **extra,  # type: ignore[arg-type]
    )


@dataclass
class MemoryDesk:
    """Answers each query with ``respond``; keeps what was asked."""

    respond: Respond
    asked: list[QueryWorkflow] = field(default_factory=list)

    async def ask(self, query: QueryWorkflow, within: float) -> QueryAnswer | None:
        assert within > 0
        self.asked.append(query)
        return self.respond(query)
