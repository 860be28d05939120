"""Ids that hold ``/`` in paths: each path segment is decoded on its own.

A workflow id may hold any printable character, ``/`` included. Clients percent-encode the id
as one path segment (``quote(id, safe="")``: ``a/b`` → ``a%2Fb``), but ASGI servers hand the
app a fully decoded ``path``, where ``/v1/workflows/a%2Fhistory`` (the workflow ``a/history``)
and ``/v1/workflows/a/history`` (the history of ``a``) are the same string. So:

- :class:`SegmentedPaths` (ASGI middleware) rebuilds ``path`` from ``raw_path``, the bytes the
  client sent, decoding each segment separately and re-escaping the two characters that would
  change the routing: ``%`` → ``%25`` and ``/`` → ``%2F``. A path holding neither is unchanged.
- Routes take ids and names as ``{workflow_id:segment}``: the :data:`SEGMENT` convertor
  matches one segment and undoes that escaping.

Without ``raw_path`` (a server that does not send it) the decoded ``path`` is used as it is:
ids with ``/`` then cannot be told apart, as before. Proxies in front of the API must pass
``%2F`` through undecoded (see docs/decisions.md).
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote, unquote, unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SEGMENT", "WORKFLOW", "SegmentedPaths", "escape_segment", "url_segment"]

SEGMENT = "segment"
"""Name of the path convertor for one percent-decoded segment: ``{name:segment}``."""
WORKFLOW = "/workflows/{workflow_id:segment}"
"""The route of one workflow (its sub-resources extend it); importing this module registers
the convertor, which must happen before the routes are declared."""


def url_segment(text: str) -> str:
    """``text`` percent-encoded as one URL path segment (``.`` and ``..`` too), as clients do."""
    if text in {".", ".."}:
        return text.replace(".", "%2E")
    return quote(text, safe="")


def escape_segment(text: str) -> str:
    """``text`` as it appears in the routed path: ``%`` and ``/`` escaped, nothing else."""
    return text.replace("%", "%25").replace("/", "%2F")


class _SegmentConvertor(Convertor[str]):
    regex: ClassVar[str] = "[^/]+"

    def convert(self, value: str) -> str:
        # every '%' in a routed segment starts one of our two escapes, so this is exact
        return unquote(value)

    def to_string(self, value: str) -> str:
        return escape_segment(value)


register_url_convertor(SEGMENT, _SegmentConvertor())


class SegmentedPaths:
    """Rebuilds each HTTP request's ``path`` from ``raw_path`` segment by segment."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw: bytes | None = scope.get("raw_path")
            if raw is not None and b"%" in raw:  # without escapes the decoded path is exact
                scope = dict(scope, path=_routed_path(raw, scope["path"]))
        await self._app(scope, receive, send)


def _routed_path(raw: bytes, decoded: str) -> str:
    segments = (unquote_to_bytes(s).decode("utf-8", "replace") for s in raw.split(b"/"))
    routed = "/".join(escape_segment(s) for s in segments)
    # Trust raw_path only if it decodes to the path the server gave (it always should).
    return routed if unquote(routed) == decoded else decoded
