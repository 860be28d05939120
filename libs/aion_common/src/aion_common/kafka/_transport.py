"""A write to a broker connection that has just closed fails as a connection error on every loop.

aiokafka's ``AIOKafkaConnection.send`` turns an ``OSError`` from its socket write into
``KafkaConnectionError``, which every caller (its fetcher, its group coordinator, its sender,
aion's loops) treats as a broken connection to reconnect. asyncio's transport never raises
there, but uvloop's raises ``RuntimeError: unable to perform operation on <TCPTransport
closed=True ...>; the handler is closed`` when the peer closed the socket and aiokafka's reader
has not yet seen it: out of the fetcher, that error reached the watcher's ``getmany`` and
stopped the service when a broker was killed (aio-libs/aiokafka#1038, open). :func:`install`
wraps ``send`` so that a write to a closing transport closes the connection and raises
``KafkaConnectionError`` as the ``OSError`` path does; any other ``RuntimeError`` is raised as it
was.
"""

from __future__ import annotations

from typing import Any

from aiokafka import conn
from aiokafka.errors import KafkaConnectionError

__all__ = ["install"]

_MARK = "_aion_closed_transport_guard"


def _closing(connection: Any) -> bool:
    writer = connection._writer
    return writer is not None and writer.transport.is_closing()


def install() -> None:
    """Wrap ``AIOKafkaConnection.send`` once per process (idempotent)."""
    cls: Any = conn.AIOKafkaConnection
    original = cls.send
    if getattr(original, _MARK, False):
        return

    def send(self: Any, request: Any, expect_response: bool = True) -> Any:
        try:
            return original(self, request, expect_response=expect_response)
        except RuntimeError as err:
            if not _closing(self):
                raise
            self.close(reason=conn.CloseReason.CONNECTION_BROKEN, exc=err)
            raise KafkaConnectionError(
                f"Connection at {self.host}:{self.port} broken: {err}"
            ) from err

    setattr(send, _MARK, True)
    send.__doc__ = original.__doc__
    cls.send = send
