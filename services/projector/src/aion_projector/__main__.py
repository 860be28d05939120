"""``aion-projector``: project ``aion.events`` into the SQL views.

Settings come from the ``AION_*`` environment (``AION_DATABASE_URL`` names the database;
``--database`` overrides it). ``--rebuild`` drops every view and stored offset, recreates the
tables and replays the event log from offset 0, then keeps projecting as usual.
``AION_PROJECTOR_PORT`` (and ``AION_PROJECTOR_HOST``, default 127.0.0.1) opens ``/health``,
``/health/ready`` and ``/metrics`` (see :mod:`aion_projector.health`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aion_common.domain import AionError
from aion_common.runtime.health import HealthEndpoint
from aion_common.runtime.logging import configure_logging
from aion_common.runtime.loop import run as run_loop
from aion_common.settings import Settings, SettingsError
from aion_projector.archive import archive_from_env
from aion_projector.health import ENDPOINT_ENV_PREFIX, ready_lag_from_env, serve
from aion_projector.service import ProjectorService

__all__ = ["build_parser", "main"]

_log = logging.getLogger("aion.projector")


def build_parser() -> argparse.ArgumentParser:
    """The command line; the API's entry point may add its own options to it."""
    parser = argparse.ArgumentParser(prog="aion-projector", description=__doc__)
    parser.add_argument(
        "--rebuild", action="store_true", help="reset every view and replay from offset 0"
    )
    parser.add_argument(
        "--database", metavar="URL", help="SQLAlchemy async URL (default: AION_DATABASE_URL)"
    )
    parser.add_argument("--log-level", default=os.environ.get("AION_LOG_LEVEL", "INFO"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aion-projector`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = Settings.from_env()
        endpoint = HealthEndpoint.from_env(ENDPOINT_ENV_PREFIX)
        ready_lag = ready_lag_from_env()
        archive = archive_from_env()
    except (SettingsError, ValueError) as err:
        _log.error("projector refused to start: %s", err)  # the message is the report
        return 2
    service = ProjectorService(
        settings, database_url=args.database, rebuild=args.rebuild, archive=archive
    )
    try:
        return run_loop(serve(service, endpoint, ready_lag))
    except AionError as err:
        _log.error("projector stopped: %s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
