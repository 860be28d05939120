"""``aion-watcher``: run the watcher until SIGTERM/SIGINT.

Settings from ``AION_*`` (``aion_common.settings``) and ``AION_WATCHER_*``
(:class:`~aion_watcher.config.WatcherConfig`); JSON logs to stderr. A bad variable is one
logged line and exit 2 (``aion dev`` does not restart it).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aion_common.runtime import configure_logging, run_until_signalled
from aion_common.runtime.debug import install_task_dump
from aion_common.runtime.loop import run as run_loop
from aion_common.runtime.user_modules import EXIT_USER_CODE
from aion_common.settings import Settings, SettingsError
from aion_watcher.config import WatcherConfig
from aion_watcher.service import WatcherService

_log = logging.getLogger("aion.watcher")


async def serve(settings: Settings, config: WatcherConfig) -> int:
    """Build the service inside the running loop (aiokafka clients need one) and run it."""
    install_task_dump(asyncio.get_running_loop())  # SIGUSR1: tasks; SIGUSR2: threads
    return await run_until_signalled(WatcherService(settings, config))


def main() -> None:
    """Entry point of the ``aion-watcher`` console script."""
    configure_logging()
    try:  # before the loop: a bad variable is one line and exit 2, not a traceback
        settings, config = Settings.from_env(), WatcherConfig.from_env()
    except SettingsError as err:
        _log.error("watcher refused to start: %s", err)  # the message is the report
        sys.exit(EXIT_USER_CODE)
    sys.exit(run_loop(serve(settings, config)))


if __name__ == "__main__":
    main()
