"""Whether a process can reach its Kafka cluster, and how it waits for it (issue 19).

Kafka clients are expected to wait for the cluster, not to exit: a broker restart, a rolling
upgrade or a short network partition must not turn into service exits (under Kubernetes,
CrashLoopBackOff with minutes of backoff). :class:`BrokerLink` is the one place a process
learns that the cluster went away and came back:

- a probe asks the cluster for its metadata (no topics: a few bytes) every
  ``interval_s`` while it answers and every ``down_interval_s`` while it does not, over a
  client of its own, so it notices an outage within a few seconds even in a process that is
  idle, and a return within half a second;
- it logs **one** line when the cluster is lost and **one** when it is back (with how long it
  was gone), never one per attempt: while it is down, aiokafka's own warnings and errors (a
  line per connection attempt, per request, per client — thousands a minute) and the lines
  aion's retry loops mark as ``retrying`` are dropped and counted, and while it is up, each
  distinct such line is let through at most once a minute;
- :meth:`BrokerLink.report` is what a health endpoint shows: readiness is false while the
  cluster is unreachable, with the reason, and liveness is not affected;
- :meth:`BrokerLink.retry` runs a start-up step (ensuring topics, starting a client) until it
  succeeds, with capped, jittered exponential :class:`Backoff`, waiting for the cluster's
  return rather than hammering it; a non-retriable error (bad configuration, a refused
  topic, an authorisation failure) still ends it, with its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.protocol.metadata import MetadataRequest

from aion_common.domain.errors import InfrastructureError
from aion_common.kafka.options import client_options
from aion_common.settings import Settings

__all__ = [
    "RETRYING",
    "Attempts",
    "Backoff",
    "BrokerLink",
    "KafkaProbe",
    "LinkChange",
    "Probe",
    "is_retriable",
    "raise_if_cancelling",
]

_log = logging.getLogger("aion.kafka.link")
T = TypeVar("T")

RETRYING = {"retrying": True}
"""``extra=`` for a log line a retry loop writes per attempt: while the cluster is down it is
dropped (the link's own line said why), while it is up each distinct one shows once a minute."""

_REPEAT_S = 60.0  # a line repeated while the cluster is up shows again after this long
_SLOW_STEP_LOG_S = 30.0  # a start-up step failing while the cluster is up is logged this often


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Capped exponential backoff with jitter: ``initial * multiplier ** n``, at most
    ``maximum``, each delay spread by ±``jitter`` (gRPC's connection backoff uses ±0.2) so
    that processes that failed together do not retry together."""

    initial: float = 0.2
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.multiplier < 1:
            raise ValueError("backoff: need 0 < initial <= maximum and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff: jitter is a fraction in [0, 1)")

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1, 2, …)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        spread = random.uniform(-self.jitter, self.jitter)  # noqa: S311 - jitter, not secrets
        return min(self.maximum, base * (1 + spread))


def is_retriable(err: BaseException) -> bool:
    """Whether ``err`` is infrastructure trouble that waiting may cure.

    aion's :class:`InfrastructureError` says so itself; aiokafka marks its errors ``retriable``
    (its client-side timeout is not marked, but a timed-out request is worth retrying); an
    ``OSError`` (connection refused or reset) or a ``TimeoutError`` is.
    """
    if isinstance(err, InfrastructureError):
        return err.retriable
    if isinstance(err, KafkaTimeoutError):
        return True
    if isinstance(err, KafkaError):
        return bool(err.retriable)
    return isinstance(err, OSError | TimeoutError)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkChange:
    """The cluster became reachable (``up``) or not; what :meth:`BrokerLink.on_change` hears."""

    up: bool
    first: bool
    """The first answer since the link started (not a return)."""
    error: str | None = None
    down_for_s: float | None = None
    """For a return: how long it was away."""


class Probe(Protocol):
    """One reachability check: returns when the cluster answered, raises when it did not."""

    async def __call__(self) -> None:
        """Ask the cluster something cheap."""

    async def close(self) -> None:
        """Release the probe's connections."""


class KafkaProbe:
    """Asks any broker of the cluster for metadata without topics, over its own client.

    After a failure the client is dropped, so the next check bootstraps again from the
    configured addresses (a cluster whose brokers all restarted elsewhere is found again).
    """

    def __init__(self, settings: Settings, *, timeout_s: float, client_id: str) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._client_id = client_id
        self._client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._ask()
        except BaseException:
            await self.close()
            raise

    async def _ask(self) -> None:
        if self._client is None:
            client = AIOKafkaClient(
                **client_options(self._settings),
                client_id=self._client_id,
                request_timeout_ms=max(1, round(self._timeout_s * 1000)),
            )
            self._client = client
            await client.bootstrap()  # raises when no bootstrap address answers
            return
        client = self._client
        nodes = [broker.nodeId for broker in client.cluster.brokers()]
        random.shuffle(nodes)
        last: BaseException | None = None
        for node in nodes:
            try:
                answer = await client.send(node, MetadataRequest([]))
            except (KafkaError, OSError) as err:
                last = err  # that broker is away; another may answer
                continue
            client.cluster.update_metadata(answer)
            return
        raise KafkaConnectionError(f"no broker answered a metadata request ({last!r})")

    async def close(self) -> None:
        """Close the client, if any (never raises)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(client.close(), self._timeout_s)


class BrokerLink:
    """This process's view of whether the Kafka cluster answers (see the module docstring).

    ``name`` says whose link it is in its log lines. Start it with :meth:`start` (the first
    probe runs at once, in the background) and stop it with :meth:`stop`; ``up`` is false
    until a probe succeeded.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        interval_s: float = 1.0,
        down_interval_s: float = 0.5,
        timeout_s: float = 3.0,
        probe: Probe | None = None,
        quiet_clients: bool = True,
    ) -> None:
        self.name = name
        self.bootstrap = settings.bootstrap_servers
        self._interval_s = interval_s
        self._down_interval_s = down_interval_s
        self._probe: Probe = probe or KafkaProbe(
            settings, timeout_s=timeout_s, client_id=f"aion-{settings.instance_id}-link"
        )
        self._up: bool | None = None  # None: not probed yet
        self._since = time.time()
        self._down_since_mono: float | None = None
        self._error: str | None = None
        self._changed = asyncio.Event()
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._filter = _OutageNoise(self) if quiet_clients else None
        self._listeners: list[Callable[[LinkChange], None]] = []
        self.outages = 0
        self.returns = 0
        """How often the cluster answered again after being lost (a first answer is not one)."""
        self._answered = 0  # first answers and returns: what ends a pause early

    # -- state -----------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """The last probe (or a client operation since) reached the cluster."""
        return self._up is True

    @property
    def known_down(self) -> bool:
        """The last probe failed: the cluster is unreachable (not merely not probed yet)."""
        return self._up is False

    def report(self) -> dict[str, object]:
        """For a health body: ``reachable``, ``bootstrap``, ``since`` and, when down, ``error``
        and ``down_for_s``."""
        body: dict[str, object] = {
            "reachable": self.up,
            "bootstrap": self.bootstrap,
            "since": datetime.fromtimestamp(self._since, UTC).isoformat(timespec="seconds"),
        }
        if self._up is None:
            body["error"] = "not probed yet"
        elif not self._up:
            body["error"] = self._error
            if self._down_since_mono is not None:
                body["down_for_s"] = round(time.monotonic() - self._down_since_mono, 1)
        return body

    def not_ready_reason(self) -> str | None:
        """Why the process is not ready because of Kafka, or None when Kafka answers."""
        if self._up is None:
            return f"kafka at {self.bootstrap}: not reached yet"
        if not self._up:
            return f"kafka at {self.bootstrap} unreachable: {self._error}"
        return None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start probing in the background (idempotent); quieten client logs while down."""
        if self._task is not None:
            return
        if self._filter is not None:
            for handler in _handlers():
                handler.addFilter(self._filter)
        self._task = asyncio.create_task(self._watch(), name=f"kafka-link:{self.name}")

    async def stop(self) -> None:
        """Stop probing and close the probe's client; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._probe.close()
        if self._filter is not None:
            for handler in _handlers():
                handler.removeFilter(self._filter)

    def on_change(self, listener: Callable[[LinkChange], None]) -> None:
        """Call ``listener`` whenever the cluster is lost or back (after the log line)."""
        self._listeners.append(listener)

    def suspect(self) -> None:
        """A client operation failed as if the cluster were away: probe now, not later."""
        self._poke.set()

    # -- waiting ---------------------------------------------------------------------------

    async def wait_up(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - a bound
        """Until the cluster answers (True), or ``timeout`` seconds passed (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.up:
                    self._changed.clear()
                    await self._changed.wait()
        return self.up

    async def pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less once the cluster answers again after being away.

        A retry loop sleeps here: it does not hammer a cluster that is down, and it retries
        as soon as the cluster is back instead of finishing a long backoff first. That holds
        also when the pause began before the probe noticed the loss (a client's error is
        usually the first to know): any return during the pause ends it, not only one the
        link was already waiting for.
        """
        answered = self._answered
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                while self._answered == answered:
                    self._changed.clear()
                    await self._changed.wait()
                # back: a short random spread, so the processes do not all retry at once
                await asyncio.sleep(random.uniform(0, 0.1))  # noqa: S311 - jitter

    async def retry(
        self, step: Callable[[], Awaitable[T]], *, what: str, backoff: Backoff | None = None
    ) -> T:
        """Run ``step`` until it succeeds; retriable failures are retried after a backoff
        (waiting for the cluster while it is away), anything else is raised.

        While the cluster is up a failing step is logged (at most every 30 s); while it is
        down the link's own line already said why, so attempts are not logged one by one.
        """
        backoff = backoff or Backoff()
        attempt = 0
        logged_at = -_SLOW_STEP_LOG_S
        while True:
            try:
                result = await step()
            except Exception as err:
                raise_if_cancelling()
                if not is_retriable(err):
                    raise
                attempt += 1
                self.suspect()
                delay = backoff.delay(attempt)
                now = time.monotonic()
                if self.up and now - logged_at >= _SLOW_STEP_LOG_S:
                    logged_at = now
                    _log.warning(
                        "%s failed; retrying",
                        what,
                        extra={"link": self.name, "attempt": attempt, "error": repr(err)},
                    )
                await self.pause(delay)
                continue
            if attempt:
                _log.info("%s succeeded", what, extra={"link": self.name, "attempts": attempt + 1})
            return result

    # -- probing ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                await self._probe()
            except (KafkaError, OSError, TimeoutError) as err:
                raise_if_cancelling()
                self._mark(up=False, error=_describe(err))
            else:
                self._mark(up=True, error=None)
            self._poke.clear()
            interval = self._interval_s if self.up else self._down_interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), interval)

    def _mark(self, *, up: bool, error: str | None) -> None:
        was = self._up
        self._error = error
        if was is up:
            return
        self._up = up
        self._since = time.time()
        self._changed.set()
        fields: dict[str, Any] = {"link": self.name, "bootstrap": self.bootstrap}
        if up:
            down_for = None
            if self._down_since_mono is not None:
                down_for = round(time.monotonic() - self._down_since_mono, 1)
            self._down_since_mono = None
            self._answered += 1
            if was is not None:
                self.returns += 1
            suppressed = self._filter.take_suppressed() if self._filter is not None else 0
            if was is None:
                _log.info("kafka reachable", extra=fields)
            else:
                _log.info(
                    "kafka is back after %.1f s",
                    down_for or 0.0,
                    extra={**fields, "down_for_s": down_for, "lines_suppressed": suppressed},
                )
            self._tell(LinkChange(up=True, first=was is None, down_for_s=down_for))
            return
        self.outages += 1
        self._down_since_mono = time.monotonic()
        what = "kafka unreachable" if was is None else "lost kafka"
        _log.warning(
            "%s: waiting for it (not ready meanwhile; client errors are not logged until it "
            "is back)",
            what,
            extra={**fields, "error": error},
        )
        self._tell(LinkChange(up=False, first=was is None, error=error))

    def _tell(self, change: LinkChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the probing
                _log.exception("a kafka link listener failed")


def _handlers() -> list[logging.Handler]:
    """Where log records end up: the root logger's handlers, and the last-resort handler a
    process without logging configuration writes warnings with."""
    found = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        found.append(logging.lastResort)
    return found


class Attempts:
    """A retry loop's count of consecutive failures, for its :class:`Backoff`, that starts
    again once the cluster came back.

    A loop that counted every failure of an outage would wait the capped backoff (seconds)
    on the first failure after the return, which is often a transient error of a broker
    just started (its coordinator still loading); counted afresh, it waits the first one.
    """

    def __init__(self, link: BrokerLink) -> None:
        self._link = link
        self._count = 0
        self._returns = link.returns

    def failed(self) -> int:
        """Count a failure; the attempt number to back off for (1 after a return)."""
        if self._link.returns != self._returns:
            self._returns, self._count = self._link.returns, 0
        self._count += 1
        return self._count

    def succeeded(self) -> None:
        """The loop's step worked: the next failure is the first again."""
        self._count = 0


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a Kafka client turned into an error.

    aiokafka can swallow the ``CancelledError`` of a task cancelled while it connects and
    raise its own connection error instead (measured: a probe loop cancelled during
    ``bootstrap()`` kept running with ``cancelling() == 1``); a loop that catches that error
    to retry would then never stop. Call this in such an ``except`` clause.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _describe(err: BaseException) -> str:
    text, name = str(err), type(err).__name__
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"  # aiokafka's start with it


class _OutageNoise(logging.Filter):
    """Drops Kafka-client warnings and retry lines while the link is down; while it is up, lets
    each distinct one through once a minute. Installed on the root logger's handlers."""

    def __init__(self, link: BrokerLink) -> None:
        super().__init__()
        self._link = link
        self._seen: dict[tuple[str, object], float] = {}
        self._suppressed = 0
        # Every handler asks about the same record in turn: answer them all alike.
        self._last: tuple[logging.LogRecord, bool] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._last is not None and self._last[0] is record:
            return self._last[1]
        verdict = self._judge(record)
        self._last = (record, verdict)
        return verdict

    def _judge(self, record: logging.LogRecord) -> bool:
        noisy = record.name.startswith("aiokafka") or getattr(record, "retrying", False)
        if not noisy or record.levelno < logging.WARNING or record.levelno >= logging.CRITICAL:
            return True
        if self._link.known_down:
            self._suppressed += 1
            return False
        key = (record.name, record.msg)
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last < _REPEAT_S:
            self._suppressed += 1
            return False
        if len(self._seen) > 1000:  # noqa: PLR2004 - formatted messages make many keys
            self._seen.clear()
        self._seen[key] = now
        return True

    def take_suppressed(self) -> int:
        count, self._suppressed = self._suppressed, 0
        return count
