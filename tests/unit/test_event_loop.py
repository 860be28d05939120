"""``aion_common.runtime.loop``: which event loop a service runs on, and uvicorn's parser."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from aion_common.runtime.loop import event_loop_kind, http_implementation, run
from aion_common.settings import SettingsError


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """``run`` freezes what the process holds (a service's startup); this is pytest's process."""
    yield
    gc.unfreeze()


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_auto_runs_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")  # a dependency of aion-common: installed by `make install`
    assert event_loop_kind({}) == "uvloop"
    assert run(_loop_module(), env={}) == "uvloop"
    assert http_implementation({}) == "httptools"


def test_asyncio_is_the_standard_loop_and_h11() -> None:
    env = {"AION_EVENT_LOOP": " AsyncIO "}
    assert event_loop_kind(env) == "asyncio"
    assert run(_loop_module(), env=env) == "asyncio"
    assert http_implementation(env) == "h11"


def test_an_unknown_loop_is_a_settings_error_naming_the_choices() -> None:
    with pytest.raises(SettingsError, match="AION_EVENT_LOOP='fast': expected one of auto"):
        event_loop_kind({"AION_EVENT_LOOP": "fast"})


def test_run_with_a_bad_loop_exits_2_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    coro = _loop_module()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exited:
        run(coro, env={"AION_EVENT_LOOP": "fast"})
    assert exited.value.code == 2
    assert "refused to start: AION_EVENT_LOOP='fast'" in caplog.text
    assert coro.cr_frame is None  # closed, never awaited: no warning on top of the error


def test_a_service_refuses_a_bad_loop_at_start() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aion_watcher"],
        env={"AION_EVENT_LOOP": "fast", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "AION_EVENT_LOOP='fast': expected one of auto, uvloop, asyncio" in done.stderr


def test_run_freezes_what_the_process_held_before_the_service_ran() -> None:
    gc.unfreeze()
    held = type("Held", (), {})()  # alive before run, like a service's imports
    assert any(o is held for o in gc.get_objects())  # scanned by every full collection ...
    run(_loop_module(), env={})
    assert gc.get_freeze_count() > 0
    assert not any(o is held for o in gc.get_objects())  # ... and no longer
