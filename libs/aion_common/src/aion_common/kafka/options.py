"""Connection options every aion Kafka client gets, built from :class:`Settings`.

``Settings.kafka_client_options()`` passes the ``AION_KAFKA_*`` security variables through by
name; aiokafka takes TLS files as one ``ssl_context`` rather than ``ssl_cafile`` & co, so this
module turns the file names into a context and passes the rest through unchanged.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from aion_common.settings import Settings

__all__ = ["client_options", "max_record_bytes"]

_SSL_FILES = {"ssl_cafile": "cafile", "ssl_certfile": "certfile", "ssl_keyfile": "keyfile"}


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: bootstrap servers plus security options."""
    options: dict[str, Any] = dict(settings.kafka_client_options())
    ssl_files = {
        _SSL_FILES[name]: options.pop(name) for name in list(options) if name in _SSL_FILES
    }
    if ssl_files:
        options["ssl_context"] = create_ssl_context(**ssl_files)
    return options


_MIB = 1024 * 1024


def max_record_bytes(settings: Settings) -> int:
    """The largest record aion writes: topic ``max.message.bytes`` and producer request size.

    One event batch may carry several payloads (a start's input, children's inputs, a result),
    each up to ``payload_limit_bytes``; Kafka's 1 MiB default would refuse them.
    """
    return max(_MIB, 4 * settings.payload_limit_bytes + _MIB)
