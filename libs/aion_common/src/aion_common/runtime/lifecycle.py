"""Run a service until SIGTERM or SIGINT, then stop it within a bounded time.

A service has an explicit lifecycle (as aiokafka's clients): :meth:`Service.start` connects,
:meth:`Service.run` does the work until stopped, :meth:`Service.stop` makes ``run`` return and
releases everything — and is idempotent, because both a signal and a crash may call it.

:func:`run_until_signalled` is what a service's ``__main__`` calls. On the first signal it
calls ``stop()`` and waits up to ``stop_timeout_s`` for ``run()`` to return, then cancels it.
A signal that arrives while ``start()`` is still waiting (for a broker that is away, say)
cancels ``start()`` and stops the service. A second signal exits the process at once (an
operator pressing Ctrl-C twice means it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "EXIT_OK",
    "EXIT_STOP_TIMEOUT",
    "Service",
    "run_until_signalled",
]

EXIT_OK = 0
EXIT_STOP_TIMEOUT = 1
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DEFAULT_STOP_TIMEOUT_S = 30.0

_log = logging.getLogger(__name__)


class Service(Protocol):
    """Anything :func:`run_until_signalled` can run."""

    async def start(self) -> None:
        """Connect and prepare; raise if the service cannot run."""

    async def run(self) -> None:
        """Work until :meth:`stop` is called (then return) or a fatal error (then raise)."""

    async def stop(self) -> None:
        """Make :meth:`run` return and release resources; calling it again does nothing."""


async def run_until_signalled(
    service: Service,
    *,
    stop_timeout_s: float = _DEFAULT_STOP_TIMEOUT_S,
    hard_exit: Callable[[int], object] = os._exit,
) -> int:
    """Start ``service``, run it until it returns or a signal arrives; return an exit code.

    ``EXIT_OK`` when ``run()`` returned (on its own or after a signal's ``stop()``);
    ``EXIT_STOP_TIMEOUT`` when it had to be cancelled after ``stop_timeout_s``. An exception
    from ``start()`` or ``run()`` propagates after ``stop()``: crash, and let the supervisor
    restart. ``hard_exit`` (``os._exit``) is called with ``128 + signum`` on a second signal.
    """
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()

    def on_signal(signum: int) -> None:
        if signalled.is_set():
            _log.warning("second signal: exiting now", extra={"signal": signum})
            hard_exit(128 + signum)
            return
        _log.info("signal received: stopping", extra={"signal": signum})
        signalled.set()

    for signum in _SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        if not await _start(service, signalled):
            return EXIT_OK
        return await _run(service, signalled, stop_timeout_s)
    finally:
        try:
            await asyncio.wait_for(service.stop(), stop_timeout_s)
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)


async def _start(service: Service, signalled: asyncio.Event) -> bool:
    """Run ``start()`` unless a signal comes first (then cancel it); whether it completed."""
    starting = asyncio.create_task(service.start(), name="service.start")
    waiting = asyncio.create_task(signalled.wait(), name="service.signal")
    try:
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if starting.done():
        starting.result()  # re-raise a failed start
        return True
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    return False


async def _run(service: Service, signalled: asyncio.Event, stop_timeout_s: float) -> int:
    """Run until ``run()`` returns or ``signalled``; then stop within ``stop_timeout_s``."""
    running = asyncio.create_task(service.run(), name="service.run")
    waiting = asyncio.create_task(signalled.wait(), name="service.signal")
    try:
        await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if running.done():
        running.result()  # re-raise a crash
        return EXIT_OK
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stop_timeout_s
    try:
        await asyncio.wait_for(service.stop(), stop_timeout_s)
        await asyncio.wait_for(asyncio.shield(running), max(0.0, deadline - loop.time()))
    except TimeoutError:
        _log.error("service did not stop in time: cancelling", extra={"timeout_s": stop_timeout_s})
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        return EXIT_STOP_TIMEOUT
    return EXIT_OK
