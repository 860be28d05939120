"""Queries and "waiting on" in the UI: a query form on the workflow page (read-only, so no
confirmation) and the live "Waiting on" section, each asked of the engine through the same
code as the JSON API (:mod:`aion_projector.api._queries`).

htmx asks for fragments (``HX-Request``), which answer 200 even when the engine did not (the
fragment says why: htmx leaves 5xx answers unswapped); without JavaScript the same routes
answer whole pages with the problem's status.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse

from aion_common.domain import InvalidInput
from aion_projector.api._paths import WORKFLOW
from aion_projector.api._problems import ProblemError
from aion_projector.api._queries import ask, query_args, waiting
from aion_projector.api._state import ApiState, state
from aion_projector.api.ui._actions import _cross_site, _form
from aion_projector.api.ui._render import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
State = Annotated[ApiState, Depends(state)]
_UI_WAIT_S = 5.0


def _fragment(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


@router.post(f"{WORKFLOW}/query", response_class=HTMLResponse)
async def query_post(request: Request, st: State, workflow_id: str) -> HTMLResponse:
    """Run a query from the form and show its answer (or why there is none)."""
    if _cross_site(request):
        return render("forbidden.html", status_code=403, nav="workflows")
    form = await _form(request)
    name, args_text = form.get("name", "").strip(), form.get("args", "")
    run_id = form.get("run", "").strip() or None
    context: dict[str, Any] = {
        "workflow_id": workflow_id,
        "name": name,
        "args": args_text,
        "run": run_id or "",
    }
    status_code = 200
    try:
        args = query_args(args_text)
        answer = await ask(st, workflow_id, name, args, run_id=run_id, within=_UI_WAIT_S)
    except InvalidInput as err:
        context |= {"error": str(err), "kind": "invalid-input"}
        status_code = 422
    except ProblemError as err:
        context |= {"error": err.detail, "kind": err.kind, "known": err.known_queries}
        status_code = err.status
    else:
        assert answer.result is not None
        context |= {"answer": answer, "result": answer.result.to_json()}
    if _fragment(request):
        return render("_query_answer.html", **context)
    return render("query.html", status_code=status_code, nav="workflows", **context)


@router.get(f"{WORKFLOW}/waiting", response_class=HTMLResponse)
async def waiting_page(request: Request, st: State, workflow_id: str) -> HTMLResponse:
    """What the current run waits on now, and where its code is suspended."""
    context: dict[str, Any] = {"workflow_id": workflow_id}
    status_code = 200
    try:
        context["found"] = await waiting(st, workflow_id, within=_UI_WAIT_S)
    except (ProblemError, InvalidInput) as err:
        context["error"] = err.detail if isinstance(err, ProblemError) else str(err)
        status_code = err.status if isinstance(err, ProblemError) else 400
    if _fragment(request):
        return render("_waiting.html", **context)
    return render("waiting.html", status_code=status_code, nav="workflows", **context)
