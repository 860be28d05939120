"""``WatcherConfig.from_env``: the group-membership and fetch settings added for issue 4."""

from __future__ import annotations

import pytest

from aion_common.settings import Settings, SettingsError
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
