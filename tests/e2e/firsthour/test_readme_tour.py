"""The README's five-minute tour, run as written, so it cannot rot.

Every shell block of the tour is run, as it stands, by ``bash -e`` in a new terminal's
environment (no virtualenv on PATH, no ``AION_*`` setting) from the work directory the stack
was started from; every Python block is there as the file its first line names: the
workflows the stack loaded (``greetings.py``) and the script a block runs
(``start_greetings.py``). Only ``make dev`` is left to the stack this package starts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aion.testing import AionStack

from .conftest import python_files, tour_blocks, user_env

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def _run_block(workdir: Path, body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", body],
        cwd=workdir,
        env=user_env() | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_tour_has_its_blocks() -> None:
    kinds = [lang for lang, _ in tour_blocks()]
    assert kinds.count("bash") >= 2
    assert set(python_files()) == {"greetings.py", "start_greetings.py"}


def test_every_tour_block_runs_as_written(stack: AionStack, workdir: Path) -> None:
    outputs = []
    for lang, body in tour_blocks():
        if lang != "bash":
            continue  # the Python blocks are files in workdir: loaded, or run by a block
        done = _run_block(workdir, body)
        assert done.returncode == 0, (
            f"block:\n{body}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        outputs.append(done.stdout)
    first, second = outputs[:2]

    assert '"status": "shipped"' in first  # examples.order, its charge retried once
    assert "ActivityAttemptFailed" in first
    assert '"ada": "hello, ada"' in second
    assert '"?": "failed: ValueError: nobody to greet"' in second
    for child in ("hello-1/greet/1", "hello-1/greet/2", "hello-1/greet/3"):
        assert child in second  # aion tree: readable child ids
    assert 'greetings.py", line' in second  # aion describe: where the ValueError was raised
    assert "hello, ada\n" in second  # cat cards/ada.txt, written by the activity
    assert (workdir / "cards" / "ada.txt").read_text() == "hello, ada\n"
    assert '"status": "approved"' in second
    assert "{'ada': 'hello, ada'}\n{'grace': 'hello, grace'}" in second  # the Python script
