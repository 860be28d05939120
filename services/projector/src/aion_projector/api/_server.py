"""Running the API as a process: wiring from settings, then uvicorn until a signal stops it."""

from __future__ import annotations

import os
from collections.abc import Mapping

import uvicorn

from aion_common.kafka.catalog import CATALOG_RECORD_BYTES
from aion_common.packages import DEFAULT_PACKAGE_LIMIT
from aion_common.runtime.loop import http_implementation
from aion_common.settings import Settings, whole_from_env
from aion_projector.api._answers import KafkaQueryDesk
from aion_projector.api._app import create_app
from aion_projector.api._catalog import KafkaCatalog
from aion_projector.api._cluster import KafkaClusterView
from aion_projector.api._endings import KafkaRunEndings
from aion_projector.api._schedules import KafkaSchedules
from aion_projector.api._sink import DEFAULT_PRODUCE_TIMEOUT_S, KafkaCommandSink
from aion_projector.archive import archive_from_env
from aion_projector.database import connect, migrate, session_factory
from aion_projector.one_hop import OneHopTransactions, one_hop_url

__all__ = ["KEEP_ALIVE_S", "PRODUCE_TIMEOUT_ENV", "produce_timeout_from_env", "run_api"]

KEEP_ALIVE_S = 5
"""How long the server keeps an idle connection (uvicorn's default, stated): ``AionClient``
keeps its idle connections for less, so it never sends on one the server is closing."""
PRODUCE_TIMEOUT_ENV = "AION_API_PRODUCE_TIMEOUT_MS"


def produce_timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """``AION_API_PRODUCE_TIMEOUT_MS``: longest wait for Kafka's acknowledgement of a command
    before the API answers 503 (default 5000, half the clients' 10 s default timeout)."""
    source = os.environ if env is None else env
    default_ms = round(DEFAULT_PRODUCE_TIMEOUT_S * 1000)
    ms = whole_from_env(
        source,
        PRODUCE_TIMEOUT_ENV,
        default_ms,
        minimum=1,
        maximum=120_000,
        what="whole milliseconds",
        why="2 min; the clients give up on a request after 10 s by default",
    )
    return ms / 1000


async def run_api(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    api_token: str | None = None,
    produce_timeout_s: float | None = None,
) -> None:
    """Serve the API on ``host:port`` until SIGINT/SIGTERM; closes the sink and database after.

    The bearer token defaults to ``AION_API_TOKEN`` (auth is off when neither is set), the
    produce timeout to ``AION_API_PRODUCE_TIMEOUT_MS`` (5 s). The views' schema is migrated
    first (idempotent), so the API may start before the projector; it starts without Kafka
    too (commands are answered 503 until the cluster answers).
    """
    token = api_token if api_token is not None else os.environ.get("AION_API_TOKEN") or None
    package_limit = package_limit_from_env(os.environ)
    timeout_s = produce_timeout_s if produce_timeout_s is not None else produce_timeout_from_env()
    engine = connect(settings.database_url)
    sink = KafkaCommandSink(settings, produce_timeout_s=timeout_s)
    cluster = KafkaClusterView(settings)
    catalog = KafkaCatalog(settings, link=sink.link, produce_timeout_s=timeout_s)
    desk = KafkaQueryDesk(settings, sink)
    schedules = KafkaSchedules(settings, link=sink.link, produce_timeout_s=timeout_s)
    endings = KafkaRunEndings(settings)
    one_hop_target = one_hop_url(settings.database_url)
    one_hop = None if one_hop_target is None else OneHopTransactions(one_hop_target)
    try:
        await migrate(engine)
        await sink.start()
        await cluster.start()
        await catalog.start()
        await desk.start()
        await schedules.start()
        await endings.start()
        app = create_app(
            settings,
            session_factory=session_factory(engine),
            command_sink=sink,
            api_token=token,
            cluster_view=cluster,
            catalog=catalog,
            package_limit=package_limit,
            query_desk=desk,
            archive=archive_from_env(),
            schedules=schedules,
            kafka_link=sink.link,
            run_endings=endings,
            one_hop=one_hop,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_S,
            http=http_implementation(),  # httptools beside uvloop (decision 59)
        )
        await uvicorn.Server(config).serve()
    finally:
        try:
            await desk.stop()
            await endings.stop()
            await schedules.stop()
            await catalog.stop()
            await cluster.stop()
        finally:
            await sink.stop()
            await engine.dispose()
            if one_hop is not None:
                one_hop.dispose()


def package_limit_from_env(environ: Mapping[str, str]) -> int:
    """``AION_PACKAGE_LIMIT_BYTES``: the largest package archive an upload may be."""
    return whole_from_env(
        environ,
        "AION_PACKAGE_LIMIT_BYTES",
        DEFAULT_PACKAGE_LIMIT,
        minimum=1,
        maximum=CATALOG_RECORD_BYTES // 2,
        what="a whole number of bytes",
        why="the packages topic takes records of up to 16 MiB",
    )
