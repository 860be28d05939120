"""Signal, cancel and terminate from the UI: a form, a confirmation, then the command.

Each action is two POSTs. The first (``step=review``) validates the form and answers a
confirmation page saying exactly what will be sent; it carries a fresh ``request_id``. The
second (``step=confirm``) sends the command, its id derived from that request id as the JSON
API derives it, so a double click or a re-submitted confirmation is the same command, which
the engine applies once. It answers 303 to the workflow page (post/redirect/get).

Form posts are accepted from this origin only (``Sec-Fetch-Site``/``Origin``): with no token
set, nothing else would stop another site's page from posting a form here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from aion_common.domain import (
    CancelWorkflow,
    Command,
    InfrastructureError,
    InvalidInput,
    Payload,
    SignalWorkflow,
    TerminateWorkflow,
    validate_id,
    validate_name,
)
from aion_projector.api._paths import WORKFLOW
from aion_projector.api._state import ApiState, state
from aion_projector.api._writes import command_id_for
from aion_projector.api.ui._render import render, workflow_url

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
State = Annotated[ApiState, Depends(state)]
Kind = Literal["signal", "cancel", "terminate"]
_MAX_FIELDS = 16
_SAME_SITE = {"same-origin", "none"}
_TITLES = {"signal": "Send a signal", "cancel": "Cancel", "terminate": "Terminate"}


def _cross_site(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in _SAME_SITE
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    return origin.split("://", 1)[-1] != request.headers.get("host", "")


async def _form(request: Request) -> dict[str, str]:
    """The posted ``application/x-www-form-urlencoded`` fields (the body's size is capped by
    the app's guard; a multipart parser would be a dependency for four text fields)."""
    body = (await request.body()).decode("utf-8", "replace")
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except ValueError:
        return {}
    return dict(pairs)


def _command(
    st: ApiState, kind: Kind, workflow_id: str, request_id: str, form: dict[str, str]
) -> Command:
    """The command the form describes; :class:`InvalidInput` says what is wrong with it."""
    now = datetime.now(UTC)
    name, payload, reason = form["name"], form["payload"], form["reason"]
    if kind == "signal":
        validate_name(name, what="signal name")
        try:
            value = orjson.loads(payload) if payload.strip() else None
        except orjson.JSONDecodeError as err:
            raise InvalidInput(f"the payload is not JSON: {err}") from err
        return SignalWorkflow(
            command_id=command_id_for(f"api-signal:{name}", workflow_id, request_id),
            issued_at=now,
            workflow_id=workflow_id,
            name=name,
            payload=Payload.from_json(value, limit=st.settings.payload_limit_bytes),
        )
    if len(reason) > 4096:  # noqa: PLR2004 - the JSON API's limit
        raise InvalidInput("the reason is longer than 4096 characters")
    kind_id = "api-cancel" if kind == "cancel" else "api-terminate"
    command_type = CancelWorkflow if kind == "cancel" else TerminateWorkflow
    return command_type(
        command_id=command_id_for(kind_id, workflow_id, request_id),
        issued_at=now,
        workflow_id=workflow_id,
        reason=reason,
    )


@router.get(f"{WORKFLOW}/actions/{{kind}}", response_class=HTMLResponse)
async def action_form(workflow_id: str, kind: Kind) -> HTMLResponse:
    """The action's form on a page of its own (what the workflow page shows inline)."""
    return _page(workflow_id, kind, step="edit")


def _page(
    workflow_id: str,
    kind: Kind,
    *,
    step: str,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    form = form or {}
    return render(
        "action.html",
        status_code=status_code,
        workflow_id=workflow_id,
        kind=kind,
        title=_TITLES[kind],
        step=step,
        name=form.get("name", ""),
        payload=form.get("payload", ""),
        reason=form.get("reason", ""),
        error=error,
        request_id=str(uuid.uuid4()),
        nav="workflows",
    )


@router.post(f"{WORKFLOW}/actions/{{kind}}", response_class=HTMLResponse)
async def action_post(request: Request, st: State, workflow_id: str, kind: Kind) -> Response:
    """``step=review``: check the form, answer the confirmation; ``step=confirm``: send it,
    then redirect to the workflow page."""
    if _cross_site(request):
        return render("forbidden.html", status_code=403, nav="workflows")
    form = await _form(request)
    step = form.get("step", "review")
    request_id = form.get("request_id", "")
    fields = {k: form.get(k, "") for k in ("name", "payload", "reason")}
    fields["name"] = fields["name"].strip()
    if step not in {"review", "confirm"}:
        step = "review"
    try:
        validate_id(workflow_id)
        if step == "confirm":
            validate_id(request_id, what="request id")
        command = _command(st, kind, workflow_id, request_id or "draft", fields)
    except InvalidInput as err:
        return _page(workflow_id, kind, step="edit", form=fields, error=str(err), status_code=422)
    if step == "review":
        return _page(workflow_id, kind, step="review", form=fields)
    try:
        await st.sink.send(command)
    except InfrastructureError as err:
        message = f"the command could not be queued ({err}); nothing was sent, try again"
        return _page(workflow_id, kind, step="review", form=fields, error=message, status_code=503)
    target = workflow_url(workflow_id, sent=kind, command=command.command_id)
    return RedirectResponse(target, status_code=303)
