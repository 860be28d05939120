"""``aion-scheduler``: start the runs of schedules when they are due, until SIGTERM.

Schedules are created with ``aion schedule create`` (through the API); this process owns them
by partition. Settings from ``AION_*`` and ``AION_SCHEDULER_*``; JSON logs to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aion_common.domain import AionError
from aion_common.runtime import configure_logging, run_until_signalled
from aion_common.runtime.loop import run as run_loop
from aion_common.settings import Settings, SettingsError
from aion_scheduler.options import SchedulerOptions
from aion_scheduler.service import SchedulerService

_log = logging.getLogger("aion.scheduler")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aion-scheduler`` console script."""
    parser = argparse.ArgumentParser(prog="aion-scheduler", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("AION_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = Settings.from_env()
        options = SchedulerOptions.from_env()
    except SettingsError as err:
        _log.error("scheduler refused to start: %s", err)
        return 2

    async def serve() -> int:
        return await run_until_signalled(SchedulerService(settings, options))

    try:
        return run_loop(serve())
    except AionError as err:
        _log.error("scheduler stopped: %s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
