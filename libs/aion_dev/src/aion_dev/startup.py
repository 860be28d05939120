"""Why a stack cannot start, found within seconds: the user's code checked before anything
else runs, and the cause read from a service that exits while the stack starts.

A service that cannot load the user's modules or settings exits with
:data:`~aion_common.runtime.user_modules.EXIT_USER_CODE`; restarting it would fail the same
way fifteen times. So ``aion dev`` runs the engine's and the worker's ``--check`` (import the
modules, read the settings, exit) beside the broker's start, and gives up on a service that
exits with that code — or exits :data:`EARLY_EXITS` times — before the stack is ready,
showing what it printed. A crash after the stack was ready is restarted as always.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from aion_common.runtime.user_modules import EXIT_USER_CODE

__all__ = ["CHECK_TIMEOUT_S", "EARLY_EXITS", "EXIT_USER_CODE", "cause_from_log", "check_user_code"]

EARLY_EXITS = 3
"""Exits before the stack is ready after which a service is not restarted again."""
CHECK_TIMEOUT_S = 60.0
_TAIL_LINES = 25
_ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})


async def check_user_code(
    workflows: Sequence[str],
    activities: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> str | None:
    """Import the workflow modules as the engine will and the activity modules as the worker
    will (each in a process of its own, at once); the first failure's report, or None."""
    python = sys.executable
    checks = []
    if workflows:
        argv = [a for m in workflows for a in ("--workflows", m)]
        checks.append(("the engine", [python, "-m", "aion_engine", "--check", *argv]))
    modules = dict.fromkeys((*activities, *workflows))
    if modules:
        argv = [a for m in modules for a in ("--activities", m)]
        checks.append(("the worker", [python, "-m", "aion_worker", "--check", *argv]))
    results = await asyncio.gather(*(_run_check(argv, env, cwd) for _, argv in checks))
    for (who, _), (code, output) in zip(checks, results, strict=True):
        if code == 0:
            continue
        if code == EXIT_USER_CODE:
            return f"{who} cannot start with your code:\n{output.rstrip()}"
        return f"{who}'s check failed ({_how(code)}):\n{output.rstrip()}"
    return None


async def _run_check(argv: list[str], env: Mapping[str, str], cwd: Path | None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            output, _ = await process.communicate()
    except BaseException:  # timed out or cancelled: never leave the check behind
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def _how(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def cause_from_log(path: Path, offset: int) -> str:
    """What a service that exited said last, read from its log from ``offset`` (its launch):
    its last error records (JSON lines, message and exception), else its last lines as they
    are (an uncaught traceback, printed before logging was set up)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError as err:
        return f"(its log {path} cannot be read: {err})"
    errors: list[str] = []
    plain: list[str] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            plain.append(line)
            continue
        if isinstance(record, dict) and record.get("level") in _ERROR_LEVELS:
            parts = [str(record.get("msg", "")), str(record.get("exc", ""))]
            errors.append("\n".join(p for p in parts if p))
    if plain and any(p.startswith("Traceback") for p in plain):
        return "\n".join(plain[-_TAIL_LINES:])
    if errors:
        return errors[-1]
    tail = [line for line in text.splitlines() if line.strip()][-_TAIL_LINES:]
    return "\n".join(tail) or "(it printed nothing)"
