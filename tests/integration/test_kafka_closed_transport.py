"""A broker connection that closes under aiokafka's feet fails as a connection error on either
loop, and the next request reconnects (uvloop raised ``RuntimeError: ... the handler is closed``
out of the write, which stopped the watcher when a broker was killed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop
from aiokafka import AIOKafkaClient
from aiokafka.client import ConnectionGroup
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

import aion_common.kafka  # noqa: F401 - installs the guard, as every service's import does

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_request_on_a_just_reset_connection_is_a_connection_error_and_the_next_reconnects(
    kafka_bootstrap: str, loop: str
) -> None:
    async def main() -> None:
        client = AIOKafkaClient(bootstrap_servers=kafka_bootstrap)
        await client.bootstrap()
        try:
            node = next(iter(client.cluster.brokers())).nodeId
            assert await client.ready(node)
            connection = client._conns[(node, ConnectionGroup.DEFAULT)]
            # a dying broker's reset: the transport closes and hands the reader the error (not
            # an end of stream, so the connection still looks connected) ...
            protocol = connection._protocol
            lost = protocol.connection_lost
            protocol.connection_lost = lambda _: lost(ConnectionResetError(104, "reset by peer"))
            connection._writer.transport.abort()
            await asyncio.sleep(0)  # the transport's close runs; the reader's task has not yet
            assert connection.connected()
            # ... and a request goes out before the reader's task sees the error
            with pytest.raises(KafkaConnectionError, match=r"Connection at 127\.0\.0\.1:\d+"):
                await asyncio.wait_for(client.send(node, MetadataRequest([])), 10)
            response = await asyncio.wait_for(client.send(node, MetadataRequest([])), 10)
            assert response.brokers
        finally:
            await client.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())
