"""Ask the broker, by trying, whether it supports idempotent and transactional producers.

``AION_TRANSACTIONS=auto`` uses transactions exactly when the broker has them. Apache Kafka
does; some Kafka-protocol brokers (Tansu, measured) answer ``InitProducerId`` with an error.
The probe starts an idempotent producer (which obtains a producer id) and a transactional one
with a throwaway transactional id (which also finds the transaction coordinator), then begins
and aborts an empty transaction. Every step is bounded by a timeout: the probe never hangs,
and a failure becomes ``False`` with its reason kept. A failure that says nothing about the
broker's abilities — it was not reached, or did not answer in time — makes the answer
``inconclusive``: ask again later rather than conclude it lacks transactions (an engine started
during an outage would otherwise run at-least-once on a broker that has them).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.protocol.admin import ApiVersionRequest

from aion_common.kafka.options import client_options
from aion_common.settings import Settings

__all__ = ["BrokerCapabilities", "probe_capabilities"]

_DEFAULT_TIMEOUT_S = 10.0
_CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerCapabilities:
    """What the broker answered; ``*_error`` keeps why a capability is missing."""

    idempotent: bool
    transactional: bool
    idempotent_error: str | None = None
    transactional_error: str | None = None
    api_versions: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    inconclusive: bool = False
    """A check failed for want of an answer (broker unreachable, timed out), not a refusal."""


async def probe_capabilities(
    settings: Settings, *, timeout_s: float = _DEFAULT_TIMEOUT_S
) -> BrokerCapabilities:
    """Try an idempotent and a transactional producer against the configured broker."""
    idempotent_error, idempotent_unanswered = await _attempt(
        settings, timeout_s, enable_idempotence=True, client_id="aion-probe-idempotent"
    )
    transactional_id = f"aion-probe-{settings.instance_id}-{uuid.uuid4().hex}"
    transactional_error, transactional_unanswered = await _attempt(
        settings, timeout_s, transactional_id=transactional_id, client_id="aion-probe-txn"
    )
    return BrokerCapabilities(
        idempotent=idempotent_error is None,
        transactional=transactional_error is None,
        idempotent_error=idempotent_error,
        transactional_error=transactional_error,
        api_versions=await _api_versions(settings, timeout_s),
        inconclusive=idempotent_unanswered or transactional_unanswered,
    )


async def _attempt(
    settings: Settings,
    timeout_s: float,
    *,
    client_id: str,
    enable_idempotence: bool = False,
    transactional_id: str | None = None,
) -> tuple[str | None, bool]:
    """Start a producer (and run an empty transaction if transactional): ``(None, False)`` if
    it worked, else the error and whether it was a want of an answer rather than a refusal."""
    producer = AIOKafkaProducer(
        **client_options(settings),
        client_id=client_id,
        enable_idempotence=enable_idempotence,
        transactional_id=transactional_id,
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            # start() obtains a producer id (InitProducerId); for a transactional producer
            # it first finds the transaction coordinator.
            await producer.start()
            if transactional_id is not None:
                await producer.begin_transaction()
                await producer.abort_transaction()
    except TimeoutError:
        return f"no answer within {timeout_s:g}s", True
    except (KafkaError, OSError) as err:
        unanswered = isinstance(err, OSError | KafkaTimeoutError) or bool(
            getattr(err, "retriable", False)
        )
        return repr(err), unanswered
    finally:
        await _close(producer)
    return None, False


async def _api_versions(settings: Settings, timeout_s: float) -> dict[int, tuple[int, int]]:
    """The broker's supported API version ranges, by API key; empty if it cannot be asked."""
    producer = AIOKafkaProducer(**client_options(settings), client_id="aion-probe-versions")
    try:
        async with asyncio.timeout(timeout_s):
            await producer.start()
            node_id = producer.client.get_random_node()
            response = await producer.client.send(node_id, ApiVersionRequest())
    except (TimeoutError, KafkaError, OSError):
        return {}
    finally:
        await _close(producer)
    return {key: (low, high) for key, low, high in response.api_versions}


async def _close(producer: AIOKafkaProducer) -> None:
    """Stop a probe producer without letting a dead broker hold the caller."""
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await producer.stop()
    except (TimeoutError, KafkaError, OSError):
        # A probe that could not close cleanly has nothing to flush: its sockets die with it.
        return
