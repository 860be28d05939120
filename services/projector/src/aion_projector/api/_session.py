"""The web UI's sign-in when the API requires a token: a cookie a browser can carry.

Browsers cannot send a bearer header with a link or a form, so with ``AION_API_TOKEN`` set the
UI asks for the token once (``/login``) and keeps a cookie holding an HMAC of it, never the
token itself: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
makes the browser send it, so no cross-site request forgery through it) and ``Secure`` over
HTTPS. The cookie opens the UI's pages only; ``/v1`` stays bearer-only.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SESSION_COOKIE", "is_ui_path", "is_ui_public", "safe_next", "session_value"]

SESSION_COOKIE = "aion_session"
_CONTEXT = b"aion web ui session v1"


def session_value(token: str) -> str:
    """The cookie value that stands for ``token``."""
    return hmac.new(token.encode(), _CONTEXT, hashlib.sha256).hexdigest()


def is_ui_public(path: str) -> bool:
    """The sign-in page and the static files: answered without a token."""
    return path == "/login" or path.startswith("/static/")


def is_ui_path(path: str) -> bool:
    """A path the session cookie opens (everything but the JSON API)."""
    return not path.startswith("/v1/") and path != "/v1"


def safe_next(target: str) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
