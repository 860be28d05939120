"""The supervisor's parts on real processes (no broker): restarts, stop, stale pid files."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.e2e.dev.harness import alive, until

from aion_dev.pidfile import HomeBusy, HomeLock, PidFile
from aion_dev.stack import partitions_owned
from aion_dev.startup import cause_from_log
from aion_dev.supervisor import Backoff, ChildProcess, describe_exit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)", "aion-test-sleeper"]


def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, stable=30.0)
    delays = []
    previous = None
    for _ in range(6):
        previous = backoff.delay(previous, ran_for=1.0)
        delays.append(previous)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(4.0, ran_for=31.0) == 0.5


def test_exit_descriptions_name_the_signal_or_code() -> None:
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(3) == "exit code 3"


def test_owned_partitions_follow_acquired_and_released_lines_after_the_offset(
    tmp_path: Path,
) -> None:
    log = tmp_path / "engine-1.log"
    old = json.dumps({"msg": "partition acquired", "partition": 5}) + "\n"
    lines = [
        {"msg": "partition acquired", "partition": 0},
        {"msg": "partition acquired", "partition": 1},
        {"msg": "partition released", "partition": 0},
        {"msg": "partition acquired", "partition": 2},
    ]
    log.write_text(old + "not json partition 9\n" + "".join(json.dumps(x) + "\n" for x in lines))
    assert partitions_owned(log, len(old)) == {1, 2}
    assert partitions_owned(log, 0) == {1, 2, 5}
    assert partitions_owned(tmp_path / "missing.log", 0) == set()


def test_a_second_lock_on_the_same_home_is_refused(tmp_path: Path) -> None:
    first, second = HomeLock(tmp_path), HomeLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(HomeBusy, match="another aion dev"):
            second.acquire()
    finally:
        first.release()
    second.acquire()
    second.release()


def test_stale_children_of_a_killed_supervisor_are_stopped_and_strangers_spared(
    tmp_path: Path,
) -> None:
    ours = subprocess.Popen(SLEEPER, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        pids = PidFile(tmp_path)
        pids.write({"engine-1": ours.pid, "other": stranger.pid})
        assert pids.clean_stale(grace=10) == ["engine-1"]
        assert ours.wait(10) == -signal.SIGTERM
        assert stranger.poll() is None  # its command line is not one of ours
        assert not pids.path.exists()
    finally:
        for process in (ours, stranger):
            process.kill()
            process.wait()


async def test_a_killed_child_is_restarted_logged_and_stopped_for_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spawned: list[int] = []
    child = ChildProcess(
        "sleeper",
        SLEEPER,
        env={},
        log_path=tmp_path / "sleeper.log",
        backoff=Backoff(initial=0.1),
        on_spawn=lambda p: spawned.append(p.pid or 0),
    )
    caplog.set_level(logging.INFO, logger="aion.dev")
    await child.start()
    try:
        first = child.pid
        assert first is not None
        child.kill()
        await until(lambda: child.restarts == 1 and child.running, 30, "the restart")
        assert child.pid != first
        assert not alive(first)
        assert "restarted sleeper (signal SIGKILL, restart 1)" in caplog.text
        assert spawned == [first, child.pid]
        second = child.pid
        assert second is not None
    finally:
        await child.stop(grace=10)
    assert not alive(second)
    await asyncio.sleep(0.5)
    assert child.restarts == 1  # a stop is not a crash: no restart
    assert "starting sleeper" in (tmp_path / "sleeper.log").read_text()


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    child = ChildProcess(
        "stubborn",
        [sys.executable, "-c", stubborn, "aion-test"],
        env={},
        log_path=tmp_path / "stubborn.log",
    )
    await child.start()
    pid = child.pid
    assert pid is not None
    await asyncio.sleep(0.5)  # let it install the handler
    await child.stop(grace=1.0)
    assert not alive(pid)
    assert "stubborn did not stop within 1 s: SIGKILL" in caplog.text
    assert child.restarts == 0


async def test_a_child_its_on_exit_gives_up_on_stays_down_with_its_cause(tmp_path: Path) -> None:
    refuser = [
        sys.executable,
        "-c",
        "import json, sys; print(json.dumps({'level': 'ERROR', 'msg': 'engine refused to start: "
        "cannot import workflow module x'})); sys.exit(2)",
    ]
    exits: list[int] = []

    def on_exit(_process: object, returncode: int) -> bool:
        exits.append(returncode)
        return False

    child = ChildProcess(
        "refuser",
        refuser,
        env={},
        log_path=tmp_path / "refuser.log",
        backoff=Backoff(initial=0.1),
        on_exit=on_exit,
    )
    await child.start()
    try:
        await until(lambda: child.gave_up is not None, 30, "the child to be given up on")
        await asyncio.sleep(0.5)
        assert (exits, child.restarts, child.running) == ([2], 0, False)
        assert child.gave_up == "exit code 2"
        cause = cause_from_log(child.log_path, child.log_offset)
        assert cause == "engine refused to start: cannot import workflow module x"
    finally:
        await child.stop(grace=10)


def test_the_cause_of_an_uncaught_crash_is_its_traceback(tmp_path: Path) -> None:
    log = tmp_path / "crash.log"
    log.write_text(
        "=== aion-dev: starting engine-1\n"
        '{"level": "INFO", "msg": "starting"}\n'
        "Traceback (most recent call last):\n"
        '  File "/x/engine.py", line 3, in <module>\n'
        "KeyError: 'boom'\n"
    )
    offset = len("=== aion-dev: starting engine-1\n")
    assert cause_from_log(log, offset).splitlines()[-1] == "KeyError: 'boom'"
    assert cause_from_log(log, offset).startswith("Traceback")
