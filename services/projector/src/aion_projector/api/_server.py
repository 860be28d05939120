"""Running the API as a process: wiring from settings, then uvicorn until a signal stops it."""

from __future__ import annotations

import os
from collections.abc import Mapping

import uvicorn

from aion_common.kafka.catalog import CATALOG_RECORD_BYTES
from aion_common.packages import DEFAULT_PACKAGE_LIMIT
from aion_common.settings import Settings, SettingsError
from aion_projector.api._answers import KafkaQueryDesk
from aion_projector.api._app import create_app
from aion_projector.api._catalog import KafkaCatalog
from aion_projector.api._cluster import KafkaClusterView
from aion_projector.api._sink import KafkaCommandSink
from aion_projector.archive import archive_from_env
from aion_projector.database import connect, migrate, session_factory

__all__ = ["run_api"]


async def run_api(
    settings: Settings, host: str = "127.0.0.1", port: int = 8080, *, api_token: str | None = None
) -> None:
    """Serve the API on ``host:port`` until SIGINT/SIGTERM; closes the sink and database after.

    The bearer token defaults to ``AION_API_TOKEN`` (auth is off when neither is set). The
    views' schema is migrated first (idempotent), so the API may start before the projector.
    """
    token = api_token if api_token is not None else os.environ.get("AION_API_TOKEN") or None
    package_limit = package_limit_from_env(os.environ)
    engine = connect(settings.database_url)
    sink = KafkaCommandSink(settings)
    cluster = KafkaClusterView(settings)
    catalog = KafkaCatalog(settings)
    desk = KafkaQueryDesk(settings, sink)
    try:
        await migrate(engine)
        await sink.start()
        await cluster.start()
        await catalog.start()
        await desk.start()
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
        )
        config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False)
        await uvicorn.Server(config).serve()
    finally:
        try:
            await desk.stop()
            await catalog.stop()
            await cluster.stop()
        finally:
            await sink.stop()
            await engine.dispose()


def package_limit_from_env(environ: Mapping[str, str]) -> int:
    """``AION_PACKAGE_LIMIT_BYTES``: the largest package archive an upload may be."""
    raw = environ.get("AION_PACKAGE_LIMIT_BYTES", "").strip()
    if not raw:
        return DEFAULT_PACKAGE_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= CATALOG_RECORD_BYTES // 2:
        raise SettingsError(
            f"AION_PACKAGE_LIMIT_BYTES={raw!r}: expected bytes, 1 to {CATALOG_RECORD_BYTES // 2}"
        )
    return int(raw)
