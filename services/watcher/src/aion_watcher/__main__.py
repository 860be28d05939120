"""``aion-watcher``: run the watcher until SIGTERM/SIGINT.

Settings from ``AION_*`` (``aion_common.settings``) and ``AION_WATCHER_*``
(:class:`~aion_watcher.config.WatcherConfig`); JSON logs to stderr.
"""

from __future__ import annotations

import asyncio
import sys

from aion_common.runtime import configure_logging, run_until_signalled
from aion_common.runtime.debug import install_task_dump
from aion_common.runtime.loop import run as run_loop
from aion_common.settings import Settings
from aion_watcher.config import WatcherConfig
from aion_watcher.service import WatcherService


async def serve() -> int:
    """Build the service inside the running loop (aiokafka clients need one) and run it."""
    install_task_dump(asyncio.get_running_loop())  # SIGUSR1: tasks; SIGUSR2: threads
    service = WatcherService(Settings.from_env(), WatcherConfig.from_env())
    return await run_until_signalled(service)


def main() -> None:
    """Entry point of the ``aion-watcher`` console script."""
    configure_logging()
    sys.exit(run_loop(serve()))


if __name__ == "__main__":
    main()
