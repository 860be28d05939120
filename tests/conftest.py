"""Fixtures shared by every suite under tests/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
