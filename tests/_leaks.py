"""Which processes a test module left running: found at each module's end and reported.

A service, broker or CLI a test started and never stopped goes on using CPU for the rest of
the session (the suite is CPU-bound on two cores), and may hold ports or consume from topics
later tests use. After the last test of a module (its module fixtures torn down), every
descendant of the pytest process that was not there when the module began, and that no
session- or package-scoped fixture started (nor descends from one that did), is listed in the
terminal summary with the module that left it. Reported, not killed: a supervised stack of a
longer-lived fixture restarts its services as new children during tests, which this cannot
tell from a leak. Linux only (/proc); elsewhere nothing is checked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_PROC = Path("/proc")
GRACE_S = 1.0  # a process stopped with SIGTERM by a fixture may still be exiting


def available() -> bool:
    return (_PROC / "self/stat").exists()


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every live process."""
    found: dict[int, tuple[int, str]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), fields[0])
    return found


def descendants(root: int | None = None) -> set[int]:
    """Live (not zombie) descendants of ``root`` (default: this process)."""
    root = os.getpid() if root is None else root
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if table[child][1] != "Z":
                found.add(child)
                stack.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


def left_behind(before: set[int], keep: set[int]) -> dict[int, str]:
    """Descendants not in ``before`` nor under ``keep`` (after a short grace), by command."""
    deadline = time.monotonic() + GRACE_S
    while True:
        kept = set(keep)
        for pid in keep:
            kept |= descendants(pid)
        new = descendants() - before - kept
        if not new or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return {pid: command_line(pid) for pid in sorted(new)}


class LeakCheck:
    """The pytest plugin: baselines per module, ownership per long-lived fixture, the report."""

    def __init__(self) -> None:
        self.module_start: set[int] | None = None
        self.owned: set[int] = set()  # started by session- or package-scoped fixtures
        self.leaks: list[str] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[object]) -> Iterator[object]:
        if fixturedef.scope not in ("session", "package"):
            return (yield)
        before = descendants()
        try:
            return (yield)
        finally:
            self.owned |= descendants() - before

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Iterator[None]:
        if self.module_start is None:
            self.module_start = descendants()
        result = yield
        if nextitem is None or nextitem.module is not item.module:
            found = left_behind(self.module_start, self.owned)
            where = item.nodeid.split("::")[0]
            self.leaks.extend(f"{where}: pid {pid} {cmd}" for pid, cmd in found.items())
            self.module_start = None
        return result

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.leaks:
            terminalreporter.write_line("aion leak check: no test module left a process running")
            return
        terminalreporter.section("processes a test module left running (tests/_leaks.py)")
        for line in self.leaks:
            terminalreporter.write_line(line)
