"""``aion_common.kafka.link``: backoff, and the link's state machine, log lines and retries
(a scripted probe stands in for the cluster; the real probe is tested on a real broker in
``tests/integration/test_kafka_link.py``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from tests.unit.link_fakes import ScriptedProbe, until

from aion_common.domain import InfrastructureError
from aion_common.kafka.link import RETRYING, Attempts, Backoff, BrokerLink, is_retriable
from aion_common.settings import Settings

_OURS = "link test: unable to connect to node %s"
"""An aiokafka-shaped line no real client logs: the session's event loop is shared, so a client
an earlier test left running may log its own ("Unable connect to node with id 1") meanwhile."""


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, logger: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _link(probe: ScriptedProbe) -> BrokerLink:
    return BrokerLink(
        Settings(bootstrap_servers="127.0.0.1:9"),
        name="test",
        interval_s=0.05,
        down_interval_s=0.05,
        probe=probe,
    )


def test_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    backoff = Backoff(initial=0.2, maximum=5.0, jitter=0.2)
    for attempt, base in ((1, 0.2), (2, 0.4), (3, 0.8), (6, 5.0), (40, 5.0)):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert min(delays) >= base * 0.8 - 1e-9
        assert max(delays) <= min(5.0, base * 1.2) + 1e-9
        assert len(set(delays)) > 1, "jittered"


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=2, maximum=1)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)


def test_what_is_retriable() -> None:
    assert is_retriable(KafkaConnectionError())
    assert is_retriable(InfrastructureError("x", retriable=True))
    assert is_retriable(ConnectionRefusedError())
    assert is_retriable(TimeoutError())
    assert not is_retriable(InfrastructureError("bad config", retriable=False))
    assert not is_retriable(TopicAuthorizationFailedError())
    assert not is_retriable(ValueError("a bug"))


async def test_one_line_on_loss_and_one_on_return_whatever_the_clients_log(lines: Lines) -> None:
    probe = ScriptedProbe()
    link = _link(probe)
    await link.start()
    try:
        await until(lambda: link.up)
        assert link.report()["reachable"] is True
        assert link.not_ready_reason() is None
        probe.up = False
        await until(lambda: link.known_down)
        reason = link.not_ready_reason()
        assert reason is not None
        assert "127.0.0.1:9 unreachable" in reason
        assert "KafkaConnectionError" in reason
        report = link.report()
        assert report["reachable"] is False
        assert "down_for_s" in report
        # While it is down, the Kafka client's errors and our retry lines are dropped ...
        for _ in range(50):
            logging.getLogger("aiokafka").error(_OURS, "link-test")
            logging.getLogger("aion.engine").warning("acquisition failed", extra=RETRYING)
        logging.getLogger("aion.engine").warning("something else")  # ... other lines are not
        await asyncio.sleep(0.2)  # several probes fail meanwhile: still one line
        probe.up = True
        await until(lambda: link.up)
    finally:
        await link.stop()
    assert probe.closed
    assert lines.messages("aion.kafka.link") == [
        "kafka reachable",
        "lost kafka: waiting for it (not ready meanwhile; client errors are not logged until "
        "it is back)",
        lines.messages("aion.kafka.link")[2],
    ]
    assert lines.messages("aion.kafka.link")[2].startswith("kafka is back after ")
    back = next(r for r in lines.records if r.getMessage().startswith("kafka is back"))
    # at least this test's 100: the session's event loop is shared, and a Kafka client an
    # earlier test left running logs through the same filter (seen in CI: "Unable to update
    # metadata from [1]" for a stopped broker), so only this test's own lines are judged
    assert back.lines_suppressed >= 100  # type: ignore[attr-defined]
    # Filtered on the handlers, not the loggers: this handler was added before the link.
    assert [m for m in lines.messages("aiokafka") if "link-test" in m] == []
    assert lines.messages("aion.engine") == ["something else"]


async def test_while_up_a_repeated_client_line_shows_once(lines: Lines) -> None:
    link = _link(ScriptedProbe())
    await link.start()
    try:
        await until(lambda: link.up)
        for node in range(5):
            logging.getLogger("aiokafka").error(_OURS, f"link-test-{node}")
        logging.getLogger("aiokafka").info("Joined group %s", "link-test")
        logging.getLogger("aiokafka").info("Joined group %s", "link-test")
    finally:
        await link.stop()
    ours = [m for m in lines.messages("aiokafka") if "link-test" in m]
    assert ours == [
        "link test: unable to connect to node link-test-0",
        "Joined group link-test",
        "Joined group link-test",
    ]
    # Stopped: the filter is gone.
    logging.getLogger("aiokafka").error(_OURS, "link-test-0")
    assert lines.messages("aiokafka")[-1] == "link test: unable to connect to node link-test-0"


async def test_retry_waits_for_the_cluster_and_raises_what_waiting_cannot_cure() -> None:
    probe = ScriptedProbe()
    probe.up = False
    link = _link(probe)
    await link.start()
    attempts: list[bool] = []

    async def ensure_topics() -> str:
        attempts.append(link.up)
        if not probe.up:
            raise InfrastructureError("ensuring aion topics failed", retriable=True)
        return "done"

    async def bring_back() -> None:
        await asyncio.sleep(0.3)
        probe.up = True

    try:
        back = asyncio.create_task(bring_back())
        result = await link.retry(ensure_topics, what="ensuring aion topics")
        await back
        assert result == "done"
        assert attempts[-1] is True
        assert len(attempts) >= 2

        async def misconfigured() -> None:
            raise InfrastructureError("AION_PARTITIONS=3 but topics have 6", retriable=False)

        with pytest.raises(InfrastructureError, match="AION_PARTITIONS"):
            await link.retry(misconfigured, what="ensuring aion topics")
    finally:
        await link.stop()


async def test_pause_ends_early_when_the_cluster_returns() -> None:
    probe = ScriptedProbe()
    probe.up = False
    link = _link(probe)
    await link.start()
    try:
        await until(lambda: link.known_down)
        loop = asyncio.get_running_loop()
        began = loop.time()
        pausing = asyncio.create_task(link.pause(30.0))
        await asyncio.sleep(0.1)
        assert not pausing.done()
        probe.up = True
        await asyncio.wait_for(pausing, 5)
        assert loop.time() - began < 5
    finally:
        await link.stop()


async def test_pause_ends_at_a_return_the_link_had_not_yet_seen_coming() -> None:
    # A client's error is usually the first to know: the pause begins while the link still
    # says up, then the probe sees the loss and the return within it.
    probe = ScriptedProbe()
    link = _link(probe)
    await link.start()
    try:
        await until(lambda: link.up)
        loop = asyncio.get_running_loop()
        began = loop.time()
        pausing = asyncio.create_task(link.pause(30.0))
        probe.up = False
        await until(lambda: link.known_down)
        assert not pausing.done()
        probe.up = True
        await asyncio.wait_for(pausing, 5)
        assert loop.time() - began < 5
        assert link.returns == 1
    finally:
        await link.stop()


async def test_pause_sleeps_its_delay_while_the_cluster_stays_up() -> None:
    probe = ScriptedProbe()
    link = _link(probe)
    await link.start()
    try:
        await until(lambda: link.up)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await link.pause(0.3)
        assert loop.time() - began >= 0.29
    finally:
        await link.stop()


async def test_attempts_are_counted_afresh_after_the_cluster_returned() -> None:
    probe = ScriptedProbe()
    link = _link(probe)
    await link.start()
    try:
        await until(lambda: link.up)
        attempts = Attempts(link)
        assert [attempts.failed() for _ in range(3)] == [1, 2, 3]
        probe.up = False
        await until(lambda: link.known_down)
        assert attempts.failed() == 4  # the same outage: the backoff keeps growing
        probe.up = True
        await until(lambda: link.up)
        assert attempts.failed() == 1  # the first failure after the return
        assert attempts.failed() == 2
        attempts.succeeded()
        assert attempts.failed() == 1
    finally:
        await link.stop()
