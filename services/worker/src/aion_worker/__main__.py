"""``aion-worker`` (also ``aion worker``): run activities of one task queue until SIGTERM.

Activity modules come from ``--activities MODULE`` (repeatable) and/or ``AION_ACTIVITIES``
(comma-separated); the rest from ``AION_*`` settings and ``AION_WORKER_*``
(:class:`~aion_worker.config.WorkerConfig`). JSON logs to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aion_common.domain import AionError
from aion_common.runtime import configure_logging, run_until_signalled
from aion_common.runtime.loop import run as run_loop
from aion_common.runtime.user_modules import EXIT_USER_CODE
from aion_common.settings import Settings, SettingsError
from aion_worker.config import MAX_CONCURRENT, WorkerConfig, max_concurrent_option
from aion_worker.registry import ActivityRegistry, load_modules
from aion_worker.service import WorkerService

_log = logging.getLogger("aion.worker")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aion worker", description=__doc__)
    parser.add_argument(
        "--activities",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE and run its @activity.defn functions (repeatable)",
    )
    parser.add_argument("--task-queue", metavar="QUEUE", help="task queue (default: default)")
    parser.add_argument(
        "--max-concurrent",
        type=max_concurrent_option,
        metavar="N",
        help=f"attempts running at once (env AION_WORKER_MAX_CONCURRENT; default 100; at most "
        f"{MAX_CONCURRENT})",
    )
    parser.add_argument("--log-level", default=os.environ.get("AION_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--check",
        action="store_true",
        help="only load the activity modules and settings, print the activities and exit "
        f"(0, or {EXIT_USER_CODE} with the reason on stderr)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aion-worker`` console script."""
    args = _parse(argv)
    configure_logging(args.log_level)
    modules = [*args.activities]
    modules += [m.strip() for m in os.environ.get("AION_ACTIVITIES", "").split(",") if m.strip()]
    try:
        settings = Settings.from_env()
        config = WorkerConfig.from_env(
            task_queue=args.task_queue, max_concurrent=args.max_concurrent
        )
        registry = ActivityRegistry()
        names = load_modules(modules, registry)
    except (SettingsError, AionError) as err:
        if args.check:
            print(err, file=sys.stderr)  # noqa: T201 - for people: the text, no JSON
            return EXIT_USER_CODE
        _log.error("worker refused to start: %s", err)  # the message is the report
        return EXIT_USER_CODE
    if args.check:
        print(f"activities: {', '.join(names) or '(none)'}")  # noqa: T201 - its output
        return 0
    if not names:
        _log.warning(
            "no activities loaded: this worker will fail every task it takes "
            "(pass --activities MODULE or set AION_ACTIVITIES)",
            extra={"modules": modules},
        )
    _log.info("activities loaded", extra={"modules": modules, "activities": list(names)})

    async def serve() -> int:
        service = WorkerService(settings, config, registry)
        return await run_until_signalled(service, stop_timeout_s=config.shutdown_grace + 20)

    try:
        code = run_loop(serve())
    except AionError as err:
        _log.error("worker stopped: %s", err)
        code = 1
    # A sync activity abandoned at shutdown may still be running in its thread, and Python
    # joins executor threads at exit: everything that matters is stopped and committed, so
    # exit now instead of waiting for it.
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
