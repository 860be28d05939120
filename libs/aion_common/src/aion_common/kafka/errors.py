"""Translate aiokafka errors into aion's :class:`InfrastructureError` at the boundary.

aiokafka marks each error class ``retriable``; aion keeps that flag. A client-side timeout
(``KafkaTimeoutError``, ``asyncio.TimeoutError``) is marked not retriable by aiokafka, but for
aion a timed-out request is worth retrying, so it is translated as retriable.
"""

from __future__ import annotations

from aiokafka.errors import KafkaError, KafkaTimeoutError

from aion_common.domain.errors import InfrastructureError

__all__ = ["infrastructure_error"]


def infrastructure_error(err: BaseException, action: str) -> InfrastructureError:
    """An :class:`InfrastructureError` saying what failed (``action``) and why (``err``)."""
    if isinstance(err, KafkaTimeoutError | TimeoutError):
        retriable = True
    elif isinstance(err, KafkaError):
        retriable = bool(err.retriable)
    else:
        retriable = False
    kind = "retriable" if retriable else "not retriable"
    return InfrastructureError(f"{action} failed ({kind}): {err!r}", retriable=retriable)
