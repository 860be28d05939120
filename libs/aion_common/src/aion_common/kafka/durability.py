"""How durable aion's topics are: what they are created with, checked, and warned about (issue 22).

An event batch the engine was told is committed must survive losing a broker. So every aion
topic is created with ``min.insync.replicas`` = ``AION_MIN_INSYNC_REPLICAS`` (default
``min(2, AION_REPLICATION_FACTOR)``) and unclean leader election off, and every producer writes
with ``acks=all`` (idempotent): a write is acknowledged only once that many replicas have it,
and an out-of-sync replica never becomes leader. With replication factor 3 and 2 in sync, one
broker may be lost without losing or refusing anything.

- :func:`check_replication`: topics to create need ``AION_REPLICATION_FACTOR`` brokers; with
  fewer registered, start fails at once with an error naming both numbers (the broker's own
  ``INVALID_REPLICATION_FACTOR`` says less). Only topics to *create* are checked: a cluster
  that lost a broker while its topics exist is waited out, never a reason to exit.
- :func:`warn_weaker`: topics that already exist with a lower replication factor, a lower
  ``min.insync.replicas`` or unclean election on are reported in one warning per process
  (never silently), with the commands that fix them; aion does not alter existing topics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from aion_common.domain.errors import InfrastructureError
from aion_common.settings import Settings

__all__ = ["ReplicationTooHigh", "check_replication", "durable_configs", "warn_weaker"]

_log = logging.getLogger("aion.kafka.durability")
_MIN_ISR = "min.insync.replicas"
_UNCLEAN = "unclean.leader.election.enable"
_warned: set[tuple[str, str]] = set()


class ReplicationTooHigh(InfrastructureError):
    """Topics must be created with more replicas than the cluster has brokers."""

    def __init__(self, settings: Settings, brokers: int, topics: list[str]) -> None:
        super().__init__(
            f"AION_REPLICATION_FACTOR={settings.replication_factor} but the Kafka cluster at "
            f"{settings.bootstrap_servers} has {brokers} broker{'s' if brokers != 1 else ''} "
            f"registered: the aion topics {', '.join(sorted(topics))} cannot be created with "
            f"{settings.replication_factor} replicas. Set AION_REPLICATION_FACTOR to at most "
            f"{brokers} (1 for a single broker), or start the missing brokers first.",
            retriable=False,
        )
        self.brokers = brokers
        self.replication_factor = settings.replication_factor


def durable_configs(settings: Settings) -> dict[str, str]:
    """The topic configs every aion topic is created with, for durability."""
    return {
        _MIN_ISR: str(settings.topic_min_insync_replicas),
        _UNCLEAN: "false",
    }


def check_replication(settings: Settings, brokers: int, missing: list[str]) -> None:
    """Raise :class:`ReplicationTooHigh` when ``missing`` topics cannot get their replicas."""
    if missing and settings.replication_factor > brokers:
        raise ReplicationTooHigh(settings, brokers, missing)


async def warn_weaker(
    admin: AIOKafkaAdminClient, settings: Settings, replicas: Mapping[str, int]
) -> list[str]:
    """Warn once per process about existing topics weaker than configured; return the
    problems found (``replicas``: topic → its fewest replicas over its partitions)."""
    wanted_isr = settings.topic_min_insync_replicas
    problems: list[str] = []
    for topic, count in sorted(replicas.items()):
        if count < settings.replication_factor:
            problems.append(
                f"{topic}: replication factor {count} < "
                f"AION_REPLICATION_FACTOR={settings.replication_factor}"
            )
    try:
        configs = await _topic_configs(admin, list(replicas))
    except KafkaError as err:  # e.g. the node asked is down: checked at the next start
        configs = {}
        _log.info("the aion topics' configs could not be read now", extra={"error": repr(err)})
    for topic, values in sorted(configs.items()):
        isr = values.get(_MIN_ISR)
        if isr is not None and isr.isdigit() and int(isr) < wanted_isr:
            problems.append(f"{topic}: {_MIN_ISR}={isr} < {wanted_isr}")
        if values.get(_UNCLEAN) == "true":
            problems.append(f"{topic}: {_UNCLEAN}=true (an out-of-sync replica may lead)")
    fresh = [p for p in problems if (settings.bootstrap_servers, p) not in _warned]
    if fresh:
        _warned.update((settings.bootstrap_servers, p) for p in fresh)
        _log.warning(
            "aion topics are less durable than configured: %s. An acknowledged record may be "
            "lost with one broker. aion does not alter existing topics: raise them with "
            "kafka-configs.sh --alter --entity-type topics --entity-name TOPIC --add-config "
            "min.insync.replicas=%d,unclean.leader.election.enable=false, and the replication "
            "factor with kafka-reassign-partitions.sh (see docs/deploy.md)",
            "; ".join(fresh),
            wanted_isr,
            extra={"problems": fresh},
        )
    return problems


async def _topic_configs(
    admin: AIOKafkaAdminClient, topics: list[str]
) -> dict[str, dict[str, str]]:
    if not topics:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
    responses: list[Any] = await admin.describe_configs(resources)
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, _message, _kind, name, entries in response.resources:
            if error_code == 0:
                found[name] = {entry[0]: entry[1] for entry in entries}
    return found
