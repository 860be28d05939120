"""The example test of ``docs/testing.md``, run as a user would: a separate pytest process in a
project of its own, with only the ``aion-testing`` plugin (the project's own plugin is off)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[3]


def _docs_example() -> str:
    text = (ROOT / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    return next(b for b in blocks if b.startswith("# tests/test_orders.py"))


def _run_user_suite(project: Path, *options: str) -> subprocess.CompletedProcess[str]:
    (project / "tests").mkdir()
    (project / "tests" / "test_orders.py").write_text(_docs_example())
    (project / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # where the `examples` package lives
    for name in ("AION_KAFKA_BOOTSTRAP", "AION_DATABASE_URL", "AION_WORKFLOWS"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"]
    return subprocess.run(
        [*argv, "--aion-workflows", "examples", *options],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )


def test_docs_example_passes_on_a_given_broker(tmp_path: Path, kafka_bootstrap: str) -> None:
    done = _run_user_suite(tmp_path, "--aion-kafka", kafka_bootstrap)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
    assert "test_order_ships_after_a_retried_payment PASSED" in done.stdout


def test_docs_example_passes_on_the_embedded_default(tmp_path: Path) -> None:
    done = _run_user_suite(tmp_path)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
