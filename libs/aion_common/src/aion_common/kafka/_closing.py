"""A Kafka client's stop or close, bounded, for clients being discarded
(:func:`~aion_common.kafka.consumer.stop_consumer`,
:func:`~aion_common.kafka.producer.stop_producer`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from aiokafka.errors import KafkaError

from aion_common.kafka.link import raise_if_cancelling

__all__ = ["await_within"]

_log = logging.getLogger("aion.kafka")


async def await_within(
    step: Awaitable[object], timeout_s: float, *, failed: str, cut_short: str | None = None
) -> bool:
    """Await ``step`` for at most ``timeout_s``; whether it ended without an error.

    A ``CancelledError`` that is not the calling task's own (aiokafka cancels its own requests,
    then awaits them) ends the step, logged at debug as ``cut_short`` when given; a
    cancellation of the calling task is raised. A Kafka or socket error, or the timeout, ends
    it with the warning ``failed``.
    """
    try:
        await asyncio.wait_for(step, timeout_s)
    except asyncio.CancelledError:
        raise_if_cancelling()
        if cut_short is not None:
            _log.debug(cut_short)
        return False
    except (KafkaError, OSError, TimeoutError) as err:
        _log.warning(failed, extra={"error": repr(err)})
        return False
    return True
