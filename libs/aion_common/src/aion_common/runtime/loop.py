"""The event loop every aion service runs on: uvloop when it is installed, asyncio's otherwise.

``AION_EVENT_LOOP`` chooses: ``auto`` (the default: uvloop if importable), ``uvloop`` (refused
at start when it is not installed) or ``asyncio`` (the standard library's selector loop, e.g.
to rule the loop out while chasing a problem). :func:`run` is what a service's ``__main__``
calls instead of :func:`asyncio.run`; :func:`http_implementation` is the HTTP parser uvicorn
should use beside that loop (``httptools`` with uvloop, as ``uvicorn[standard]`` does).
Decision 59 has the measurements behind the default. :func:`run` also freezes what the
process holds before its service runs out of the cyclic collector (decision 72).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal, TypeVar

from aion_common.settings import SettingsError

__all__ = ["EVENT_LOOP_ENV", "event_loop_kind", "freeze_startup", "http_implementation", "run"]

_log = logging.getLogger("aion.runtime")

EVENT_LOOP_ENV = "AION_EVENT_LOOP"
_KINDS = ("auto", "uvloop", "asyncio")

T = TypeVar("T")
LoopKind = Literal["uvloop", "asyncio"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def event_loop_kind(env: Mapping[str, str] | None = None) -> LoopKind:
    """The loop ``AION_EVENT_LOOP`` asks for, resolved (``auto`` → uvloop when installed)."""
    source = os.environ if env is None else env
    asked = source.get(EVENT_LOOP_ENV, "auto").strip().lower() or "auto"
    if asked not in _KINDS:
        raise SettingsError(f"{EVENT_LOOP_ENV}={asked!r}: expected one of {', '.join(_KINDS)}")
    if asked == "asyncio":
        return "asyncio"
    if _installed("uvloop"):
        return "uvloop"
    if asked == "uvloop":
        raise SettingsError(
            f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed: "
            "`pip install uvloop`, or set it to auto or asyncio"
        )
    return "asyncio"


def _factory(kind: LoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if kind == "asyncio":
        return None
    import uvloop  # noqa: PLC0415 - optional, found by event_loop_kind

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, env: Mapping[str, str] | None = None) -> T:
    """:func:`asyncio.run` on the loop :func:`event_loop_kind` chooses; a bad
    ``AION_EVENT_LOOP`` exits 2 (a configuration error: ``aion dev`` shows it, no restart)."""
    try:
        factory = _factory(event_loop_kind(env))
    except SettingsError as err:
        main.close()  # never awaited: no "coroutine was never awaited" warning on top
        _log.error("refused to start: %s", err)  # the message is the report
        raise SystemExit(2) from err
    freeze_startup()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def freeze_startup() -> None:
    """Move every object alive now — the modules, classes and functions a service imported,
    its settings — out of the cyclic collector's generations (:func:`gc.freeze`, decision 72).

    They live as long as the process, yet every full collection scanned them: 93,000 objects
    and about 30 ms in the projector's process, and full collections of 30-120 ms were seen in
    the projector and the API while they served. Once frozen, a full collection scans only
    what the service allocated since. Nothing the service allocates later is frozen, so its
    cyclic garbage is still collected.
    """
    gc.collect()
    gc.freeze()


def http_implementation(env: Mapping[str, str] | None = None) -> Literal["httptools", "h11"]:
    """uvicorn's ``http`` option: httptools beside uvloop when installed, h11 otherwise."""
    if event_loop_kind(env) == "uvloop" and _installed("httptools"):
        return "httptools"
    return "h11"
