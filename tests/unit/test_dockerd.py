"""dockerd down stops only a dockerd: a stale PID file never kills another process."""

from __future__ import annotations

import subprocess
import sys

from aion_common.testing.dockerd import stop_daemon


def test_a_pid_that_is_no_longer_dockerd_is_left_alone() -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    said: list[str] = []
    try:
        stop_daemon(other.pid, say=said.append)
        assert other.poll() is None, "the process was not signalled"
        (line,) = said
        assert line.startswith(f"docker: pid {other.pid} is no longer a dockerd (python")
    finally:
        other.kill()
        other.wait()


def test_a_pid_that_has_exited_is_reported() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    said: list[str] = []
    stop_daemon(gone.pid, say=said.append)
    assert said == [f"docker: dockerd (pid {gone.pid}) had already exited"]
