"""``AionClient``: aion's HTTP API from Python, with typed results and errors.

    async with AionClient("http://127.0.0.1:8080") as aion:
        handle = await aion.start("order", {"sku": 1}, id="order-77")
        print(await handle.result(timeout=30))

Every method raises :class:`AionApiError` for a problem the API answered (its ``kind`` is
stable: ``not-found``, ``invalid-input``, …), :class:`AionUnavailable` when the API cannot be
reached and :class:`AionWrongServer` when something else answers at its URL. A start returns
a :class:`WorkflowHandle` bound to the run it opens: its ``result()`` (and ``result(id)`` of
the client that started it) waits for that run, never an earlier run of the same id, and
raises :class:`AionCommandRefused` (code and reason) if the engine refused the start.

Commands (start, signal, cancel, terminate) ride through outages: each carries a request id
(the caller's, or a random one the client makes up), so sending it again is the same command,
which the engine applies once; the client re-sends it on ``503`` (the API could not reach Kafka:
it waits the ``Retry-After`` the API gives, however long it has retried, so a command goes
out again within that long of Kafka's return), ``502``/``504``, connection errors and
timeouts (with capped, jittered backoff), for at most ``retry_for`` seconds (60 by default; 0
turns it off), calling ``on_retry`` (by default a warning on the ``aion.client`` logger)
before each wait.

Commands can also go straight to Kafka, without the API: see :class:`aion.KafkaCommands`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass

import httpcore
import httpx

from aion._errors import (
    AionApiError,
    AionClientError,
    AionCommandRefused,
    AionInvalidRequest,
    AionQueryError,
    AionResultTimeout,
    AionUnavailable,
    AionWorkflowFailed,
    AionWrongServer,
)
from aion._handle import WorkflowHandle
from aion._results import (
    Accepted,
    ArchivedHistory,
    Child,
    CommandStatus,
    HistoryEvent,
    HistoryPage,
    PackageEntry,
    PackageInfo,
    Refusal,
    Route,
    Run,
    Schedule,
    WaitingOn,
    WaitItem,
    WorkflowDescription,
    WorkflowPage,
    WorkflowResult,
    WorkflowSummary,
    WorkflowTree,
)
from aion._schedules import ScheduleCalls, ScheduleList
from aion._stack_home import find_api
from aion_common.domain.outcomes import IdReusePolicy

__all__ = [
    "Accepted",
    "AionApiError",
    "AionClient",
    "AionClientError",
    "AionCommandRefused",
    "AionInvalidRequest",
    "AionQueryError",
    "AionResultTimeout",
    "AionUnavailable",
    "AionWorkflowFailed",
    "AionWrongServer",
    "ArchivedHistory",
    "Child",
    "CommandStatus",
    "HistoryEvent",
    "HistoryPage",
    "IdReusePolicy",
    "PackageEntry",
    "PackageInfo",
    "Refusal",
    "RetryNote",
    "Route",
    "Run",
    "Schedule",
    "ScheduleList",
    "WaitItem",
    "WaitingOn",
    "WorkflowDescription",
    "WorkflowHandle",
    "WorkflowPage",
    "WorkflowResult",
    "WorkflowSummary",
    "WorkflowTree",
]

# The API caps one long-poll at 60 s; longer waits are several polls.
_LONG_POLL_MAX = 60.0
# A query waits this long for the engine's answer by default (the API's own default).
_QUERY_WAIT = 5.0
_QUERY_KINDS = frozenset(
    {
        "unknown-query",
        "query-refused",
        "query-failed",
        "query-timeout",
        "workflow-blocked",
        "workflow-closed",
        "cannot-replay",
    }
)


# The runs a client remembers having started, per workflow id (`result(id)` waits for them).
_REMEMBERED_STARTS = 10_000

# Connections a client keeps to the API: requests beyond this many in flight wait for one.
_MAX_CONNECTIONS = 256
# An idle connection is used again for this long: less than the API server keeps it (5 s,
# uvicorn's default), so a request is never sent on a connection the server is closing at that
# very moment ("Server disconnected without sending a response"); with exactly 5 s, as before,
# one now and then was.
_KEEPALIVE_EXPIRY = 2.0
DEFAULT_RETRY_FOR_S = 60.0
"""How long :class:`AionClient` re-sends a command when no ``retry_for`` is given; the ``aion``
CLI's ``--retry-for`` default too (``aion._cli_options`` takes it from here)."""
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 5.0
_RETRY_JITTER = 0.2
_RETRY_STATUSES = frozenset({502, 503, 504})

_log = logging.getLogger("aion.client")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryNote:
    """What :class:`AionClient` tells ``on_retry`` before it waits to send a command again."""

    what: str
    """The command, e.g. ``signal 'go' to order-1``."""
    request_id: str
    attempt: int
    """Attempts made so far (the next one is ``attempt + 1``)."""
    delay_s: float
    """How long it waits now."""
    waited_s: float
    """Seconds since the first attempt."""
    limit_s: float
    """It gives up once this many seconds have passed (``retry_for``)."""
    reason: str
    """Why the last attempt failed."""

    def describe(self) -> str:
        """One line for a terminal."""
        return (
            f"{self.what}: {self.reason}; retrying in {self.delay_s:.1f} s (attempt "
            f"{self.attempt + 1}, {self.waited_s:.1f} of at most {self.limit_s:.0f} s, "
            f"request id {self.request_id})"
        )


def _log_retry(note: RetryNote) -> None:
    _log.warning("%s", note.describe())


def _segment(text: str) -> str:
    """``text`` as one path segment: every reserved character (``/`` too) percent-encoded.

    The API decodes each segment on its own, so ``a/history`` is one id, not the history of
    ``a``. ``.`` and ``..`` are encoded as well: URL normalisation would remove them.
    """
    if text in {".", ".."}:
        return text.replace(".", "%2E")
    return quote(text, safe="")


def _path(workflow_id: str) -> str:
    return f"/v1/workflows/{_segment(workflow_id)}"


class AionClient(ScheduleCalls):
    """An async client of aion's HTTP API at ``base_url``; ``token`` for bearer auth.

    Without ``base_url``: ``AION_API_URL``, else the ``aion dev`` stack running from the
    working directory or the nearest ``.aion/`` above it, else ``http://127.0.0.1:8080`` (as
    the ``aion`` command finds it).
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_for: float = DEFAULT_RETRY_FOR_S,
        on_retry: Callable[[RetryNote], None] | None = None,
    ) -> None:
        """``timeout`` bounds each request; ``retry_for`` the time a command is re-sent for
        (see the module docstring); ``on_retry`` hears about each wait before a re-send."""
        if base_url is None:
            base_url = os.environ.get("AION_API_URL") or find_api()[0]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        # workflow id -> (start command id, run id) of the newest start sent through this client
        self._starts: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self._retry_for = max(0.0, retry_for)
        self._on_retry = on_retry or _log_retry
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            transport=transport if transport is not None else _default_transport(base_url),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        read_timeout: float | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(
                method,
                path,
                params=query,
                json=json,
                content=content,
                headers=headers,
                timeout=read_timeout or self._timeout,
            )
        except httpx.TransportError as err:
            raise AionUnavailable(
                f"cannot reach the aion API at {self._http.base_url}: {err or type(err).__name__}"
            ) from err
        answered = _foreign(response)
        if answered is not None:
            url = str(self._http.base_url).rstrip("/")
            raise AionWrongServer(url, response.status_code, answered)
        if response.status_code >= 400:  # noqa: PLR2004
            raise _problem(response)
        return response

    async def _command(self, what: str, path: str, body: dict[str, Any]) -> Accepted:
        """POST a command (its body holds ``request_id``), re-sent while the API or Kafka is
        away, for at most ``retry_for`` seconds."""
        request_id = str(body["request_id"])
        began = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return _accepted(await self._call("POST", path, json=body))
            except (AionUnavailable, AionApiError) as err:
                retry_after = _retry_after(err)
                if retry_after is None:
                    raise
                waited = time.monotonic() - began
                remaining = self._retry_for - waited
                # The API's Retry-After, when it gives one, over the client's own backoff: it
                # knows when Kafka is away (2 s) and answers at once meanwhile, and the
                # backoff, grown through an outage, would hold a re-send up to 6 s after it.
                wait = _spread(retry_after) if retry_after > 0 else _backoff(attempt)
                delay = min(wait, remaining)
                if remaining <= 0:
                    raise _gave_up(
                        what,
                        request_id=request_id,
                        attempts=attempt,
                        waited=waited,
                        limit=self._retry_for,
                        last=err,
                    ) from err
                self._on_retry(
                    RetryNote(
                        what=what,
                        request_id=request_id,
                        attempt=attempt,
                        delay_s=delay,
                        waited_s=waited,
                        limit_s=self._retry_for,
                        reason=_reason(err),
                    )
                )
                await asyncio.sleep(delay)

    async def start(
        self,
        workflow_type: str,
        input: Any = None,  # noqa: A002  # the API's field name
        *,
        id: str | None = None,  # noqa: A002
        request_id: str | None = None,
        execution_timeout_ms: int | None = None,
        id_reuse_policy: IdReusePolicy | str | None = None,
        package_version: str | None = None,
    ) -> WorkflowHandle:
        """Start a workflow; the id is generated when not given (from ``request_id`` if set).

        ``id_reuse_policy`` (:class:`IdReusePolicy` or its name) says what happens when the id
        was used before: ``ALLOW_DUPLICATE`` (the default, as Temporal's: a closed id may be
        started again; a running one is refused ``ALREADY_RUNNING``),
        ``ALLOW_DUPLICATE_FAILED_ONLY`` (only if its last run did not complete),
        ``REJECT_DUPLICATE`` (never), ``TERMINATE_IF_RUNNING`` (a running one is terminated
        and the new run started in its place). ``package_version`` pins the run to that
        uploaded version (default: the type's route). Returns a :class:`WorkflowHandle` on the
        run the start opens.
        """
        policy = None if id_reuse_policy is None else IdReusePolicy.parse(id_reuse_policy)
        optional = {
            "id": id,
            "execution_timeout_ms": execution_timeout_ms,
            "id_reuse_policy": None if policy is None else policy.value,
            "package_version": package_version,
        }
        body: dict[str, Any] = {
            "type": workflow_type,
            "input": input,
            "request_id": request_id or _new_request_id(),
        }
        body |= {k: v for k, v in optional.items() if v is not None}
        what = f"start of {workflow_type}" + ("" if id is None else f" as {id}")
        accepted = await self._command(what, "/v1/workflows", body)
        self._remember(accepted)
        return WorkflowHandle(self, accepted)

    def _remember(self, accepted: Accepted) -> None:
        self._starts[accepted.workflow_id] = (accepted.command_id, accepted.run_id)
        self._starts.move_to_end(accepted.workflow_id)
        while len(self._starts) > _REMEMBERED_STARTS:
            self._starts.popitem(last=False)

    def handle(self, workflow_id: str, *, run_id: str | None = None) -> WorkflowHandle:
        """A handle on a workflow started elsewhere: on the chain ``run_id`` began, or (None)
        on whatever run is current when its result is asked for."""
        return WorkflowHandle(self, Accepted(workflow_id=workflow_id, command_id="", run_id=run_id))

    async def signal(
        self, workflow_id: str, name: str, payload: Any = None, *, request_id: str | None = None
    ) -> Accepted:
        """Send signal ``name`` with ``payload`` to the workflow's current run."""
        body = {"payload": payload, "request_id": request_id or _new_request_id()}
        path = f"{_path(workflow_id)}/signals/{_segment(name)}"
        return await self._command(f"signal {name!r} to {workflow_id}", path, body)

    async def signal_with_start(
        self,
        workflow_id: str,
        name: str,
        payload: Any = None,
        *,
        workflow_type: str,
        input: Any = None,  # noqa: A002  # the API's field name
        request_id: str | None = None,
        execution_timeout_ms: int | None = None,
        id_reuse_policy: IdReusePolicy | str | None = None,
        package_version: str | None = None,
    ) -> Accepted:
        """Send signal ``name`` to the workflow's open run, starting a run of
        ``workflow_type`` with ``input`` first when it has none (the new run's code sees the
        signal from its first step). ``id_reuse_policy`` (``ALLOW_DUPLICATE``, the default,
        ``ALLOW_DUPLICATE_FAILED_ONLY``, ``REJECT_DUPLICATE``; an :class:`IdReusePolicy` or its
        name) governs a closed id."""
        policy = None if id_reuse_policy is None else IdReusePolicy.parse(id_reuse_policy)
        start = _compact(
            {
                "type": workflow_type,
                "input": input,
                "execution_timeout_ms": execution_timeout_ms,
                "id_reuse_policy": None if policy is None else policy.value,
                "package_version": package_version,
            }
        )
        start["input"] = input  # null is a valid input
        body = _compact({"payload": payload, "request_id": request_id}) | {"start": start}
        body["payload"] = payload
        path = f"{_path(workflow_id)}/signals/{_segment(name)}"
        return _accepted(await self._call("POST", path, json=body))

    async def cancel(
        self, workflow_id: str, reason: str = "", *, request_id: str | None = None
    ) -> Accepted:
        """Ask the workflow to cancel; its code decides how it ends."""
        body = {"reason": reason, "request_id": request_id or _new_request_id()}
        path = f"{_path(workflow_id)}/cancel"
        return await self._command(f"cancel of {workflow_id}", path, body)

    async def terminate(
        self, workflow_id: str, reason: str = "", *, request_id: str | None = None
    ) -> Accepted:
        """End the workflow's current run at once (it fails with ``terminated:<reason>``)."""
        body = {"reason": reason, "request_id": request_id or _new_request_id()}
        path = f"{_path(workflow_id)}/terminate"
        return await self._command(f"termination of {workflow_id}", path, body)

    async def describe(self, workflow_id: str) -> WorkflowDescription:
        """Status, current run, run chain and children."""
        response = await self._call("GET", _path(workflow_id))
        return WorkflowDescription.from_json(response.json())

    async def list(
        self,
        *,
        workflow_type: str | None = None,
        status: str | None = None,
        parent: str | None = None,
        started_from: str | None = None,
        started_before: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> WorkflowPage:
        """One page of workflows, newest started first (ISO-8601 times)."""
        params = {
            "type": workflow_type,
            "status": status,
            "parent": parent,
            "started_from": started_from,
            "started_before": started_before,
            "limit": limit,
            "cursor": cursor,
        }
        body = (await self._call("GET", "/v1/workflows", params=params)).json()
        return WorkflowPage(
            items=tuple(WorkflowSummary.from_json(w) for w in body["items"]),
            next_cursor=body["next_cursor"],
        )

    async def history(
        self, workflow_id: str, *, from_seq: int = 1, limit: int = 200
    ) -> HistoryPage:
        """Events from ``from_seq`` on, in seq order."""
        params = {"from_seq": from_seq, "limit": limit}
        body = (await self._call("GET", f"{_path(workflow_id)}/history", params=params)).json()
        return HistoryPage(
            workflow_id=body["workflow_id"],
            events=tuple(HistoryEvent.from_json(e) for e in body["events"]),
            next_from_seq=body["next_from_seq"],
        )

    async def archived_history(self, workflow_id: str) -> tuple[ArchivedHistory, ...]:
        """Every purged incarnation of ``workflow_id`` the archive holds, oldest purge first
        (a workflow closed longer than the retention was purged from the views; its history
        was archived first when ``AION_ARCHIVE`` is set). Raises the API's not-found error
        when there is none."""
        path = f"{_path(workflow_id)}/archived-history"
        body = (await self._call("GET", path)).json()
        return tuple(
            ArchivedHistory.from_json(body["workflow_id"], item) for item in body["incarnations"]
        )

    async def tree(self, workflow_id: str, *, depth: int = 3) -> WorkflowTree:
        """The workflow and its descendants, ``depth`` levels down."""
        params = {"depth": depth}
        body = (await self._call("GET", f"{_path(workflow_id)}/tree", params=params)).json()
        return WorkflowTree.from_json(body)

    async def refusals(self, workflow_id: str, *, limit: int = 20) -> tuple[Refusal, ...]:
        """Commands to ``workflow_id`` the engine refused, newest first (empty if none)."""
        path = f"{_path(workflow_id)}/refusals"
        body = (await self._call("GET", path, params={"limit": limit})).json()
        return tuple(Refusal.from_json(r) for r in body["items"])

    async def command_status(
        self, workflow_id: str, command_id: str, *, wait: float = 0.0
    ) -> CommandStatus:
        """Whether the engine applied or refused command ``command_id`` (the id a command
        method answered), waiting up to ``wait`` seconds for one or the other."""
        path = f"{_path(workflow_id)}/commands/{_segment(command_id)}"
        response = await self._call(
            "GET", path, params={"wait": round(wait, 3)}, read_timeout=wait + self._timeout
        )
        return CommandStatus.from_json(response.json())

    async def result(
        self,
        workflow_id: str,
        *,
        wait: float = 0.0,
        command_id: str | None = None,
        run_id: str | None = None,
    ) -> WorkflowResult:
        """The workflow's outcome, waiting up to ``wait`` seconds for it to close.

        Which run: the chain ``run_id`` began, else the newest start of ``workflow_id`` sent
        through this client (so never an earlier run of a reused id), else the current run.
        Returns with ``closed`` false if it is still running when the wait ends (``PENDING``
        with ``pending_reason`` while the start has not been taken), or at once when it is
        blocked (status ``BLOCKED``, ``error_message`` the reason). Raises
        :class:`AionApiError` (``not-found``) if the views have not seen it by then. With
        ``command_id`` (or a start sent through this client), raises
        :class:`AionCommandRefused` if the engine refused that command.
        """
        if command_id is None and run_id is None and workflow_id in self._starts:
            command_id, run_id = self._starts[workflow_id]
        deadline = time.monotonic() + wait
        while True:
            poll = max(0.0, min(_LONG_POLL_MAX, deadline - time.monotonic()))
            response = await self._call(
                "GET",
                f"{_path(workflow_id)}/result",
                params={"wait": round(poll, 3), "command_id": command_id or None, "run_id": run_id},
                read_timeout=poll + self._timeout,
            )
            outcome = WorkflowResult.from_json(response.json())
            if outcome.closed or outcome.status == "BLOCKED" or time.monotonic() >= deadline:
                return outcome
            await asyncio.sleep(0)

    # -- queries -------------------------------------------------------------------------

    async def query(
        self,
        workflow_id: str,
        name: str,
        args: Sequence[Any] = (),
        *,
        run_id: str | None = None,
        wait: float = _QUERY_WAIT,
    ) -> Any:
        """The result of query ``name`` (``@workflow.query``) of the workflow's current run,
        or of ``run_id``, called with ``args``; a closed run is answered by replaying it.

        Raises :class:`AionQueryError` (``unknown-query`` with ``known_queries``,
        ``query-refused``, ``query-failed``, ``workflow-blocked``, ``cannot-replay``,
        ``query-timeout`` when no engine answers within ``wait`` seconds) and
        :class:`AionApiError` ``not-found``.
        """
        answer = await self.query_answer(workflow_id, name, args, run_id=run_id, wait=wait)
        return answer["result"]

    async def query_answer(
        self,
        workflow_id: str,
        name: str,
        args: Sequence[Any] = (),
        *,
        run_id: str | None = None,
        wait: float = _QUERY_WAIT,
    ) -> dict[str, Any]:
        """As :meth:`query`, the whole answer: ``result``, ``run_id`` (the run that answered),
        ``replayed`` (it was closed and replayed), ``last_seq``, ``answered_at``."""
        body = _compact({"args": list(args), "run_id": run_id, "timeout": wait})
        response = await self._call(
            "POST",
            f"{_path(workflow_id)}/queries/{_segment(name)}",
            json=body,
            read_timeout=wait + self._timeout,
        )
        found: dict[str, Any] = response.json()
        return found

    async def waiting(self, workflow_id: str, *, wait: float = _QUERY_WAIT) -> WaitingOn:
        """What the workflow's current run waits on now (children, timers, the signal,
        activities) and the source line its code is suspended at, from the engine (raises
        :class:`AionQueryError` ``query-timeout`` if none answers within ``wait`` seconds)."""
        response = await self._call(
            "GET",
            f"{_path(workflow_id)}/waiting",
            params={"timeout": wait},
            read_timeout=wait + self._timeout,
        )
        return WaitingOn.from_json(response.json())

    # -- versions ------------------------------------------------------------------------

    async def deploy(self, archive: bytes, *, route: bool = False) -> PackageInfo:
        """Upload a package (its zip, :meth:`aion_common.packages.Package.archive`); with
        ``route``, new runs of every type it defines start on it."""
        response = await self._call(
            "POST",
            "/v1/packages",
            params={"route": "true" if route else None},
            content=archive,
            headers={"Content-Type": "application/zip"},
            read_timeout=self._timeout + 30,
        )
        return PackageInfo.from_json(response.json())

    async def packages(self) -> tuple[PackageEntry, ...]:
        """Every uploaded (type, version), with whether it is routed and its open runs."""
        body = (await self._call("GET", "/v1/packages")).json()
        return tuple(PackageEntry.from_json(e) for e in body["items"])

    async def package(self, version: str) -> PackageInfo:
        """One uploaded version."""
        return PackageInfo.from_json((await self._call("GET", f"/v1/packages/{version}")).json())

    async def package_archive(self, version: str) -> bytes:
        """The zip of one uploaded version."""
        return (await self._call("GET", f"/v1/packages/{version}/archive")).content

    async def delete_package(self, workflow_type: str, version: str) -> None:
        """Delete one type of a version; refused (``conflict``) while open runs use it or it
        is the type's route."""
        await self._call("DELETE", f"/v1/packages/{_segment(workflow_type)}/{version}")

    async def routes(self) -> tuple[Route, ...]:
        """The version new runs of each type start on."""
        body = (await self._call("GET", "/v1/routes")).json()
        return tuple(Route.from_json(r) for r in body["items"])

    async def route(self, workflow_type: str, version: str) -> Route:
        """Start new runs of ``workflow_type`` on ``version`` (uploaded, defining the type)."""
        path = f"/v1/routes/{_segment(workflow_type)}"
        return Route.from_json((await self._call("PUT", path, json={"version": version})).json())

    async def move(
        self,
        workflow_id: str,
        version: str,
        *,
        run_id: str | None = None,
        request_id: str | None = None,
    ) -> Accepted:
        """Move the workflow's current (or the given) open run to ``version``; the engine
        moves it only if that code replays its history, and refuses the move otherwise."""
        body: dict[str, Any] = {"version": version, "request_id": request_id or _new_request_id()}
        if run_id is not None:
            body["run_id"] = run_id
        path = f"{_path(workflow_id)}/move"
        return await self._command(f"move of {workflow_id} to {version}", path, body)


def _default_transport(base_url: str) -> httpx.AsyncBaseTransport | None:
    """:class:`_KeepAlivePool`, unless the environment routes ``base_url`` through a proxy
    (then ``None``: httpx's own transport, which honours ``HTTP(S)_PROXY``)."""
    host = urlsplit(base_url).hostname or ""
    if getproxies() and not proxy_bypass(host):
        return None
    return _KeepAlivePool(max_connections=_MAX_CONNECTIONS, keepalive_expiry=_KEEPALIVE_EXPIRY)


class _KeepAlivePool(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections handed out last-in first-out, in O(1) per request.

    httpx's default pool (httpcore's ``AsyncConnectionPool``) rescans every connection and
    every queued request, twice per request, and sets up an event per request (which imports
    ``sniffio`` or fails to, each time): with 32 requests in flight it cost the client about
    2.5 ms of CPU per request — the client, not the API, capped starts at ≈ 350/s. Here a
    request takes the most recently used idle connection (or opens one, up to
    ``max_connections``) and gives it back when its response is closed.

    A request that fails on a *reused* connection before any response arrived — the server
    closed it as the request went out (its keep-alive timer fired), so the request was not
    read — is sent once more on a fresh connection. Every request this client sends may be
    repeated: reads, and commands, which carry their request id.
    """

    def __init__(self, *, max_connections: int, keepalive_expiry: float) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[httpcore.AsyncHTTPConnection] = []
        self._ssl_context: ssl.SSLContext | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the client is closed")
        assert isinstance(request.stream, httpx.AsyncByteStream)  # httpx's contract
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError as err:
            raise httpx.PoolTimeout("no free connection to the API", request=request) from err
        scheme = request.url.raw_scheme
        port = request.url.port or (443 if scheme == b"https" else 80)
        origin = httpcore.Origin(scheme, request.url.raw_host, port)
        try:
            connection, reused = await self._checkout(origin)
            core_request = httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=scheme,
                    host=request.url.raw_host,
                    port=port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        except BaseException:
            self._slots.release()
            raise
        try:
            with _httpx_errors(request):
                response = await connection.handle_async_request(core_request)
        except _STALE_CONNECTION:
            if not (reused and isinstance(request.stream, httpx.ByteStream)):
                await self.give_back(connection)
                raise
            await connection.aclose()  # closed by the server: the slot goes to a fresh one
            connection = self._connect(origin)
            try:
                with _httpx_errors(request):
                    response = await connection.handle_async_request(core_request)
            except BaseException:
                await self.give_back(connection)
                raise
        except BaseException:
            await self.give_back(connection)
            raise
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_PooledStream(self, connection, request, response.stream),
            extensions=response.extensions,
        )

    async def _checkout(self, origin: httpcore.Origin) -> tuple[httpcore.AsyncHTTPConnection, bool]:
        """An idle connection to ``origin`` (and True), or a new one (and False)."""
        while self._idle:
            connection = self._idle.pop()
            usable = connection.can_handle_request(origin) and connection.is_idle()
            if usable and not connection.has_expired():  # expired also when the server hung up
                return connection, True
            await connection.aclose()
        return self._connect(origin), False

    def _connect(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        if origin.scheme == b"https" and self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return httpcore.AsyncHTTPConnection(
            origin, ssl_context=self._ssl_context, keepalive_expiry=self._keepalive_expiry
        )

    async def give_back(self, connection: httpcore.AsyncHTTPConnection) -> None:
        """Keep ``connection`` for the next request if it can serve one; free its slot."""
        try:
            if self._closed or not connection.is_idle():
                await connection.aclose()
            else:
                self._idle.append(connection)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.aclose()


class _PooledStream(httpx.AsyncByteStream):
    """A response body that gives its connection back to the pool once closed."""

    def __init__(
        self,
        pool: _KeepAlivePool,
        connection: httpcore.AsyncHTTPConnection,
        request: httpx.Request,
        stream: AsyncIterable[bytes],
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._request = request
        self._stream = stream
        self._returned = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if self._returned:
            return
        self._returned = True
        try:
            closer = getattr(self._stream, "aclose", None)
            if closer is not None:
                with _httpx_errors(self._request):
                    await closer()
        finally:
            await self._pool.give_back(self._connection)


# What a request sent on a connection the server had just closed fails with: the server hung up
# without answering (h11: "Server disconnected without sending a response"), reset it, or the
# write hit a closed socket.
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

_HTTPCORE_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    # most specific first
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """httpcore's errors as the httpx errors callers catch (``httpx.TransportError``)."""
    try:
        yield
    except Exception as err:
        for core_error, httpx_error in _HTTPCORE_ERRORS:
            if isinstance(err, core_error):
                raise httpx_error(str(err) or type(err).__name__, request=request) from err
        raise


def _new_request_id() -> str:
    return str(uuid.uuid4())


def _retry_after(err: AionUnavailable | AionApiError) -> float | None:
    """How long to wait before re-sending after ``err`` (0: no preference), or None: do not."""
    if isinstance(err, AionUnavailable):
        return 0.0  # refused, reset or timed out: the API may be restarting
    if err.status in _RETRY_STATUSES:
        return err.retry_after or 0.0
    return None


def _spread(delay: float) -> float:
    """``delay`` lengthened by up to the jitter, so the clients of one outage do not all
    re-send at once."""
    return delay * (1 + random.uniform(0, _RETRY_JITTER))  # noqa: S311 - jitter


def _backoff(attempt: int) -> float:
    base: float = min(_RETRY_MAX_S, _RETRY_FIRST_S * 2.0 ** (attempt - 1))
    return base * (1 + random.uniform(-_RETRY_JITTER, _RETRY_JITTER))  # noqa: S311 - jitter


def _reason(err: AionUnavailable | AionApiError) -> str:
    if isinstance(err, AionApiError):
        return f"{err.status} {err.detail}"
    return str(err)


def _gave_up(
    what: str,
    *,
    request_id: str,
    attempts: int,
    waited: float,
    limit: float,
    last: AionUnavailable | AionApiError,
) -> AionUnavailable:
    if attempts > 1:
        tried = (
            f"sent {attempts} times over {waited:.0f} s, re-sent on 503, 502/504, connection "
            f"errors and timeouts for at most {limit:.0f} s"
        )
    else:
        tried = "sent once; retrying is off" if limit == 0 else "sent once"
    return AionUnavailable(
        f"{what} was not confirmed ({tried}); last error: {_reason(last).rstrip('.')}. "
        f"Send it again with request id {request_id} to be sure it is applied (once, "
        "whatever got through before)",
        request_id=request_id,
        attempts=attempts,
    )


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None or k == "payload"}


def _accepted(response: httpx.Response) -> Accepted:
    body = response.json()
    return Accepted(
        workflow_id=body["workflow_id"], command_id=body["command_id"], run_id=body.get("run_id")
    )


# A gateway in front of the API answers these (in its own format) while the API restarts.
_GATEWAY_STATUSES = frozenset({502, 503, 504})
_JSON_TYPES = frozenset({"application/json", "application/problem+json"})
_OWN_BINARY_TYPES = frozenset({"application/zip"})
"""What aion's API answers besides JSON: the package archives it serves."""


def _foreign(response: httpx.Response) -> str | None:
    """What answered, in a few words, when it is not aion's API (which answers JSON, and
    RFC 9457 problems for errors); None when it looks like aion's."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    ok = response.status_code < 400  # noqa: PLR2004
    if response.status_code in _GATEWAY_STATUSES or (ok and media in _OWN_BINARY_TYPES):
        return None  # a proxy's answer while the API restarts; a package's archive
    if media not in _JSON_TYPES:
        if not response.content:
            return "an empty body"
        return "HTML" if "html" in media else media or "a body of no declared type"
    if ok:
        return None
    try:
        body = response.json()
    except ValueError:
        return "a body that is not valid JSON"
    is_problem = isinstance(body, dict) and "type" in body and "title" in body
    return None if is_problem else "JSON that is not an aion problem"


def _problem(response: httpx.Response) -> AionApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    problem = (
        response.status_code,
        str(body.get("type", "about:blank")),
        str(body.get("title", response.reason_phrase)),
        str(body.get("detail", response.text[:200])),
    )
    retry_after = _seconds(response.headers.get("retry-after"))
    refusal = body.get("refusal")
    if problem[1].rsplit("/", 1)[-1] in _QUERY_KINDS:
        known = body.get("known_queries")
        return AionQueryError(
            *problem, known_queries=tuple(str(q) for q in known) if isinstance(known, list) else ()
        )
    if problem[1].endswith("/command-refused") and isinstance(refusal, dict):
        return AionCommandRefused(
            *problem,
            workflow_id=str(refusal.get("workflow_id", "")),
            command_id=str(refusal.get("command_id", "")),
            command_type=str(refusal.get("command_type", "")),
            code=str(refusal.get("code", "")),
            reason=str(refusal.get("reason", "")),
        )
    return AionApiError(*problem, retry_after=retry_after)


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` of delay-seconds (an HTTP date is not honoured: None)."""
    if header is None or not header.strip().isdigit():
        return None
    return float(header.strip())
