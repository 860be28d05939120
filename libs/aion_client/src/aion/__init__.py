"""aion's Python client (:class:`AionClient`) and the ``aion`` command line (:mod:`aion.cli`).

:class:`KafkaCommands` (:mod:`aion.kafka`) sends commands straight to Kafka; it is imported on
first use, so the CLI and HTTP-only users do not load the Kafka client.
"""

from typing import Any

from aion.client import (
    Accepted,
    AionApiError,
    AionClient,
    AionClientError,
    AionCommandRefused,
    AionInvalidRequest,
    AionUnavailable,
    Child,
    HistoryEvent,
    HistoryPage,
    Refusal,
    Run,
    WorkflowDescription,
    WorkflowPage,
    WorkflowResult,
    WorkflowSummary,
    WorkflowTree,
)

__all__ = [
    "Accepted",
    "AionApiError",
    "AionClient",
    "AionClientError",
    "AionCommandRefused",
    "AionInvalidRequest",
    "AionUnavailable",
    "Child",
    "HistoryEvent",
    "HistoryPage",
    "KafkaCommands",
    "Refusal",
    "Run",
    "WorkflowDescription",
    "WorkflowPage",
    "WorkflowResult",
    "WorkflowSummary",
    "WorkflowTree",
]


def __getattr__(name: str) -> Any:
    if name == "KafkaCommands":
        from aion.kafka import KafkaCommands  # noqa: PLC0415  # lazily: it loads aiokafka

        return KafkaCommands
    raise AttributeError(f"module 'aion' has no attribute {name!r}")
