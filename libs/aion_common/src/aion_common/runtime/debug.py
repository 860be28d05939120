"""``SIGUSR1`` logs every asyncio task of the process with its stack (the engine and the
watcher install it): a live process's answer to "what is it waiting for?", which ``py-spy
dump`` cannot give (it sees only the thread's stack, idle in the selector, not the suspended
coroutines). ``SIGUSR2`` writes every thread's
Python stack to stderr (:mod:`faulthandler`, from a C signal handler): the answer when the
event loop itself is blocked and cannot log the task dump."""

from __future__ import annotations

import asyncio
import faulthandler
import io
import logging
import signal

__all__ = ["install_task_dump", "task_dump"]

_log = logging.getLogger("aion.debug")


def task_dump() -> str:
    """Every task of the running loop, each with its coroutine stack, as text."""
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    out.write(f"{len(tasks)} tasks\n")
    for task in tasks:
        task.print_stack(limit=20, file=out)
    return out.getvalue()


def install_task_dump(loop: asyncio.AbstractEventLoop) -> None:
    """Log :func:`task_dump` on ``SIGUSR1`` (the main thread's loop only); every thread's
    stack to stderr on ``SIGUSR2``."""
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: _log.warning("asyncio task dump", extra={"dump": task_dump()})
    )
    faulthandler.register(signal.SIGUSR2, all_threads=True)
