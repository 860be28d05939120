"""Refuse I/O and blocking calls while workflow code runs (DESIGN: "while workflow code runs,
I/O is refused with an error that says to use an activity").

One process-wide audit hook (:func:`sys.addaudithook`) sees every ``open``, socket, subprocess
and ``urllib`` call CPython audits. It does nothing unless the calling thread is the one
running a workflow step inside :func:`guard`, so the engine's own I/O (Kafka, logging, other
threads) is untouched, and its cost is one comparison per audited event. ``time.sleep`` is
not audited on Python 3.11, so :func:`install` wraps it the same way.

The hook raises :class:`aion.workflow.SandboxViolation` at the call and records it on the
guard: the run fails with it even if the code catches the exception. Reading source and
bytecode files stays allowed, because a workflow may import a module lazily. So does what a
:data:`gc.callbacks` entry does: the collector runs those on whichever thread allocated when
it was due, the workflow's too, and their I/O (a profiler's or an APM agent's) is the
process's, not the workflow's — its determinism does not depend on it.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, SupportsIndex

from aion.workflow import SandboxViolation

__all__ = ["Guard", "guard", "install"]

# Audited events that are I/O or block (https://docs.python.org/3/library/audit_events.html).
_REFUSED = frozenset(
    {
        "open",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.startfile",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.utime",
        "shutil.copyfile",
        "shutil.rmtree",
        "shutil.move",
        "subprocess.Popen",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.sendto",
        "socket.sendmsg",
        "urllib.Request",
        "http.client.connect",
        "smtplib.connect",
        "ftplib.connect",
        "webbrowser.open",
        "sqlite3.connect",
    }
)
_CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".so", ".pth")


class Guard:
    """The workflow step being run on one thread, and the first refused call it made."""

    __slots__ = ("thread", "violation")

    def __init__(self, thread: int) -> None:
        self.thread = thread
        self.violation: SandboxViolation | None = None


_active: Guard | None = None
_installed = False
_lock = threading.Lock()


def _describe(event: str, args: tuple[Any, ...]) -> str:
    shown = ", ".join(repr(arg) for arg in args[:2])
    if event == "urllib.Request":
        return f"urllib request to {args[0]!r}" if args else "a urllib request"
    return f"{event}({shown})"


def _refuse(event: str, args: tuple[Any, ...]) -> None:
    active = _active
    if active is None or active.thread != threading.get_ident():
        return
    if event == "open":
        path, mode = (*args, None, None)[:2]
        reading = mode is None or (isinstance(mode, str) and set(mode) <= {"r", "b", "t"})
        if reading and isinstance(path, str | bytes) and str(path).endswith(_CODE_SUFFIXES):
            return  # a lazy import reads source or bytecode
    if _in_gc_callback():
        return
    violation = SandboxViolation(_describe(event, args))
    if active.violation is None:
        active.violation = violation
    raise violation


def _in_gc_callback() -> bool:
    """Whether a :data:`gc.callbacks` entry is on this thread's stack (only asked before a
    refusal, so the walk costs nothing on the allowed path)."""
    codes = {code for callback in gc.callbacks if (code := _code_of(callback)) is not None}
    frame = sys._getframe(1) if codes else None
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _code_of(callback: Any) -> Any:
    target = getattr(callback, "__func__", callback)  # a bound method's function
    code = getattr(target, "__code__", None)
    if code is None:  # an instance with __call__
        call = getattr(type(callback), "__call__", None)  # noqa: B004 - its code, not a test
        code = getattr(call, "__code__", None)
    return code


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _REFUSED:
        _refuse(event, args)


def _guarded_sleep(
    original: Callable[[float | SupportsIndex], None],
) -> Callable[[float | SupportsIndex], None]:
    def sleep(seconds: float | SupportsIndex) -> None:
        if _active is not None:
            _refuse("time.sleep", (seconds,))
        original(seconds)

    sleep.__doc__ = original.__doc__
    return sleep


def install() -> None:
    """Install the audit hook and the ``time.sleep`` guard, once per process (before workflow
    modules are imported, so their ``from time import sleep`` gets the guarded one)."""
    global _installed  # noqa: PLW0603 - one hook per process, by design
    with _lock:
        if _installed:
            return
        sys.addaudithook(_audit)
        time.sleep = _guarded_sleep(time.sleep)
        _installed = True


@contextmanager
def guard() -> Iterator[Guard]:
    """Refuse I/O on this thread for the duration of the block (one workflow step)."""
    global _active  # noqa: PLW0603 - the step in progress, checked by the hook
    install()
    previous = _active
    current = Guard(threading.get_ident())
    _active = current
    try:
        yield current
    finally:
        _active = previous
