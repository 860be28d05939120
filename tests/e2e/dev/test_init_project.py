"""``aion init demo-proj && cd demo-proj && <its README's commands>``, as a user runs them.

The README ``aion init`` writes names three commands: ``pytest`` (the project's test on an
aion stack the ``aion.testing`` plugin starts), ``aion dev --workflows workflows`` (the stack,
until Ctrl-C) and, in a second terminal, ``aion start hello --input '"ada"' --wait``. Each is
run here as written, in a new terminal's environment with the checkout's virtualenv on PATH
(the generated README's install step); the test passes, without a warning, and the start
prints the greeting. Only the broker is shared with the session (``AION_KAFKA_BOOTSTRAP``, which
the plugin reads): ``aion dev`` starts its own.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.e2e.dev.harness import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

VENV_BIN = REPO_ROOT / ".venv" / "bin"


def _terminal() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AION_", "PYTEST_"))}
    return env | {"PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "200"}


def _commands(readme: str) -> list[str]:
    run_it = readme[readme.index("## Run it") :]
    block = re.search(r"```bash\n(.*?)```", run_it, flags=re.DOTALL)
    assert block is not None, run_it
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        shlex.split(command),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_init_then_the_readmes_three_commands(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = _terminal()
    made = _run("aion init demo-proj", tmp_path, env)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "demo-proj"
    commands = _commands((project / "README.md").read_text())
    assert [c.split()[:2] for c in commands] == [["pytest"], ["aion", "dev"], ["aion", "start"]]
    test_cmd, dev_cmd, start_cmd = commands

    tested = _run(test_cmd, project, env | {"AION_KAFKA_BOOTSTRAP": kafka_bootstrap})
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert "2 passed" in tested.stdout
    assert "warning" not in tested.stdout.lower(), tested.stdout  # e.g. pytest-asyncio's

    out = (tmp_path / "dev.out").open("wb")
    dev = subprocess.Popen(
        shlex.split(dev_cmd), cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
    )
    try:
        _wait_for_banner(tmp_path / "dev.out", dev)
        started = _run(start_cmd, project, env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout == '"hello, ada"\n'
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            assert dev.wait(timeout=90) == 0, (tmp_path / "dev.out").read_text()[-3000:]
        finally:
            if dev.poll() is None:
                dev.kill()
            out.close()


def _wait_for_banner(log: Path, dev: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "aion dev is up" in text:
            return
        assert dev.poll() is None, text[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"aion dev did not come up:\n{log.read_text()[-3000:]}")
