"""The UI's Jinja2 environment (templates shipped in this package, autoescaped) and the
filters the templates use to show times, statuses and JSON."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from aion_projector.api._paths import url_segment

__all__ = ["compact_json", "environment", "pretty_json", "render", "static_url", "workflow_url"]

_SUMMARY_CHARS = 120


def workflow_url(workflow_id: str, **query: str | None) -> str:
    """The UI page of ``workflow_id`` (one percent-encoded segment, as the API's routes take)."""
    given = {k: v for k, v in query.items() if v is not None}
    suffix = f"?{urlencode(given)}" if given else ""
    return f"/workflows/{url_segment(workflow_id)}{suffix}"


def when(value: datetime | None) -> str:
    """A time as people read it, in UTC (the page says so), to the millisecond."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def iso(value: datetime | None) -> str:
    """A time for ``<time datetime=…>``."""
    return "" if value is None else value.astimezone(UTC).isoformat()


def pretty_json(value: Any) -> str:
    """A JSON value indented for a ``<pre>``."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def compact_json(value: Any, limit: int = _SUMMARY_CHARS) -> str:
    """A JSON value on one line, cut to ``limit`` characters."""
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_text(text: str | None) -> Any:
    """A stored JSON text as its value (None stays None)."""
    return None if text is None else orjson.loads(text)


@cache
def _static_version() -> str:
    digest = hashlib.sha256()
    folder = resources.files("aion_projector.api.ui") / "static"
    for name in sorted(entry.name for entry in folder.iterdir()):
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:12]


def static_url(name: str) -> str:
    """A static file's URL with the files' digest, so a new release is never served stale."""
    return f"/static/{name}?v={_static_version()}"


@cache
def environment() -> Environment:
    """The shared environment: package templates, autoescaped, undefined names fail loudly."""
    env = Environment(
        loader=PackageLoader("aion_projector.api.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
    )
    env.filters.update(
        when=when, iso=iso, pretty_json=pretty_json, compact_json=compact_json, json_text=json_text
    )
    env.globals.update(workflow_url=workflow_url, static_url=static_url)
    return env


def render(
    template: str, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    """``template`` rendered with ``context`` as an HTML response."""
    body = environment().get_template(template).render(**context)
    return HTMLResponse(body, status_code=status_code, headers=headers)
