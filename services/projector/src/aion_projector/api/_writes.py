"""Command endpoints: start, signal, cancel, terminate — each becomes one command on Kafka.

Answers are 202: the command is durably queued, and the engine applies it asynchronously. A
command the engine refuses (a signal to a closed workflow, say) is answered on the replies
topic, not here; the projector stores those refusals, and ``GET .../refusals`` lists them, or
``GET .../result?command_id=<the command_id answered here>`` waits for the command's outcome
and answers a refusal as a 409 ``command-refused`` problem.

Command ids derive from ``request_id`` when one is given, so a client that retries a request
after a timeout sends the same command, which the engine applies once (``aion.KafkaCommands``
derives them the same way).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Response

from aion_common.domain import (
    CancelWorkflow,
    Command,
    IdReusePolicy,
    Payload,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
    TerminateWorkflow,
    derive_id,
    start_run_id,
    validate_id,
    validate_name,
)
from aion_projector.api._models import Accepted, ReasonRequest, SignalRequest, StartRequest
from aion_projector.api._paths import SEGMENT, WORKFLOW, url_segment
from aion_projector.api._state import ApiState, state

__all__ = ["DEFAULT_TERMINATE_REASON", "command_id_for", "router"]

router = APIRouter(prefix="/v1", tags=["commands"])
State = Annotated[ApiState, Depends(state)]
WorkflowId = Annotated[str, Path(min_length=1, max_length=255, description="Workflow id.")]
SignalName = Annotated[str, Path(min_length=1, max_length=128, description="Signal name.")]
SignalBody = Annotated[SignalRequest | None, Body()]
ReasonBody = Annotated[ReasonRequest | None, Body()]
DEFAULT_TERMINATE_REASON = "no reason given (sent through the API)"
_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "The command is queued for the engine."}
}


def command_id_for(kind: str, workflow_id: str, request_id: str | None) -> str:
    """The id of a ``kind`` command to ``workflow_id``: derived from ``request_id`` (so a retry
    is the same command), random without one. The web UI's actions use it too."""
    if request_id is None:
        return str(uuid.uuid4())
    validate_id(request_id, what="request id")
    return derive_id(kind, workflow_id, request_id)


async def _send(st: ApiState, response: Response, command: Command) -> Accepted:
    await st.sink.send(command)
    # ids may hold any printable character ('/' too); headers are latin-1: percent-encode
    response.headers["Location"] = f"/v1/workflows/{url_segment(command.workflow_id)}"
    run_id = None
    if isinstance(command, StartWorkflow):
        run_id = start_run_id(command.workflow_id, command.command_id)
    return Accepted(workflow_id=command.workflow_id, command_id=command.command_id, run_id=run_id)


@router.post("/workflows", status_code=202, responses=_ACCEPTED, summary="Start a workflow")
async def start_route(st: State, body: StartRequest, response: Response) -> Accepted:
    """Queue a ``StartWorkflow``. Without ``id`` the workflow id is generated: derived from
    ``request_id`` when given (a retry names the same workflow), random otherwise."""
    workflow_type = validate_name(body.type, what="workflow type")
    if body.request_id is not None:
        validate_id(body.request_id, what="request id")
        command_id = derive_id("api-start", body.request_id)
        default_id = derive_id("api-start-workflow", body.request_id)
    else:
        command_id = default_id = str(uuid.uuid4())
    workflow_id = validate_id(body.id) if body.id is not None else default_id
    command = StartWorkflow(
        command_id=command_id,
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        input=Payload.from_json(body.input, limit=st.settings.payload_limit_bytes),
        execution_timeout_ms=body.execution_timeout_ms,
        package_version=body.package_version or "",
        id_reuse_policy=body.id_reuse_policy,
    )
    return await _send(st, response, command)


@router.post(
    f"{WORKFLOW}/signals/{{name:{SEGMENT}}}",
    status_code=202,
    responses=_ACCEPTED,
    summary="Signal a workflow",
)
async def signal_route(
    *,
    st: State,
    workflow_id: WorkflowId,
    name: SignalName,
    response: Response,
    body: SignalBody = None,
) -> Accepted:
    """Queue a ``SignalWorkflow`` delivering ``payload`` to the current run; with ``start``,
    a ``SignalWithStartWorkflow`` (start the workflow first when it has no open run)."""
    validate_id(workflow_id)
    validate_name(name, what="signal name")
    body = body or SignalRequest()
    limit = st.settings.payload_limit_bytes
    command: Command
    if body.start is not None:
        start = body.start
        command = SignalWithStartWorkflow(
            command_id=command_id_for(
                f"api-signal-with-start:{name}", workflow_id, body.request_id
            ),
            issued_at=datetime.now(UTC),
            workflow_id=workflow_id,
            workflow_type=validate_name(start.type, what="workflow type"),
            input=Payload.from_json(start.input, limit=limit),
            signal_name=name,
            signal_payload=Payload.from_json(body.payload, limit=limit),
            execution_timeout_ms=start.execution_timeout_ms,
            id_reuse_policy=IdReusePolicy(start.id_reuse_policy),
            package_version=start.package_version or "",
        )
        return await _send(st, response, command)
    command = SignalWorkflow(
        command_id=command_id_for(f"api-signal:{name}", workflow_id, body.request_id),
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        name=name,
        payload=Payload.from_json(body.payload, limit=st.settings.payload_limit_bytes),
    )
    return await _send(st, response, command)


@router.post(
    f"{WORKFLOW}/cancel",
    status_code=202,
    responses=_ACCEPTED,
    summary="Request cancellation",
)
async def cancel_route(
    st: State, workflow_id: WorkflowId, response: Response, body: ReasonBody = None
) -> Accepted:
    """Queue a ``CancelWorkflow``: the workflow's own code decides how it ends."""
    validate_id(workflow_id)
    body = body or ReasonRequest()
    command = CancelWorkflow(
        command_id=command_id_for("api-cancel", workflow_id, body.request_id),
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        reason=body.reason,
    )
    return await _send(st, response, command)


@router.post(
    f"{WORKFLOW}/terminate",
    status_code=202,
    responses=_ACCEPTED,
    summary="Terminate a workflow",
)
async def terminate_route(
    st: State, workflow_id: WorkflowId, response: Response, body: ReasonBody = None
) -> Accepted:
    """Queue a ``TerminateWorkflow``: the current run ends at once as TERMINATED (its error is
    ``terminated:<reason>``; without a reason, one saying it came through the API)."""
    validate_id(workflow_id)
    body = body or ReasonRequest()
    command = TerminateWorkflow(
        command_id=command_id_for("api-terminate", workflow_id, body.request_id),
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        reason=body.reason or DEFAULT_TERMINATE_REASON,
    )
    return await _send(st, response, command)
