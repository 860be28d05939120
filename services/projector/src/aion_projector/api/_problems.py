"""RFC 9457 problem details: every error the API answers is ``application/problem+json``.

Each kind of problem has a stable ``type`` URI that clients match on (the message in
``detail`` is for people and may change). Handlers here turn aion's errors, request
validation failures and unexpected exceptions into problems, so no request ever gets an
HTML page or a bare 500 without a body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from aion_common.domain import InfrastructureError, InvalidInput, PayloadTooLarge
from aion_projector.api._models import RefusalOut
from aion_projector.api._writer import WriteUnavailable

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "ProblemError",
    "install_problem_handlers",
]

_log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://aion.dev/problems/"

_TITLES = {
    "invalid-input": "Invalid input",
    "payload-too-large": "Payload too large",
    "not-found": "Not found",
    "command-refused": "Command refused",
    "unknown-query": "Unknown query",
    "query-failed": "Query failed",
    "query-refused": "Query refused",
    "query-timeout": "No answer in time",
    "workflow-blocked": "Workflow blocked",
    "workflow-closed": "Workflow closed",
    "cannot-replay": "Cannot replay",
    "unauthorized": "Unauthorized",
    "method-not-allowed": "Method not allowed",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
    "http": "HTTP error",
}


class Problem(BaseModel):
    """The body of every error answer (RFC 9457)."""

    type: str = Field(description="Stable URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field validation errors, when the request was malformed."
    )
    refusal: RefusalOut | None = Field(
        default=None, description="For ``command-refused``: the engine's refusal."
    )
    known_queries: list[str] | None = Field(
        default=None,
        description="For ``unknown-query``: the queries the run's code has registered.",
    )


class ProblemError(Exception):
    """Raised by a route to answer with a problem of ``kind`` (the last part of its type)."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        refusal: RefusalOut | None = None,
        known_queries: tuple[str, ...] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers
        self.refusal = refusal
        self.known_queries = known_queries


def problem_response(
    status: int,
    kind: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    refusal: RefusalOut | None = None,
    known_queries: tuple[str, ...] = (),
) -> JSONResponse:
    """A ``JSONResponse`` holding the problem ``kind`` with ``detail``."""
    body = Problem(
        type=PROBLEM_BASE + kind,
        title=_TITLES.get(kind, kind.replace("-", " ").capitalize()),
        status=status,
        detail=detail,
        errors=errors,
        refusal=refusal,
        known_queries=list(known_queries) if kind == "unknown-query" else None,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


async def _problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        exc.kind,
        exc.detail,
        headers=exc.headers,
        refusal=exc.refusal,
        known_queries=exc.known_queries,
    )


async def _too_large(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(413, "payload-too-large", str(exc))


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(400, "invalid-input", str(exc))


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    if errors:
        where, message = ".".join(errors[0]["loc"]), str(errors[0]["msg"])
    else:
        where, message = "", "malformed request"
    detail = f"{where}: {message}" if where else message
    return problem_response(422, "invalid-input", detail, errors=errors)


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(
        exc.status_code, "http"
    )
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, kind, str(exc.detail), headers=headers)


async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
    _log.warning("backend unavailable: %s", exc)
    return problem_response(
        503, "unavailable", f"a backend aion needs is unavailable: {type(exc).__name__}"
    )


async def _not_queued(_request: Request, exc: Exception) -> JSONResponse:
    """A command, catalog or schedule write that was not made or not confirmed (a
    ``WriteUnavailable``: ``CommandNotQueued`` is one): its words say which and what to do (the
    generic handler keeps only the type name)."""
    assert isinstance(exc, WriteUnavailable)
    return problem_response(
        503, "unavailable", str(exc), headers={"Retry-After": str(exc.retry_after_s)}
    )


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal", "an unexpected error occurred; see the server log")


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error ``app`` raises with a problem document."""
    app.add_exception_handler(ProblemError, _problem)
    app.add_exception_handler(PayloadTooLarge, _too_large)
    app.add_exception_handler(InvalidInput, _invalid)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(InfrastructureError, _unavailable)
    app.add_exception_handler(WriteUnavailable, _not_queued)
    for unavailable in (OperationalError, InterfaceError, PoolTimeout, ConnectionError):
        app.add_exception_handler(unavailable, _unavailable)
    app.add_exception_handler(Exception, _internal)
