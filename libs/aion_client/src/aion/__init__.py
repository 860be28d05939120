"""aion: the SDK workflow and activity code is written against (:mod:`aion.workflow`,
:mod:`aion.activity`), the client (:class:`AionClient`), the ``aion`` command line
(:mod:`aion.cli`) and the test kit (:mod:`aion.testing`).

Names are imported on first use: ``from aion import workflow`` (what the engine and workers
load) pulls in neither the HTTP client nor Kafka, and :class:`KafkaCommands` loads aiokafka
only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aion.client import (
        Accepted,
        AionApiError,
        AionClient,
        AionClientError,
        AionCommandRefused,
        AionInvalidRequest,
        AionQueryError,
        AionResultTimeout,
        AionUnavailable,
        AionWorkflowFailed,
        AionWrongServer,
        Child,
        CommandStatus,
        HistoryEvent,
        HistoryPage,
        IdReusePolicy,
        Refusal,
        RetryNote,
        Run,
        WaitingOn,
        WaitItem,
        WorkflowDescription,
        WorkflowHandle,
        WorkflowPage,
        WorkflowResult,
        WorkflowSummary,
        WorkflowTree,
    )
    from aion.kafka import KafkaCommands

__all__ = [
    "Accepted",
    "AionApiError",
    "AionClient",
    "AionClientError",
    "AionCommandRefused",
    "AionInvalidRequest",
    "AionQueryError",
    "AionResultTimeout",
    "AionUnavailable",
    "AionWorkflowFailed",
    "AionWrongServer",
    "ArchivedHistory",
    "Child",
    "CommandStatus",
    "HistoryEvent",
    "HistoryPage",
    "IdReusePolicy",
    "KafkaCommands",
    "Refusal",
    "RetryNote",
    "Run",
    "WaitItem",
    "WaitingOn",
    "WorkflowDescription",
    "WorkflowHandle",
    "WorkflowPage",
    "WorkflowResult",
    "WorkflowSummary",
    "WorkflowTree",
]

_LAZY = {name: "aion.client" for name in __all__ if name != "KafkaCommands"}
_LAZY["KafkaCommands"] = "aion.kafka"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
