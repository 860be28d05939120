"""Pure units: reading an OffsetFetch answer, and the engine's group-membership settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from aion_common.settings import Settings, SettingsError
from aion_engine.__main__ import Membership, membership_from_env
from aion_engine._offsets import OffsetFetchRetry, committed_from_response

TP = TopicPartition("p.commands", 2)


def _answer(offset: int, *, top: int = 0, partition_error: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        topics=[("p.commands", [(1, 7, "", 0), (2, offset, "", partition_error)])],
        error_code=top,
    )


def test_a_committed_offset_is_read_for_its_partition() -> None:
    assert committed_from_response(_answer(42), TP) == 42


def test_minus_one_without_any_error_means_nothing_committed() -> None:
    assert committed_from_response(_answer(-1), TP) is None


@pytest.mark.parametrize("code", [14, 15, 16, 88])
def test_a_coordinator_error_at_the_top_level_is_retried_not_read_as_nothing_committed(
    code: int,
) -> None:
    # What a broker answers while it loads the group after a restart: every partition at -1
    # with no partition error, the reason only in the top-level error code.
    with pytest.raises(OffsetFetchRetry):
        committed_from_response(_answer(-1, top=code), TP)


def test_a_coordinator_error_on_the_partition_is_retried() -> None:
    with pytest.raises(OffsetFetchRetry):
        committed_from_response(_answer(-1, partition_error=14), TP)


def test_any_other_error_is_raised() -> None:
    with pytest.raises(KafkaError, match="GroupAuthorizationFailed"):
        committed_from_response(_answer(-1, top=30), TP)


def test_static_membership_is_on_when_the_instance_id_is_set() -> None:
    named = Settings(instance_id="engine-7")
    assert membership_from_env({}, named) == Membership(static=True, session_timeout_ms=10_000)
    assert membership_from_env({}, Settings()).static is False
    off = {"AION_ENGINE_STATIC_MEMBERSHIP": "off", "AION_ENGINE_SESSION_TIMEOUT_MS": "45000"}
    assert membership_from_env(off, named) == Membership(static=False, session_timeout_ms=45_000)
    assert membership_from_env({"AION_ENGINE_STATIC_MEMBERSHIP": "on"}, Settings()).static


@pytest.mark.parametrize(
    "environ",
    [
        {"AION_ENGINE_STATIC_MEMBERSHIP": "maybe"},
        {"AION_ENGINE_SESSION_TIMEOUT_MS": "500"},
        {"AION_ENGINE_SESSION_TIMEOUT_MS": "10s"},
    ],
)
def test_bad_membership_settings_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        membership_from_env(environ, Settings())
