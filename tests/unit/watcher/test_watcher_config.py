"""``WatcherConfig.from_env``: the group-membership and fetch settings added for issue 4."""

from __future__ import annotations

import math

import pytest

from aion_common.settings import MAX_SESSION_TIMEOUT_MS, Settings, SettingsError
from aion_watcher import WatcherConfig, WatcherService


def test_membership_and_fetch_settings_are_read_in_milliseconds() -> None:
    config = WatcherConfig.from_env(
        {
            "AION_WATCHER_STATIC_MEMBERSHIP": "0",
            "AION_WATCHER_SESSION_TIMEOUT_MS": "45000",
            "AION_WATCHER_FETCH_WAIT_MS": "25",
        }
    )
    assert config.static_membership is False
    assert config.session_timeout == 45.0
    assert config.heartbeat_interval == 3.0  # a fifth of the session, at most 3 s
    assert config.fetch_max_wait == 0.025
    assert WatcherConfig.from_env({}).static_membership is None  # auto


def test_the_engine_reports_child_terminals_unless_told_otherwise() -> None:
    assert WatcherConfig.from_env({}).engine_reports_terminals is True
    config = WatcherConfig.from_env({"AION_WATCHER_ENGINE_REPORTS": "0"})
    assert config.engine_reports_terminals is False


@pytest.mark.parametrize(
    "env",
    [
        {"AION_WATCHER_STATIC_MEMBERSHIP": "maybe"},
        {"AION_WATCHER_SESSION_TIMEOUT_MS": "500"},
        {"AION_WATCHER_FETCH_WAIT_MS": "-1"},
    ],
)
def test_bad_membership_or_fetch_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        WatcherConfig.from_env(env)


@pytest.mark.parametrize(
    ("instance_id", "setting", "expected"),
    [
        ("aion-1", None, None),  # the default id is likely shared: dynamic membership
        ("watcher-7", None, "p.watcher.watcher-7"),
        ("watcher-7", False, None),
        ("aion-1", True, "p.watcher.aion-1"),
    ],
)
async def test_static_membership_is_keyed_by_the_instance_id(
    instance_id: str, setting: bool | None, expected: str | None
) -> None:
    settings = Settings(topic_prefix="p", instance_id=instance_id)
    service = WatcherService(settings, WatcherConfig(static_membership=setting))
    try:
        assert service.group_instance_id == expected
    finally:
        await service.stop()  # closes the never-started clients


def test_fetches_batch_while_the_engines_report_terminals_and_not_otherwise() -> None:
    sweeping = WatcherConfig.from_env({})  # the engines report: the watcher only sweeps
    assert (sweeping.fetch_wait, sweeping.fetch_bytes) == (0.2, 256 * 1024)
    issuing = WatcherConfig.from_env({"AION_WATCHER_ENGINE_REPORTS": "0"})
    assert (issuing.fetch_wait, issuing.fetch_bytes) == (0.01, 1)  # on every child's path
    told = WatcherConfig.from_env(
        {"AION_WATCHER_FETCH_WAIT_MS": "10", "AION_WATCHER_FETCH_MIN_BYTES": "1"}
    )
    assert (told.fetch_wait, told.fetch_bytes) == (0.01, 1)


@pytest.mark.parametrize("raw", ["0", "1.5", "many", str(32 * 1024 * 1024)])
def test_a_bad_fetch_min_bytes_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"FETCH_MIN_BYTES|fetch min bytes"):
        WatcherConfig.from_env({"AION_WATCHER_FETCH_MIN_BYTES": raw})


NUMERIC = [
    "AION_WATCHER_INITIAL_BACKOFF_MS",
    "AION_WATCHER_MAX_BACKOFF_MS",
    "AION_WATCHER_GRACE_MS",
    "AION_WATCHER_SWEEP_MS",
    "AION_WATCHER_SESSION_TIMEOUT_MS",
    "AION_WATCHER_FETCH_WAIT_MS",
    "AION_WATCHER_FETCH_MIN_BYTES",
    "AION_WATCHER_BLIND_LIMIT",
    "AION_WATCHER_PORT",
]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize(
    "raw",
    [
        *("inf", "-inf", "nan", "1e400"),
        pytest.param("1" + "0" * 400, id="10**400"),  # float() reads it as inf
        *("-1", "-0.5", "ten", "\u00b2"),  # a superscript 2: str.isdigit() but not int()
    ],
)
def test_every_numeric_setting_refuses_what_it_cannot_mean_by_name(name: str, raw: str) -> None:
    """Not finite, negative, or not a number: a SettingsError that names the variable (not an
    OverflowError from int(inf), nor nan accepted because it fails every comparison)."""
    with pytest.raises(SettingsError, match=name):
        WatcherConfig.from_env({name: raw})


_FIELDS = {"AION_WATCHER_BLIND_LIMIT": "blind_reissue_limit", "AION_WATCHER_PORT": "port"}


@pytest.mark.parametrize("name", list(_FIELDS))
def test_counts_are_whole_numbers(name: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}='2.5': expected a whole number"):
        WatcherConfig.from_env({name: "2.5"})
    assert WatcherConfig.from_env({name: "0"}) == WatcherConfig(**{_FIELDS[name]: 0})


def test_the_limits_that_are_meant_still_read() -> None:
    config = WatcherConfig.from_env(
        {
            "AION_WATCHER_FETCH_WAIT_MS": "0",
            "AION_WATCHER_FETCH_MIN_BYTES": "1e3",
            "AION_WATCHER_PORT": "65535",
            "AION_WATCHER_GRACE_MS": "0.5",
        }
    )
    assert (config.fetch_wait, config.fetch_bytes, config.port) == (0.0, 1000, 65535)
    assert config.grace_period == 0.0005
    for raw in ("0", str(16 * 1024 * 1024 + 1)):
        with pytest.raises(SettingsError, match=r"FETCH_MIN_BYTES=.*1\.\.16777216"):
            WatcherConfig.from_env({"AION_WATCHER_FETCH_MIN_BYTES": raw})
    with pytest.raises(SettingsError, match="AION_WATCHER_GRACE_MS='0': expected milliseconds > 0"):
        WatcherConfig.from_env({"AION_WATCHER_GRACE_MS": "0"})


@pytest.mark.parametrize("field", ["grace_period", "sweep_interval", "max_backoff"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_config_built_in_code_refuses_durations_that_are_not_finite(
    field: str, value: float
) -> None:
    with pytest.raises(SettingsError, match="finite"):
        WatcherConfig(**{field: value})


@pytest.mark.parametrize(
    ("name", "top"),
    [
        ("AION_WATCHER_SESSION_TIMEOUT_MS", MAX_SESSION_TIMEOUT_MS),  # the broker's maximum
        ("AION_WATCHER_GRACE_MS", 36_500 * 86_400_000),  # 100 years, as AION_RETENTION
        ("AION_WATCHER_SWEEP_MS", 36_500 * 86_400_000),
        ("AION_WATCHER_MAX_BACKOFF_MS", 36_500 * 86_400_000),
        ("AION_WATCHER_BLIND_LIMIT", 32),  # the 33rd would wait 2**32 grace periods
    ],
)
def test_each_watcher_bound_is_taken_and_past_it_is_refused_with_the_range(
    name: str, top: int
) -> None:
    WatcherConfig.from_env({name: str(top)})
    with pytest.raises(SettingsError, match=rf"{name}='{top + 1}': expected .*{top}"):
        WatcherConfig.from_env({name: str(top + 1)})
    with pytest.raises(SettingsError, match=name):
        WatcherConfig.from_env({name: "1e300"})  # finite: accepted before


def test_a_session_timeout_under_a_second_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match=r"SESSION_TIMEOUT_MS='999': expected .*from 1000"):
        WatcherConfig.from_env({"AION_WATCHER_SESSION_TIMEOUT_MS": "999"})


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("raw", ["", "  "])
def test_a_blank_numeric_setting_takes_the_default(name: str, raw: str) -> None:
    assert WatcherConfig.from_env({name: raw}) == WatcherConfig()
