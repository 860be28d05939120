"""With ``AION_API_TOKEN`` set, a browser signs in once and carries a cookie; the JSON API
stays bearer-only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from aion_common.settings import Settings
from aion_projector import session_factory
from aion_projector.api import create_app

from .conftest import MemorySink

HTML = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture
async def guarded(ui_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(),
        session_factory=session_factory(ui_engine),
        command_sink=MemorySink(),
        api_token="s3cret",
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://aion.test") as http:
        yield http


async def test_a_browser_signs_in_and_is_sent_back(guarded: httpx.AsyncClient) -> None:
    page = await guarded.get("/workflows/order-1?run=r-o1", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fworkflows%2Forder-1%3Frun%3Dr-o1"
    assert (await guarded.get("/static/aion.css")).status_code == 200
    form = await guarded.get(page.headers["location"])
    assert 'type="password"' in form.text

    wrong = await guarded.post("/login", data={"token": "nope", "next": "/"})
    assert wrong.status_code == 401
    assert "aion_session" not in wrong.headers.get("set-cookie", "")

    signed = await guarded.post("/login", data={"token": "s3cret", "next": "/registry"})
    assert signed.status_code == 303
    assert signed.headers["location"] == "/registry"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "s3cret" not in cookie
    assert (await guarded.get("/registry", headers=HTML)).status_code == 200
    # the cookie opens the pages, not the JSON API
    api = await guarded.get("/v1/workflows")
    assert api.status_code == 401


async def test_no_open_redirect_and_no_cookie_for_scripts(guarded: httpx.AsyncClient) -> None:
    away = await guarded.post("/login", data={"token": "s3cret", "next": "//evil.example/x"})
    assert away.headers["location"] == "/"
    guarded.cookies.clear()
    script = await guarded.get("/", headers={"accept": "application/json"})
    assert script.status_code == 401  # not a browser: a problem, not a redirect
