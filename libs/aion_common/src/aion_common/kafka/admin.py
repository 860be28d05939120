"""Create aion's topics idempotently and refuse to run on mismatched partition counts.

All aion topics share one partition count (``AION_PARTITIONS``): a workflow's commands and
events must share a partition number. :func:`ensure_topics` creates what is missing — two
services starting at once both ask, and the loser's ``TOPIC_ALREADY_EXISTS`` is fine — then
describes every topic and raises :class:`TopicMismatch` if any count differs.

Which topics exist is asked without allowing the broker to auto-create them (aiokafka's own
metadata requests allow it, which would create a topic with the broker's default partition
count). Topics are created durable (:mod:`aion_common.kafka.durability`): with
``min.insync.replicas``, unclean election off, and only when the cluster has the brokers for
``AION_REPLICATION_FACTOR``; existing ones weaker than configured are warned about.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.metadata import MetadataRequest

from aion_common.domain.errors import InfrastructureError
from aion_common.kafka.durability import check_replication, durable_configs, warn_weaker
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options, max_record_bytes
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

__all__ = ["TopicMismatch", "ensure_task_topic", "ensure_topics", "topic_configs"]

_log = logging.getLogger(__name__)

_NO_ERROR = 0
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
_RETRIABLE_METADATA = frozenset({3, 5})  # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE
_DESCRIBE_ATTEMPTS = 50
_DESCRIBE_BACKOFF_S = 0.2
_DAY_MS = 24 * 60 * 60 * 1000
_FOREVER = "-1"


class TopicMismatch(InfrastructureError):
    """aion topics exist with partition counts that differ from the settings or each other."""

    def __init__(self, expected: int, counts: Mapping[str, int]) -> None:
        listing = ", ".join(f"{topic}={count}" for topic, count in sorted(counts.items()))
        super().__init__(
            f"aion topics must all have AION_PARTITIONS={expected} partitions, found: {listing}. "
            "A workflow's commands and events must share a partition number, so aion refuses "
            "to start. Set AION_PARTITIONS to the existing count, or recreate the topics with "
            "the same count (events are the source of truth: do not delete them in production; "
            "use kafka-topics.sh --alter --partitions only on empty topics, since adding "
            "partitions moves workflows to other partitions).",
            retriable=False,
        )
        self.expected = expected
        self.counts = dict(counts)


def topic_configs(topics: Topics, settings: Settings) -> dict[str, dict[str, str]]:
    """The topic-level configs aion creates each of its topics with."""
    common = {"cleanup.policy": "delete", "max.message.bytes": str(max_record_bytes(settings))}
    return {
        # The event log is the source of truth: never expire it.
        topics.events: {**common, "retention.ms": _FOREVER, "retention.bytes": _FOREVER},
        topics.commands: {**common, "retention.ms": str(30 * _DAY_MS)},
        topics.replies: {**common, "retention.ms": str(7 * _DAY_MS)},
        # Dead letters wait for an operator; they must not vanish first.
        topics.dead_letter: {**common, "retention.ms": _FOREVER, "retention.bytes": _FOREVER},
        # State changelogs: the latest record per key is the state; tombstones stay readable for
        # a day (a local store whose checkpoint is older than half that is rebuilt from scratch,
        # see aion_common.kafka.changelog); cleaned when a fifth of the log is superseded. The
        # engine's changelog of open work is nearly all superseded soon after it is written
        # (every closed run's records): its segments roll every hour and its tombstones stay an
        # hour, so a cold restore reads open work plus at most a few hours of churn
        # (ENGINE_STATE_STALE_MS in aion_engine._recovery is under half that hour). The
        # watcher's changelog of open work likewise (WATCHER_STATE_STALE_MS, aion_watcher.stores).
        topics.engine_state: _changelog_config(settings, hours=1),
        topics.engine_closed: _changelog_config(settings),
        topics.watcher_state: _changelog_config(settings, hours=1),
        topics.watcher_closed: _changelog_config(settings),
    }


def _changelog_config(settings: Settings, *, hours: int = 24) -> dict[str, str]:
    """A compacted changelog whose segments roll, and whose tombstones stay, ``hours``."""
    window = str(hours * _DAY_MS // 24)
    return {
        "cleanup.policy": "compact",
        "max.message.bytes": str(max_record_bytes(settings)),
        "delete.retention.ms": window,
        "min.cleanable.dirty.ratio": "0.2",
        "segment.ms": window,
    }


def task_topic_config(settings: Settings) -> dict[str, str]:
    """A task queue's topic: tasks may wait for a worker a long time, as commands may."""
    return {
        "cleanup.policy": "delete",
        "max.message.bytes": str(max_record_bytes(settings)),
        "retention.ms": str(30 * _DAY_MS),
    }


async def ensure_task_topic(settings: Settings, topics: Topics, queue: str) -> None:
    """Create task queue ``queue``'s topic if missing (with the shared partition count)."""
    name = topics.tasks(queue)
    await ensure_topics(settings, [name], configs={name: task_topic_config(settings)})


async def ensure_topics(
    settings: Settings,
    topics: Topics | Iterable[str],
    *,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, int]:
    """Create missing aion topics, verify every partition count; return ``{topic: count}``.

    Raises :class:`TopicMismatch` (not retriable) when counts disagree,
    :class:`~aion_common.kafka.durability.ReplicationTooHigh` (not retriable) when topics to
    create need more brokers than the cluster has, and :class:`InfrastructureError` when the
    broker cannot be reached or refuses to create a topic that does not exist.
    """
    if configs is None:
        configs = topic_configs(topics, settings) if isinstance(topics, Topics) else {}
    names = list(topics.all() if isinstance(topics, Topics) else topics)
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="aion-admin")
    try:
        await admin.start()
        replicas, brokers = await _existing(admin, names)
        missing = [name for name in names if name not in replicas]
        check_replication(settings, brokers, missing)
        create_errors = await _create(admin, settings, missing, configs) if missing else {}
        counts = await _partition_counts(admin, names, create_errors)
        if replicas:
            await warn_weaker(admin, settings, replicas)
    except KafkaError as err:
        raise infrastructure_error(err, "ensuring aion topics") from err
    finally:
        await admin.close()
    if any(count != settings.partitions for count in counts.values()):
        raise TopicMismatch(settings.partitions, counts)
    return counts


async def _existing(admin: AIOKafkaAdminClient, names: list[str]) -> tuple[dict[str, int], int]:
    """Which of ``names`` exist (each with its fewest replicas over its partitions), and how
    many brokers the cluster has registered; asked without allowing auto-creation."""
    request = MetadataRequest(names, allow_auto_topic_creation=False)
    response: Any = await admin._send_request(request)  # aiokafka has no public call for it
    answer = response.to_object()
    replicas: dict[str, int] = {}
    for entry in answer["topics"]:
        if entry["error_code"] == _UNKNOWN_TOPIC or not entry["partitions"]:
            continue
        replicas[entry["topic"]] = min(len(p["replicas"]) for p in entry["partitions"])
    return replicas, len(answer["brokers"])


async def _create(
    admin: AIOKafkaAdminClient,
    settings: Settings,
    names: list[str],
    configs: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """Ask the broker to create every topic; return the errors other than already-exists."""
    new_topics = [
        NewTopic(
            name,
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs={**durable_configs(settings), **configs.get(name, {})},
        )
        for name in names
    ]
    response = await admin.create_topics(new_topics)
    errors: dict[str, str] = {}
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None  # noqa: PLR2004 - v1+ carries a message
        if code == _NO_ERROR:
            _log.info("created topic", extra={"topic": topic, "partitions": settings.partitions})
        elif code != _TOPIC_ALREADY_EXISTS:
            errors[topic] = f"{for_code(code).__name__}: {message or ''}".rstrip(": ")
    return errors


async def _partition_counts(
    admin: AIOKafkaAdminClient, names: list[str], create_errors: Mapping[str, str]
) -> dict[str, int]:
    """Describe ``names`` until each reports its partitions (a new topic takes a moment)."""
    pending: dict[str, int] = {}
    for _ in range(_DESCRIBE_ATTEMPTS):
        described: list[Any] = await admin.describe_topics(names)
        pending = {}
        counts: dict[str, int] = {}
        for entry in described:
            code = entry["error_code"]
            if code == _NO_ERROR and entry["partitions"]:
                counts[entry["topic"]] = len(entry["partitions"])
            else:
                pending[entry["topic"]] = code
        if not pending:
            return counts
        fatal = {t: c for t, c in pending.items() if c not in _RETRIABLE_METADATA}
        if fatal:
            break
        await asyncio.sleep(_DESCRIBE_BACKOFF_S)
    problems = ", ".join(
        f"{topic}: {create_errors.get(topic) or for_code(code).__name__}"
        for topic, code in sorted(pending.items())
    )
    raise InfrastructureError(
        f"aion topics are missing or unavailable ({problems}); create them with "
        f"AION_PARTITIONS partitions or grant the service permission to create topics",
        retriable=not any(topic in create_errors for topic in pending),
    )
