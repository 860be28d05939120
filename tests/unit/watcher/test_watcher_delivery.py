"""Delivery retries (capped exponential backoff) and the watcher's configuration from env."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aion_common.domain import Completed, InfrastructureError, Payload, RecordChildTerminal
from aion_common.settings import SettingsError
from aion_watcher import WatcherConfig, deliver

COMMAND = RecordChildTerminal(
    command_id="c",
    issued_at=datetime(2026, 1, 1, tzinfo=UTC),
    workflow_id="parent",
    parent_run_id="r",
    child_workflow_id="child",
    child_run_id="cr",
    outcome=Completed(result=Payload.from_json(1)),
)


class Scripted:
    def __init__(self, *errors: InfrastructureError) -> None:
        self.errors = list(errors)
        self.sent: list[RecordChildTerminal] = []

    async def send(self, command: RecordChildTerminal) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(command)


async def test_retriable_failures_back_off_doubling_up_to_the_cap() -> None:
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    transient = InfrastructureError("broker away", retriable=True)
    sender = Scripted(*[transient] * 5)
    retries: list[int] = []
    config = WatcherConfig(initial_backoff=0.1, max_backoff=0.5)
    await deliver(sender, COMMAND, config, on_retry=lambda: retries.append(1), sleep=fake_sleep)
    assert sleeps == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert len(retries) == 5
    assert sender.sent == [COMMAND]


async def test_a_non_retriable_failure_propagates() -> None:
    sender = Scripted(InfrastructureError("record too large", retriable=False))
    with pytest.raises(InfrastructureError, match="too large"):
        await deliver(sender, COMMAND, WatcherConfig())
    assert sender.sent == []


def test_config_from_env_reads_milliseconds() -> None:
    config = WatcherConfig.from_env(
        {
            "AION_WATCHER_INITIAL_BACKOFF_MS": "20",
            "AION_WATCHER_MAX_BACKOFF_MS": "1000",
            "AION_WATCHER_GRACE_MS": "3000",
            "AION_WATCHER_SWEEP_MS": "500",
            "AION_WATCHER_PORT": "9105",
        }
    )
    assert (config.initial_backoff, config.max_backoff) == (0.02, 1.0)
    assert (config.grace_period, config.sweep_interval, config.port) == (3.0, 0.5, 9105)
    assert WatcherConfig.from_env({}) == WatcherConfig()


@pytest.mark.parametrize(
    "env",
    [
        {"AION_WATCHER_GRACE_MS": "soon"},
        {"AION_WATCHER_INITIAL_BACKOFF_MS": "900", "AION_WATCHER_MAX_BACKOFF_MS": "100"},
        {"AION_WATCHER_PORT": "70000"},
    ],
)
def test_bad_config_is_refused_naming_the_problem(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=r"AION_WATCHER|watcher"):
        WatcherConfig.from_env(env)
