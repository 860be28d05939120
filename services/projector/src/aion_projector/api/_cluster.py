"""What the registry page asks of Kafka: which engine owns which partition, and the offsets
that give each partition's lag. A port (:class:`ClusterView`) and its Kafka implementation.

Ownership is the engine consumer group's current assignment (DescribeGroups), not a guess from
the views: the registry table says which instance *wrote* a run's last events, the group says
who holds the partition now. Answers are cached for a moment (the page may be refreshed by
many people), and a broker that does not answer in time gives a snapshot with ``error`` set
rather than a failed page.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorError,
)

from aion_common.kafka import Topics, client_options
from aion_common.settings import Settings

__all__ = ["ClusterSnapshot", "ClusterView", "EngineMember", "KafkaClusterView", "PartitionState"]

_CACHE_S = 2.0
_TIMEOUT_S = 5.0
_COORDINATOR_RETRY_S = 0.2
_COORDINATOR_MOVING = (
    CoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorError,
)
_MEMBER_SUFFIX = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineMember:
    """A member of the engine group: its name (the instance id when static), host, partitions."""

    name: str
    host: str
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionState:
    """One partition: its engine, and the offsets behind the lags (None where unknown)."""

    partition: int
    owner: str | None
    commands_end: int | None
    engine_committed: int | None
    events_end: int | None

    @property
    def engine_lag(self) -> int | None:
        """Commands not yet consumed by the engine group."""
        if self.commands_end is None:
            return None
        return max(0, self.commands_end - (self.engine_committed or 0))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSnapshot:
    """The engine group and every partition's offsets, as of ``taken_at`` (epoch seconds)."""

    group: str
    group_state: str | None
    members: tuple[EngineMember, ...] = ()
    partitions: tuple[PartitionState, ...] = ()
    taken_at: float = field(default_factory=time.time)
    error: str | None = None


class ClusterView(Protocol):
    """Where the registry page reads the engine group and the topics' offsets."""

    async def snapshot(self) -> ClusterSnapshot:
        """The current state; never raises for an unreachable broker (``error`` says so)."""
        ...


def member_name(member_id: str, group: str) -> str:
    """``aion.engine.engine-1-<uuid>`` → ``engine-1`` (a static member's instance id)."""
    name = _MEMBER_SUFFIX.sub("", member_id)
    return name.removeprefix(f"{group}.")


class KafkaClusterView:
    """:class:`ClusterView` over an admin client and an offsets-only consumer (no group)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._group = f"{settings.topic_prefix}.engine"
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._cached: ClusterSnapshot | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect; a broker that is away now is connected to at a later snapshot (the API
        starts, and serves everything else, without Kafka: issue 19)."""
        with contextlib.suppress(KafkaError, OSError):
            await self._connect()

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        """The clients, started now if they are not yet (new ones each time: aiokafka's
        cannot start again after a failed start)."""
        if self._admin is not None and self._consumer is not None:
            return self._admin, self._consumer
        admin = AIOKafkaAdminClient(**client_options(self._settings))
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        try:
            await admin.start()
            await consumer.start()
        except BaseException:
            await _close(admin, consumer)
            raise
        self._admin, self._consumer = admin, consumer
        return admin, consumer

    async def stop(self) -> None:
        """Close both clients (idempotent)."""
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if admin is not None and consumer is not None:
            await _close(admin, consumer)

    async def snapshot(self) -> ClusterSnapshot:
        """Cached for two seconds; a failure is reported in the snapshot, not raised."""
        async with self._lock:
            cached = self._cached
            if cached is not None and time.time() - cached.taken_at < _CACHE_S:
                return cached
            try:
                async with asyncio.timeout(_TIMEOUT_S):
                    fresh = await self._read()
            except (KafkaError, OSError, TimeoutError) as err:
                fresh = ClusterSnapshot(
                    group=self._group,
                    group_state=None,
                    error=f"Kafka did not answer: {type(err).__name__}: {err}".rstrip(": "),
                )
            self._cached = fresh
            return fresh

    async def _read(self) -> ClusterSnapshot:
        admin, consumer = await self._connect()
        count = self._settings.partitions
        commands = [TopicPartition(self._topics.commands, p) for p in range(count)]
        events = [TopicPartition(self._topics.events, p) for p in range(count)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(commands + events)
        while True:  # bounded by the snapshot's timeout
            try:
                committed = await admin.list_consumer_group_offsets(
                    self._group, partitions=commands
                )
                state, members = await self._members(admin)
                break
            except _COORDINATOR_MOVING:
                # a broker that never hosted a group creates __consumer_offsets on the first
                # lookup (and a coordinator moves in a failover): ask again until it answers
                await asyncio.sleep(_COORDINATOR_RETRY_S)
        owners = {p: m.name for m in members for p in m.partitions}
        partitions = tuple(
            PartitionState(
                partition=p,
                owner=owners.get(p),
                commands_end=ends.get(commands[p]),
                engine_committed=_offset(committed.get(commands[p])),
                events_end=ends.get(events[p]),
            )
            for p in range(count)
        )
        return ClusterSnapshot(
            group=self._group, group_state=state, members=members, partitions=partitions
        )

    async def _members(
        self, admin: AIOKafkaAdminClient
    ) -> tuple[str | None, tuple[EngineMember, ...]]:
        responses: list[Any] = await admin.describe_consumer_groups([self._group])
        for response in responses:
            for group in response.to_object()["groups"]:
                if group["group"] != self._group:
                    continue
                members = tuple(
                    sorted(
                        (self._member(m) for m in group["members"]),
                        key=lambda m: (m.partitions[:1] or (1 << 31,), m.name),
                    )
                )
                return str(group["state"]), members
        return None, ()

    def _member(self, raw: dict[str, Any]) -> EngineMember:
        partitions: tuple[int, ...] = ()
        if raw["member_assignment"]:
            assignment = ConsumerProtocolMemberAssignment.decode(raw["member_assignment"])
            partitions = tuple(
                sorted(
                    tp.partition
                    for tp in assignment.partitions()
                    if tp.topic == self._topics.commands
                )
            )
        return EngineMember(
            name=member_name(raw["member_id"], self._group),
            host=str(raw["client_host"]).lstrip("/"),
            partitions=partitions,
        )


def _offset(meta: Any) -> int | None:
    if meta is None or meta.offset < 0:
        return None
    return int(meta.offset)


async def _close(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
    """Close both, bounded: a broker that is away must not hold the API's shutdown."""
    with contextlib.suppress(KafkaError, OSError, TimeoutError):
        await asyncio.wait_for(consumer.stop(), _TIMEOUT_S)
    with contextlib.suppress(KafkaError, OSError, TimeoutError):
        await asyncio.wait_for(admin.close(), _TIMEOUT_S)
