"""Every numeric ``AION_*`` variable outside the watcher refuses what it cannot mean with a
SettingsError naming it: a number past float's range (OverflowError from ``round(inf)`` or
``ms / 1000``), ``²`` (``str.isdigit()`` accepts it, int() does not), more digits than int()
reads (4,300), or a value past the variable's bound. ``aion dev`` says so in one line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

import aion_dev.__main__ as aion_dev_cli
from aion_common.settings import (
    MAX_SESSION_TIMEOUT_MS,
    Settings,
    SettingsError,
    parse_duration_ms,
    parse_whole,
)
from aion_engine.__main__ import membership_from_env, state_options_from_env
from aion_ingress.options import IngressOptions
from aion_projector.api._server import package_limit_from_env, produce_timeout_from_env
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
    ],
)
def test_each_bound_is_taken_and_one_past_it_is_refused_with_the_range(name: str, top: int) -> None:
    READERS[name]({name: str(top)})
    READERS[name]({name: f" 00{top} "})  # blanks around and zeros in front still read
    with pytest.raises(SettingsError, match=rf"{name}='{top + 1}': expected .* to {top} \("):
        READERS[name]({name: str(top + 1)})


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
