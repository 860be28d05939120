"""The FastAPI application: routes, problem handlers, bearer auth, metrics and health."""

from __future__ import annotations

import hmac
import time
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aion_common.kafka.link import BrokerLink
from aion_common.packages import DEFAULT_PACKAGE_LIMIT
from aion_common.settings import Settings
from aion_projector.api import _command_status, _queries, _reads, _schedules, _versions, _writes
from aion_projector.api._answers import QueryDesk
from aion_projector.api._catalog import VersionCatalog
from aion_projector.api._cluster import ClusterView
from aion_projector.api._endings import RunEndings
from aion_projector.api._models import Health
from aion_projector.api._paths import SegmentedPaths
from aion_projector.api._problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    install_problem_handlers,
    problem_response,
)
from aion_projector.api._schedules import ScheduleStore
from aion_projector.api._session import SESSION_COOKIE, is_ui_path, is_ui_public, session_value
from aion_projector.api._sink import CommandSink
from aion_projector.api._state import ApiState
from aion_projector.api.ui import install_ui
from aion_projector.archive import Archive
from aion_projector.one_hop import OneHopTransactions

__all__ = ["OPEN_PATHS", "create_app"]

OPEN_PATHS = frozenset(
    {"/health", "/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs", "/redoc"}
)
"""Paths answered without a token even when bearer auth is on."""

PACKAGES_PATH = "/v1/packages"
_PROBLEM_STATUSES = ("400", "401", "404", "413", "422", "500", "503")
# Headroom over the payload limit for the JSON around it and escaping.
_BODY_OVERHEAD = 64 * 1024


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "aion_api_requests",
            "HTTP requests answered, by route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "aion_api_request_seconds",
            "Time to answer an HTTP request (long-polls included).",
            ("method", "route"),
            registry=self.registry,
        )


def create_app(
    settings: Settings,
    *,
    session_factory: async_sessionmaker[AsyncSession],
    command_sink: CommandSink,
    api_token: str | None = None,
    poll_interval: float = 0.1,
    cluster_view: ClusterView | None = None,
    catalog: VersionCatalog | None = None,
    package_limit: int = DEFAULT_PACKAGE_LIMIT,
    query_desk: QueryDesk | None = None,
    archive: Archive | None = None,
    kafka_link: BrokerLink | None = None,
    schedules: ScheduleStore | None = None,
    run_endings: RunEndings | None = None,
    one_hop: OneHopTransactions | None = None,
) -> FastAPI:
    """The aion HTTP API over the views ``session_factory`` reads and the ``command_sink``.

    ``api_token`` turns on bearer auth for everything but :data:`OPEN_PATHS`. The caller owns
    the lifecycle of the sessions' engine, of the sink and of ``cluster_view`` (which the web
    UI's registry page reads; see :func:`run_api`) and of ``query_desk`` (where queries are
    asked; without one they answer 503). The web UI is served at ``/``.
    ``kafka_link`` (the sink's) makes ``/health/ready`` report whether commands can be queued.
    ``run_endings`` wakes result long-polls when the run they wait for ends (without it they
    poll the views every ``poll_interval``, doubling up to a second). ``one_hop`` (on an SQLite
    file) runs a result wait's reads of the views in one thread hop.
    """
    app = FastAPI(
        title="aion",
        version="0.1.0",
        description="Query aion's workflow views and send commands to its engine.",
    )
    app.state.aion = ApiState(
        settings=settings,
        sessions=session_factory,
        sink=command_sink,
        poll_interval=poll_interval,
        cluster=cluster_view,
        ui_session=None if api_token is None else session_value(api_token),
        catalog=catalog,
        package_limit=package_limit,
        queries=query_desk,
        archive=archive,
        schedules=schedules,
        endings=run_endings,
        one_hop=one_hop,
    )
    install_problem_handlers(app)
    app.include_router(_reads.router)
    app.include_router(_writes.router)
    app.include_router(_versions.router)
    app.include_router(_command_status.router)
    app.include_router(_queries.router)
    app.include_router(_schedules.router)
    install_ui(app)
    metrics = _Metrics()
    _add_health_and_metrics(app, session_factory, metrics, kafka_link)
    _add_middleware(app, settings, metrics, api_token, package_limit)
    _customise_openapi(app, bearer=api_token is not None)
    return app


def _add_health_and_metrics(
    app: FastAPI,
    sessions: async_sessionmaker[AsyncSession],
    metrics: _Metrics,
    link: BrokerLink | None,
) -> None:
    @app.get("/health", tags=["operations"], summary="Database check: reads can be served")
    async def health() -> Health:
        """200 when the API can query its database; 503 problem otherwise. Reads keep being
        served while Kafka is away, so this is what a load balancer should route on."""
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
        return Health(status="ok")

    @app.get("/health/live", tags=["operations"], summary="Liveness")
    async def live() -> Health:
        """200 while the process answers at all."""
        return Health(status="ok")

    @app.get(
        "/health/ready",
        tags=["operations"],
        summary="Readiness: the database answers and commands can reach Kafka",
        response_class=JSONResponse,
    )
    async def ready() -> JSONResponse:
        """200 when the database answers and the Kafka cluster does; else 503 with
        ``not_ready`` saying why (reads may still be served: see ``/health``)."""
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
        reason = None if link is None else link.not_ready_reason()
        body: dict[str, Any] = {"status": "ok" if reason is None else "unavailable"}
        body["ready"] = reason is None
        if link is not None:
            body["kafka"] = link.report()
        if reason is not None:
            body["not_ready"] = reason
        return JSONResponse(body, status_code=200 if reason is None else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Request counts and latencies in the Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_middleware(
    app: FastAPI, settings: Settings, metrics: _Metrics, token: str | None, package_limit: int
) -> None:
    expected = None if token is None else f"Bearer {token}".encode()
    session = None if token is None else session_value(token).encode()
    max_body = settings.payload_limit_bytes * 2 + _BODY_OVERHEAD
    app.add_middleware(
        _Guard,
        metrics=metrics,
        expected=expected,
        session=session,
        max_body=max_body,
        # a package upload may be larger than a command's body; its route says by how much
        package_body=max(max_body, package_limit + _BODY_OVERHEAD),
    )
    app.add_middleware(SegmentedPaths)  # outermost: every route sees ids with '/' intact


class _Guard:
    """Bearer auth, the body size cap and request metrics, as plain ASGI middleware.

    Not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs every request
    through an extra task group and memory streams, which showed up in the start latency.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: _Metrics,
        expected: bytes | None,
        session: bytes | None,
        max_body: int,
        package_body: int,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._expected = expected
        self._session = session
        self._max_body = max_body
        self._package_body = package_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        refusal = self._refusal(scope)
        try:
            if refusal is None:
                await self._app(scope, receive, send_noting_status)
            else:
                await refusal(scope, receive, send_noting_status)
        finally:
            # the router stores the matched route in the (shared) scope
            template = getattr(scope.get("route"), "path_format", "<unmatched>")
            method = scope["method"]
            self._metrics.requests.labels(method, template, str(status)).inc()
            self._metrics.latency.labels(method, template).observe(time.perf_counter() - started)

    def _signed_in(self, path: str, headers: Headers) -> bool:
        """A UI page asked for with the sign-in cookie (see ``_session``)."""
        if self._session is None or not is_ui_path(path):
            return False
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:
            return False
        morsel = cookie.get(SESSION_COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self._session)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        path = scope["path"]
        if self._expected is not None and path not in OPEN_PATHS and not is_ui_public(path):
            given = headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._expected) and not self._signed_in(
                path, headers
            ):
                if is_ui_path(path) and "text/html" in headers.get("accept", ""):
                    query = scope.get("query_string", b"").decode("latin-1")
                    target = f"{path}?{query}" if query else path
                    login = f"/login?{urlencode({'next': target})}"
                    return RedirectResponse(login, status_code=303)
                return problem_response(
                    401,
                    "unauthorized",
                    "a valid bearer token is required (Authorization: Bearer <AION_API_TOKEN>)",
                    headers={"WWW-Authenticate": 'Bearer realm="aion"'},
                )
        length = headers.get("content-length")
        cap = self._package_body if path == PACKAGES_PATH else self._max_body
        if length is not None and length.isdigit() and int(length) > cap:
            return problem_response(
                413, "payload-too-large", f"request body of {length} bytes exceeds {cap}"
            )
        return None


def _customise_openapi(app: FastAPI, *, bearer: bool) -> None:
    """Declare the problem responses every operation may give, and the bearer scheme."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        problem = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status in _PROBLEM_STATUSES:
                    if status == "401" and (not bearer or path in OPEN_PATHS):
                        continue
                    responses[status] = {"description": "A problem.", "content": problem}
        if bearer:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema.get("paths", {}).items():
                if path not in OPEN_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
