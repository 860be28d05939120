"""The example user project (examples/user_project) tests its own workflows on aion in Docker
containers, as its users would: its pytest suite through the ``aion_container_stack``
fixture, and its plain ``with AionStack(...)`` script outside pytest. Both run as
subprocesses in the project's directory, with its own pytest configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aion_common.testing.images import ImageSet

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2] / "examples/user_project"
_ENV = {
    **os.environ,
    "TESTCONTAINERS_RYUK_DISABLED": "true",
    # The project is not installed: its directory is its import root (as `pip install -e .`).
    "PYTHONPATH": str(PROJECT),
}


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=PROJECT, env=_ENV, capture_output=True, text=True, timeout=600, check=False
    )


def test_the_projects_suite_passes_on_aion_stack(images: ImageSet) -> None:
    done = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"])
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "3 passed" in output, output


def test_aion_stack_in_a_plain_with_block(images: ImageSet) -> None:
    done = _run([sys.executable, "with_block.py"])
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "greet-all: {'ada': 'hello, ada', '?': 'failed: ValueError: nobody to greet'}" in output
    assert "aion API at http://127.0.0.1:" in output
