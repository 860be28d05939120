"""``GET /v1/workflows/{id}/commands/{command_id}``: did the engine apply or refuse a command?

Commands are answered 202 once Kafka holds them; the engine applies or refuses them a moment
later. This is where a client waits for that moment (the ``aion`` CLI does, for up to two
seconds by default), so a typo in a workflow type or a signal to an unknown id is reported
as the refusal it is instead of a silent success. A command that leaves no trace (a second
cancel of a run already asked to cancel) stays PENDING.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from aion_common.domain import validate_id
from aion_projector.api._models import CommandStatusOut, RefusalOut
from aion_projector.api._paths import SEGMENT, WORKFLOW
from aion_projector.api._reads import MAX_WAIT, engine_absence
from aion_projector.api._state import ApiState, state
from aion_projector.queries import command_run, refusal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["commands"])
State = Annotated[ApiState, Depends(state)]
WorkflowId = Annotated[str, Path(min_length=1, max_length=255, description="Workflow id.")]
CommandId = Annotated[str, Path(min_length=1, max_length=255, description="Command id.")]


async def _status(st: ApiState, workflow_id: str, command_id: str) -> CommandStatusOut | None:
    """APPLIED or REFUSED as the views hold it, else None."""
    async with st.sessions() as session:
        refused = await refusal(session, workflow_id, command_id)
        run_id = (
            None if refused is not None else await command_run(session, workflow_id, command_id)
        )
    if refused is not None:
        return CommandStatusOut(
            workflow_id=workflow_id,
            command_id=command_id,
            state="REFUSED",
            refusal=RefusalOut.of(refused),
        )
    if run_id is not None:
        return CommandStatusOut(
            workflow_id=workflow_id, command_id=command_id, state="APPLIED", run_id=run_id
        )
    return None


@router.get(
    f"{WORKFLOW}/commands/{{command_id:{SEGMENT}}}",
    summary="Whether the engine applied or refused a command",
    responses={202: {"model": CommandStatusOut, "description": "Neither yet (PENDING)."}},
)
async def command_status_route(
    st: State,
    response: Response,
    workflow_id: WorkflowId,
    command_id: CommandId,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait.")] = 0,
) -> CommandStatusOut:
    """Long-poll until the command sent to ``workflow_id`` as ``command_id`` (the id a command
    endpoint answered) is APPLIED (an event records it; ``run_id`` is its run) or REFUSED
    (``refusal`` holds the engine's code and reason), or ``wait`` seconds pass: then 202 and
    PENDING, with ``pending_reason`` when no engine is running for the workflow's partition."""
    validate_id(workflow_id)
    validate_id(command_id, what="command id")
    deadline = time.monotonic() + wait
    interval = st.poll_interval
    while True:
        found = await _status(st, workflow_id, command_id)
        if found is not None:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, 0.5)
    response.status_code = 202
    response.headers["Retry-After"] = "1"
    return CommandStatusOut(
        workflow_id=workflow_id,
        command_id=command_id,
        state="PENDING",
        pending_reason=await engine_absence(st, workflow_id),
    )
