"""``aion-engine``: run an engine instance.

Workflow modules come from ``--workflows MODULE`` (repeatable) and/or ``AION_WORKFLOWS``
(comma-separated); everything else from the ``AION_*`` settings. ``AION_ENGINE_PORT`` (and
``AION_ENGINE_HOST``, default 127.0.0.1) opens ``/health``, ``/health/ready`` and ``/metrics``
(see :mod:`aion_engine.health`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aion_common.domain import AionError
from aion_common.runtime.health import HealthEndpoint
from aion_common.runtime.logging import configure_logging
from aion_common.settings import Settings, SettingsError
from aion_engine.health import ENDPOINT_ENV_PREFIX, serve
from aion_engine.registry import default_registry, load_modules
from aion_engine.service import EngineService

_log = logging.getLogger("aion.engine")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aion-engine", description=__doc__)
    parser.add_argument(
        "--workflows",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE to register its workflows (repeatable)",
    )
    parser.add_argument("--max-resident", type=int, default=10_000, help="resident coroutines")
    parser.add_argument("--log-level", default=os.environ.get("AION_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aion-engine`` console script."""
    args = _parse(argv)
    configure_logging(args.log_level)
    modules = [*args.workflows]
    modules += [m.strip() for m in os.environ.get("AION_WORKFLOWS", "").split(",") if m.strip()]
    try:
        settings = Settings.from_env()
        endpoint = HealthEndpoint.from_env(ENDPOINT_ENV_PREFIX)
        types = load_modules(modules, default_registry)
    except (SettingsError, AionError) as err:
        _log.error("engine refused to start: %s", err)  # the message is the report
        return 2
    _log.info("workflow types loaded", extra={"modules": modules, "workflow_types": list(types)})
    service = EngineService(settings, default_registry, max_resident=args.max_resident)
    try:
        code = asyncio.run(serve(service, endpoint, settings.instance_id))
    except AionError as err:
        _log.error("engine stopped: %s", err)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
