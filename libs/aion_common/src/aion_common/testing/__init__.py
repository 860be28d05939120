"""Test infrastructure that aion's own tests and its users share.

- :class:`KafkaBroker`: a single-node Apache Kafka (KRaft) run with Java from Maven Central jars.
- :class:`PostgresCluster`: a private PostgreSQL cluster under ``.aion/pg``.
- :func:`free_port`, :func:`port_is_free`: loopback ports for servers started here.
- :func:`percentile`: the nearest-rank quantile the benchmarks report.
- The pytest plugin (:mod:`aion_common.testing.plugin`, loaded by this project's pytest
  ``addopts``, never by an entry point) with the ``kafka_bootstrap``, ``aion_settings``,
  ``topic_prefix``, ``sqlite_url``, ``postgres_url``, ``pg_database_url`` and ``database_url``
  fixtures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aion_common.testing._support import ProvisionError, free_port, percentile, port_is_free

if TYPE_CHECKING:
    from aion_common.testing.broker import KafkaBroker
    from aion_common.testing.postgres import PostgresCluster

__all__ = [
    "KafkaBroker",
    "PostgresCluster",
    "ProvisionError",
    "free_port",
    "percentile",
    "port_is_free",
]

# Imported on first use so `python -m aion_common.testing.broker` (and .postgres) does not load
# its own module twice, once as a package member and once as __main__.
_LAZY = {"KafkaBroker": "broker", "PostgresCluster": "postgres"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
