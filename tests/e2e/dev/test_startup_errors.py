"""A broken workflow module stops ``aion dev`` within seconds, with the cause on screen.

``aion dev`` is run as a user runs it (a subprocess, from the directory holding the module):
an ImportError inside the module (with the embedded Kafka starting meanwhile) and a
SyntaxError (on the session broker) each make it exit 2 within 15 s, printing the exception
and the user's file and line. Without the up-front check, a service that refuses to start is
not restarted: the stack fails with what that service logged.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.e2e.dev.harness import processes_using, until

from aion_dev import Stack, StackConfig, StartupError

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

LIMIT_S = 15.0
BROKEN_IMPORT = "from aion import workflow\nimport not_installed_dep  # line 2\n"
BROKEN_SYNTAX = (
    "from aion import workflow\n\n\n@workflow.defn('x')\nasync def x(ctx, value):\n"
    "    return (value\n"
)


def _aion_dev(directory: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AION_")}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "aion_dev", "--home", str(directory / ".aion"), *args],
        cwd=directory,
        env=env | {"PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, time.monotonic() - began


async def test_an_import_error_stops_aion_dev_within_seconds(tmp_path: Path) -> None:
    (tmp_path / "broken_import.py").write_text(BROKEN_IMPORT)

    done, took = _aion_dev(tmp_path, "--no-examples", "--workflows", "broken_import")

    assert done.returncode == 2, done.stderr[-3000:]
    assert took < LIMIT_S, (took, done.stderr[-3000:])
    assert "cannot import workflow module 'broken_import'" in done.stderr
    assert "ModuleNotFoundError: No module named 'not_installed_dep'" in done.stderr
    assert f'File "{tmp_path / "broken_import.py"}", line 2' in done.stderr
    assert "restarted" not in done.stderr
    home = tmp_path / ".aion"
    await until(lambda: not processes_using(home), 10, f"no process left using {home}")


def test_a_syntax_error_stops_it_the_same_way(tmp_path: Path, kafka_bootstrap: str) -> None:
    (tmp_path / "broken_syntax.py").write_text(BROKEN_SYNTAX)

    done, took = _aion_dev(
        tmp_path, "--no-examples", "--workflows", "broken_syntax", "--kafka", kafka_bootstrap
    )

    assert done.returncode == 2, done.stderr[-3000:]
    assert took < LIMIT_S, (took, done.stderr[-3000:])
    assert "SyntaxError: '(' was never closed" in done.stderr
    assert f'File "{tmp_path / "broken_syntax.py"}", line 6' in done.stderr
    assert "    return (value" in done.stderr


async def test_a_service_refusing_to_start_is_not_restarted(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    (tmp_path / "broken_import.py").write_text(BROKEN_IMPORT)
    config = StackConfig(
        home=tmp_path / ".aion",
        cwd=tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        workflows=("broken_import",),
        topic_prefix=f"startup{os.getpid()}",
        partitions=1,
        check_user_code=False,  # the services themselves meet the broken module
    )
    stack = Stack(config)
    began = time.monotonic()
    with pytest.raises(StartupError) as failed:
        await asyncio.wait_for(_enter_and_leave(stack), 60)
    took = time.monotonic() - began

    message = str(failed.value)
    assert "refused to start while the stack was starting" in message
    assert "ModuleNotFoundError: No module named 'not_installed_dep'" in message
    assert took < 30, took
    quitter = next(p for p in stack.processes.values() if p.gave_up is not None)
    assert quitter.restarts == 0
    assert quitter.gave_up == "exit code 2"


async def _enter_and_leave(stack: Stack) -> None:
    async with stack:
        pass
