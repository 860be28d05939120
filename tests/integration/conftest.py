"""A guard for every integration test: no Kafka client it started is left running.

A service that forgets to stop a consumer or producer on some path (a failed start, a stop cut
short, an error mid-rebalance) leaves aiokafka's metadata task polling the broker for the life
of the process: in a user's process that is a connection and a task per restart, and here it
was the source of "Task was destroyed but it is pending" noise and of tests slowed by clients
of earlier tests. Each aiokafka client made during a test is tracked; one whose metadata task
still runs once the test's fixtures are torn down fails the test, naming the client.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import aiokafka.client
import pytest

_made: weakref.WeakSet[aiokafka.client.AIOKafkaClient] = weakref.WeakSet()
_init = aiokafka.client.AIOKafkaClient.__init__


def _tracked_init(self: aiokafka.client.AIOKafkaClient, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    _made.add(self)


aiokafka.client.AIOKafkaClient.__init__ = _tracked_init


def _running(client: aiokafka.client.AIOKafkaClient) -> bool:
    task = getattr(client, "_sync_task", None)  # aiokafka 0.14: the metadata loop
    return task is not None and not task.done()


@pytest.fixture(autouse=True)
def no_kafka_client_left_running() -> Iterator[None]:
    """Fail the test if a Kafka client made during it still runs after its teardown."""
    before = set(_made)
    yield
    left = [c for c in _made if c not in before and _running(c)]
    if left:
        names = ", ".join(sorted(str(getattr(c, "_client_id", "?")) for c in left))
        pytest.fail(
            f"{len(left)} Kafka client(s) made by this test still run after it ended: {names} "
            "(a consumer or producer was not stopped)",
            pytrace=False,
        )
