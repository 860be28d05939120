"""aion's web UI: server-rendered pages (Jinja2) over the same views and command sink as the
JSON API, enhanced with htmx (vendored under ``static/``, nothing fetched from elsewhere).

Pages: ``/`` the workflow list (filters, id-prefix search, keyset pages), ``/workflows/{id}``
(status, input, result or error, the run chain, children, what the run waits on and where
its code is suspended, pending timers and activities, history, actions, a query form, live
while it runs), ``/registry`` and ``/dead-letters``. Every page works without JavaScript;
htmx only adds in-place navigation and the live refresh. Routes are left out of the OpenAPI
document (they answer HTML).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from aion_projector.api.ui import _actions, _login, _pages, _query, _workflow

__all__ = ["STATIC_PREFIX", "install_ui"]

STATIC_PREFIX = "/static"


def install_ui(app: FastAPI) -> None:
    """Add the UI's pages and its static files to ``app``."""
    app.include_router(_pages.router)
    app.include_router(_workflow.router)
    app.include_router(_actions.router)
    app.include_router(_query.router)
    app.include_router(_login.router)
    static = resources.files("aion_projector.api.ui") / "static"
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(static)), name="static")
