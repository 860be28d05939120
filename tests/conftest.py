"""Fixtures shared by every suite under tests/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import _leaks  # tests/ is on sys.path: this conftest's own directory
from aion_common.testing.broker import KafkaBroker


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, for tests that stop and restart it mid-test."""
    broker = KafkaBroker(tmp_path / "kafka", die_with_parent=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def pytest_configure(config: pytest.Config) -> None:
    # a plugin, not conftest hooks: those miss session-scoped fixtures (set up on the session)
    if _leaks.available():
        config.pluginmanager.register(_leaks.LeakCheck(), "aion-leak-check")
