"""Every numeric ``AION_*`` variable outside the watcher refuses what it cannot mean with a
SettingsError naming it: a number past float's range (OverflowError from ``round(inf)`` or
``ms / 1000``), ``²`` (``str.isdigit()`` accepts it, int() does not), more digits than int()
reads (4,300), or a value past the variable's bound; blank is the default. ``aion dev`` and
every service say so in one line and exit 2 (the watcher's own numbers:
tests/unit/watcher/test_watcher_config.py)."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

import aion_dev.__main__ as aion_dev_cli
import aion_projector.api.__main__ as api_entry
from aion_common.runtime.health import HealthEndpoint
from aion_common.settings import (
    DEFAULT_PAYLOAD_LIMIT,
    MAX_SESSION_TIMEOUT_MS,
    Settings,
    SettingsError,
    parse_duration_ms,
    parse_whole,
)
from aion_engine.__main__ import membership_from_env, state_options_from_env
from aion_ingress.options import IngressOptions
from aion_projector.api._server import package_limit_from_env, produce_timeout_from_env
from aion_projector.health import ready_lag_from_env
from aion_scheduler.options import SchedulerOptions
from aion_worker.config import WorkerConfig

Reader = Callable[[Mapping[str, str]], object]

READERS: dict[str, Reader] = {
    "AION_RETENTION": Settings.from_env,
    "AION_ENGINE_CLOSED_CACHE": state_options_from_env,
    "AION_ENGINE_STANDBYS": state_options_from_env,
    "AION_ENGINE_SESSION_TIMEOUT_MS": lambda env: membership_from_env(env, Settings()),
    "AION_PACKAGE_LIMIT_BYTES": package_limit_from_env,
    "AION_API_PRODUCE_TIMEOUT_MS": produce_timeout_from_env,
    "AION_INGRESS_SESSION_TIMEOUT_MS": IngressOptions.from_env,
    "AION_SCHEDULER_SESSION_TIMEOUT_MS": SchedulerOptions.from_env,
    "AION_WORKER_SHUTDOWN_GRACE_MS": WorkerConfig.from_env,
    "AION_WORKER_SESSION_TIMEOUT_MS": WorkerConfig.from_env,
    "AION_PARTITIONS": Settings.from_env,
    "AION_REPLICATION_FACTOR": Settings.from_env,
    "AION_MIN_INSYNC_REPLICAS": lambda env: Settings.from_env(
        {"AION_REPLICATION_FACTOR": "32767", **env}
    ),
    "AION_PAYLOAD_LIMIT_BYTES": Settings.from_env,
    "AION_WORKER_MAX_CONCURRENT": WorkerConfig.from_env,
    "AION_WORKER_THREADS": WorkerConfig.from_env,
    "AION_WORKER_PORT": WorkerConfig.from_env,
    "AION_INGRESS_MAX_BATCH": IngressOptions.from_env,
    "AION_INGRESS_PORT": IngressOptions.from_env,
    "AION_SCHEDULER_PORT": SchedulerOptions.from_env,
    "AION_ENGINE_PORT": lambda env: HealthEndpoint.from_env("AION_ENGINE", env),
    "AION_PROJECTOR_PORT": lambda env: HealthEndpoint.from_env("AION_PROJECTOR", env),
    "AION_PROJECTOR_READY_LAG": ready_lag_from_env,
}
HUGE = "1" + "0" * 400  # float() reads it as inf


@pytest.mark.parametrize("name", list(READERS))
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(HUGE, id="10**400"),
        pytest.param("9" * 5000, id="5000-digits"),  # past int()'s 4,300-digit limit
        pytest.param("\u00b2", id="superscript-2"),
        *("-1", "inf", "nan", "1e400", "ten", "2.5x"),
    ],
)
def test_a_number_it_cannot_mean_is_refused_by_name(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=name):
        READERS[name]({name: raw})


@pytest.mark.parametrize(
    ("name", "top"),
    [
        ("AION_ENGINE_CLOSED_CACHE", 10_000_000),
        ("AION_ENGINE_STANDBYS", 1),
        ("AION_ENGINE_SESSION_TIMEOUT_MS", MAX_SESSION_TIMEOUT_MS),
        ("AION_PACKAGE_LIMIT_BYTES", 8 * 1024 * 1024),
        ("AION_API_PRODUCE_TIMEOUT_MS", 120_000),
        ("AION_INGRESS_SESSION_TIMEOUT_MS", MAX_SESSION_TIMEOUT_MS),
        ("AION_SCHEDULER_SESSION_TIMEOUT_MS", MAX_SESSION_TIMEOUT_MS),
        ("AION_WORKER_SHUTDOWN_GRACE_MS", 300_000),
        ("AION_WORKER_SESSION_TIMEOUT_MS", MAX_SESSION_TIMEOUT_MS),
        ("AION_PARTITIONS", 1000),
        ("AION_REPLICATION_FACTOR", 32767),
        ("AION_MIN_INSYNC_REPLICAS", 32767),
        ("AION_PAYLOAD_LIMIT_BYTES", 8 * 1024 * 1024),
        ("AION_WORKER_MAX_CONCURRENT", 10_000),
        ("AION_WORKER_THREADS", 1024),
        ("AION_WORKER_PORT", 65535),
        ("AION_INGRESS_MAX_BATCH", 10_000),
        ("AION_INGRESS_PORT", 65535),
        ("AION_SCHEDULER_PORT", 65535),
        ("AION_ENGINE_PORT", 65535),
        ("AION_PROJECTOR_PORT", 65535),
        ("AION_PROJECTOR_READY_LAG", 1_000_000_000),
    ],
)
def test_each_bound_is_taken_and_one_past_it_is_refused_with_the_range(name: str, top: int) -> None:
    READERS[name]({name: str(top)})
    READERS[name]({name: f" 00{top} "})  # blanks around and zeros in front still read
    with pytest.raises(SettingsError, match=rf"{name}='{top + 1}': expected .* to {top} \("):
        READERS[name]({name: str(top + 1)})


@pytest.mark.parametrize(
    ("name", "bottom"),
    [
        ("AION_PARTITIONS", 1),
        ("AION_REPLICATION_FACTOR", 1),
        ("AION_MIN_INSYNC_REPLICAS", 1),
        ("AION_PAYLOAD_LIMIT_BYTES", 1024),  # a unit slip (2 for 2 MiB) refuses to start
        ("AION_WORKER_MAX_CONCURRENT", 1),
        ("AION_WORKER_THREADS", 1),
        ("AION_INGRESS_MAX_BATCH", 1),
    ],
)
def test_each_floor_is_taken_and_one_below_it_is_refused_with_the_range(
    name: str, bottom: int
) -> None:
    READERS[name]({name: str(bottom)})
    with pytest.raises(SettingsError, match=rf"{name}='{bottom - 1}': expected .* from {bottom} "):
        READERS[name]({name: str(bottom - 1)})


@pytest.mark.parametrize("raw", ["", "  "])
@pytest.mark.parametrize("name", list(READERS))
def test_a_blank_variable_takes_the_default(name: str, raw: str) -> None:
    assert READERS[name]({name: raw}) == READERS[name]({})


def test_the_newly_bounded_defaults_and_values_read() -> None:
    assert Settings.from_env({"AION_PARTITIONS": " 12 "}).partitions == 12
    settings = Settings.from_env({"AION_REPLICATION_FACTOR": "3", "AION_MIN_INSYNC_REPLICAS": "2"})
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    assert Settings.from_env({}).payload_limit_bytes == DEFAULT_PAYLOAD_LIMIT
    worker = WorkerConfig.from_env({"AION_WORKER_MAX_CONCURRENT": "8", "AION_WORKER_THREADS": "2"})
    assert (worker.max_concurrent, worker.thread_count) == (8, 2)
    assert WorkerConfig.from_env({"AION_WORKER_MAX_CONCURRENT": "200"}).thread_count == 32
    assert IngressOptions.from_env({"AION_INGRESS_MAX_BATCH": "50"}).max_batch == 50
    assert IngressOptions.from_env({}).max_batch == 500
    assert HealthEndpoint.from_env("AION_ENGINE", {"AION_ENGINE_PORT": "8082"}).port == 8082
    assert ready_lag_from_env({}) == 1000


@pytest.mark.parametrize(
    ("values", "refused"),
    [
        ({"partitions": 1001}, "AION_PARTITIONS=1001: expected 1 to 1000"),
        ({"replication_factor": 32768}, "AION_REPLICATION_FACTOR=32768: expected 1 to 32767"),
        ({"payload_limit_bytes": 8 * 1024 * 1024 + 1}, "AION_PAYLOAD_LIMIT_BYTES=8388609"),
    ],
)
def test_settings_built_in_code_keep_the_ceilings(values: dict[str, int], refused: str) -> None:
    with pytest.raises(SettingsError, match=refused):
        Settings(**values)  # type: ignore[arg-type]  # the values are ints


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"max_concurrent": 10_001}, "--max-concurrent, AION_WORKER_MAX_CONCURRENT"),
        ({"threads": 1025}, "AION_WORKER_THREADS=1025"),
    ],
)
def test_the_worker_command_line_keeps_the_ranges(options: dict[str, int], refused: str) -> None:
    with pytest.raises(SettingsError, match=refused):
        WorkerConfig.from_env({}, **options)


@pytest.mark.parametrize("raw", [HUGE, HUGE + "d", HUGE + "ms", "36501d", "9" * 5000 + "s"])
def test_a_retention_past_a_hundred_years_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"AION_RETENTION=.*expected at most 36500d"):
        Settings.from_env({"AION_RETENTION": raw})


def test_the_durations_that_are_meant_still_read() -> None:
    assert Settings.from_env({"AION_RETENTION": "36500d"}).retention_ms == 36_500 * 86_400_000
    assert parse_duration_ms("1.5s") == 1500
    assert parse_duration_ms("7d") == 7 * 86_400_000
    with pytest.raises(SettingsError, match="expected a duration such as"):
        parse_duration_ms("\u0663d", name="AION_RETENTION")  # an Arabic-Indic 3: not ASCII


def test_a_long_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(SettingsError) as refused:
        parse_whole("AION_X", "9" * 5000, minimum=0, maximum=10)
    assert str(refused.value) == (
        f"AION_X='{'9' * 40}'... (5000 chars): expected a whole number from 0 to 10"
    )


def test_the_defaults_and_what_is_meant_still_read() -> None:
    assert state_options_from_env({}).closed_cache == 10_000
    assert state_options_from_env({"AION_ENGINE_STANDBYS": "1"}).standbys == 1
    assert membership_from_env({}, Settings()).session_timeout_ms == 10_000
    assert produce_timeout_from_env({}) == 5.0
    assert produce_timeout_from_env({"AION_API_PRODUCE_TIMEOUT_MS": "2000"}) == 2.0
    worker = WorkerConfig.from_env({"AION_WORKER_SHUTDOWN_GRACE_MS": "0"})
    assert (worker.shutdown_grace, worker.session_timeout) == (0.0, 10.0)
    assert IngressOptions.from_env({"AION_INGRESS_SESSION_TIMEOUT_MS": "6000"}).session_timeout == 6
    assert SchedulerOptions.from_env({}).session_timeout == 10.0


@pytest.mark.parametrize("raw", ["inf", "six", "0", "\u00b2", HUGE])
def test_aion_dev_refuses_a_bad_aion_partitions_in_one_line(
    raw: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read while the parser was built, it was a ValueError traceback before."""
    monkeypatch.setenv("AION_PARTITIONS", raw)
    monkeypatch.setattr(aion_dev_cli, "_configure_logging", lambda *_: None)  # process-wide
    assert aion_dev_cli.main(["--home", str(tmp_path), "--no-examples"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aion dev: AION_PARTITIONS="), err
    assert "expected a whole number from 1 to 1000" in err
    assert err.count("\n") == 1, err


# Each service with a bad variable of its own (and the engine with a shared one) refuses to
# start with one logged error naming it and exit code 2, which aion dev does not restart.
REFUSALS = {
    "aion_engine": ("AION_PARTITIONS", "1e400"),
    "aion_projector": ("AION_PROJECTOR_READY_LAG", "-1"),
    "aion_worker": ("AION_WORKER_THREADS", "inf"),
    "aion_scheduler": ("AION_SCHEDULER_PORT", "70000"),
    "aion_ingress": ("AION_INGRESS_MAX_BATCH", "0"),
}


@pytest.mark.parametrize("module", list(REFUSALS))
def test_a_service_refuses_a_bad_number_with_one_error(
    module: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name, raw = REFUSALS[module]
    entry = importlib.import_module(f"{module}.__main__")
    monkeypatch.setattr(entry, "configure_logging", lambda *_: None)  # process-wide
    monkeypatch.setenv(name, raw)
    with caplog.at_level(logging.ERROR):
        assert entry.main([]) == 2  # a refusal
    (record,) = caplog.records
    assert f"refused to start: {name}='{raw}': expected" in record.getMessage()


def test_the_api_refuses_a_payload_limit_below_the_floor_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(api_entry, "configure_logging", lambda *_: None)
    monkeypatch.setenv("AION_PAYLOAD_LIMIT_BYTES", "2")  # meant: 2 MiB
    with pytest.raises(SystemExit) as exited:
        api_entry.main([])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("aion API refused to start: AION_PAYLOAD_LIMIT_BYTES='2': expected")
    assert "from 1024 to 8388608" in err
    assert err.count("\n") == 1, err


def test_the_watcher_refuses_a_bad_number_in_one_line_not_a_traceback() -> None:
    """It read its settings inside the loop: a SettingsError traceback and exit 1 before."""
    done = subprocess.run(
        [sys.executable, "-m", "aion_watcher"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "AION_WATCHER_SESSION_TIMEOUT_MS": "3600000"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "watcher refused to start: AION_WATCHER_SESSION_TIMEOUT_MS='3600000'" in done.stderr
    assert "from 1000 to 1800000" in done.stderr
