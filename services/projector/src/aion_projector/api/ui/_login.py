"""``/login`` and ``/logout``: the UI's sign-in when the API requires a token."""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from aion_projector.api._session import SESSION_COOKIE, safe_next, session_value
from aion_projector.api._state import ApiState, state
from aion_projector.api.ui._render import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
State = Annotated[ApiState, Depends(state)]
_MAX_TOKEN = 4096


@router.get("/login", response_class=HTMLResponse)
async def login_form(
    st: State,
    next: Annotated[str, Query(max_length=2048)] = "/",  # noqa: A002 - the field
) -> HTMLResponse:
    """Ask for the API token (or say none is needed)."""
    return render(
        "login.html", needed=st.ui_session is not None, next=safe_next(next), error=None, nav=""
    )


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, st: State) -> Response:
    """Check the token; on success set the session cookie and go where the user was going."""
    body = (await request.body()).decode("utf-8", "replace")
    form = dict(parse_qsl(body, keep_blank_values=True, max_num_fields=4))
    target = safe_next(form.get("next", "/"))
    token = form.get("token", "")[:_MAX_TOKEN]
    expected = st.ui_session
    if expected is None:
        return RedirectResponse(target, status_code=303)
    if not hmac.compare_digest(session_value(token).encode(), expected.encode()):
        return render(
            "login.html",
            status_code=401,
            needed=True,
            next=target,
            error="That is not the API's token.",
            nav="",
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        expected,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    """Forget the session cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
