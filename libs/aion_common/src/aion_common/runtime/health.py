"""Health and metrics over HTTP for any aion service, and the probe that checks them.

:class:`HealthServer` serves four read-only paths on ``asyncio.start_server`` (two probes and a
scrape do not justify a web framework):

- ``/health`` and ``/health/live`` — liveness: 200 while the report's ``ok`` is true, else 503;
- ``/health/ready`` — readiness: 200 while ``ok`` and ``ready`` (``ready`` defaults to ``ok``);
- ``/metrics`` — the Prometheus text exposition of the registry, when one is given.

A blocked event loop answers nothing at all, which a probe's timeout reports as a failure: the
server runs on the service's own loop on purpose.

:class:`MonitoredService` wraps a :class:`~aion_common.runtime.lifecycle.Service` and records
its phase, so a report can say "alive" (starting or running) and "running" (``start()``
returned and ``run()`` has not). :func:`serve_monitored` runs a service with the endpoint
beside it. ``python -m aion_common.runtime.health URL`` exits 0 when ``URL`` answers 2xx, so a
container health check needs no curl in the image.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from aion_common.runtime.lifecycle import Service, run_until_signalled
from aion_common.settings import MAX_PORT, port_from_env

__all__ = [
    "LIVE_PATHS",
    "METRICS_PATH",
    "READY_PATH",
    "HealthEndpoint",
    "HealthServer",
    "MonitoredService",
    "Phase",
    "main",
    "probe",
    "serve_monitored",
]

LIVE_PATHS = ("/health", "/health/live")
READY_PATH = "/health/ready"
METRICS_PATH = "/metrics"
_DEFAULT_HOST = "127.0.0.1"

Report = Mapping[str, object]


class HealthServer:
    """Serves the health paths and ``/metrics`` on ``host:port`` (port 0: any free port)."""

    def __init__(
        self,
        health: Callable[[], Report],
        registry: CollectorRegistry | None = None,
        *,
        host: str,
        port: int,
    ) -> None:
        """``health()`` returns the JSON body; its ``ok`` and ``ready`` fields pick the status."""
        self._health = health
        self._registry = registry
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        if self._server is None:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def respond(self, path: str) -> tuple[str, str, bytes]:
        """Status line, content type and body for a GET of ``path``."""
        if path == METRICS_PATH and self._registry is not None:
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path in LIVE_PATHS or path == READY_PATH:
            report = dict(self._health())
            ok = bool(report.get("ok"))
            if path == READY_PATH:
                ok = ok and bool(report.get("ready", ok))
            status = "200 OK" if ok else "503 Service Unavailable"
            return status, "application/json", json.dumps(report, default=str).encode()
        return "404 Not Found", "text/plain", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
            status, ctype, body = self.respond(path)
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that hung up or never spoke: nothing to answer
        finally:
            writer.close()


class Phase(enum.Enum):
    """Where a monitored service is in its lifecycle."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class MonitoredService:
    """A :class:`Service` that records its phase; pass it to ``run_until_signalled``."""

    def __init__(self, service: Service) -> None:
        """Wrap ``service``; every call is delegated unchanged."""
        self.service = service
        self._phase = Phase.CREATED
        self.error: BaseException | None = None

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._phase

    @property
    def alive(self) -> bool:
        """Starting or running: the liveness answer."""
        return self._phase in (Phase.STARTING, Phase.RUNNING)

    @property
    def running(self) -> bool:
        """``start()`` returned and ``run()`` has neither returned nor been asked to stop."""
        return self._phase is Phase.RUNNING

    async def start(self) -> None:
        """Delegate; a failure marks the service failed."""
        self._phase = Phase.STARTING
        await self._guard(self.service.start())
        if self._phase is Phase.STARTING:
            self._phase = Phase.RUNNING

    async def run(self) -> None:
        """Delegate; the phase leaves RUNNING when ``run()`` returns or raises."""
        await self._guard(self.service.run())
        if self._phase is Phase.RUNNING:
            self._phase = Phase.STOPPED

    async def stop(self) -> None:
        """Delegate; a failed service stays FAILED so the report keeps the reason."""
        if self._phase is not Phase.FAILED:
            self._phase = Phase.STOPPING
        await self.service.stop()
        if self._phase is Phase.STOPPING:
            self._phase = Phase.STOPPED

    async def _guard(self, step: Awaitable[None]) -> None:
        try:
            await step
        except BaseException as err:
            self._phase, self.error = Phase.FAILED, err
            raise

    def report(self) -> dict[str, object]:
        """The generic part of a health body: ``ok`` (alive), ``phase``, ``error``."""
        body: dict[str, object] = {"ok": self.alive, "phase": self._phase.value}
        if self.error is not None:
            body["error"] = repr(self.error)
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthEndpoint:
    """Where a service serves health and metrics; port 0 means no endpoint (opt-in)."""

    port: int = 0
    host: str = _DEFAULT_HOST

    def __post_init__(self) -> None:
        if not 0 <= self.port <= MAX_PORT:
            raise ValueError(f"health port {self.port}: expected 0..{MAX_PORT}")

    @property
    def enabled(self) -> bool:
        """Whether an endpoint is wanted at all."""
        return self.port != 0

    @classmethod
    def from_env(cls, prefix: str, env: Mapping[str, str] | None = None) -> HealthEndpoint:
        """Read ``{prefix}_PORT`` and ``{prefix}_HOST`` (e.g. ``AION_ENGINE_PORT``).

        Raises :class:`~aion_common.settings.SettingsError` naming the variable when it is bad.
        """
        source = os.environ if env is None else env
        port = port_from_env(source, f"{prefix}_PORT")
        return cls(port=port, host=source.get(f"{prefix}_HOST", _DEFAULT_HOST))


async def serve_monitored(
    monitored: MonitoredService,
    endpoint: HealthEndpoint,
    report: Callable[[], Report],
    registry: CollectorRegistry | None = None,
    *,
    runner: Callable[[Service], Awaitable[int]] = run_until_signalled,
) -> int:
    """Run ``monitored`` with ``runner`` and, when ``endpoint`` is enabled, serve its health.

    The endpoint opens before ``start()`` (so a long start answers live but not ready) and
    closes after ``stop()``. Without an endpoint the wrapped service runs as it is. Returns
    the runner's exit code.
    """
    if not endpoint.enabled:
        return await runner(monitored.service)
    server = HealthServer(report, registry, host=endpoint.host, port=endpoint.port)
    await server.start()
    try:
        return await runner(monitored)
    finally:
        await server.stop()


def probe(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url``: its status and body (a connection failure is status 0)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r}: expected an http:// URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310  # scheme checked
            return int(answer.status), answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


def main(argv: list[str] | None = None) -> int:
    """``python -m aion_common.runtime.health URL``: exit 0 on 2xx, 1 otherwise."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m aion_common.runtime.health URL\n")
        return 2
    status, body = probe(args[0])
    sys.stderr.write(f"{status} {body.strip()}\n")
    return 0 if 200 <= status < 300 else 1  # noqa: PLR2004


if __name__ == "__main__":
    sys.exit(main())
