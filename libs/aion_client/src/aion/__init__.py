"""aion's Python client (:class:`AionClient`) and the ``aion`` command line (:mod:`aion.cli`)."""

from aion.client import (
    Accepted,
    AionApiError,
    AionClient,
    AionClientError,
    AionUnavailable,
    Child,
    HistoryEvent,
    HistoryPage,
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
    "AionUnavailable",
    "Child",
    "HistoryEvent",
    "HistoryPage",
    "Run",
    "WorkflowDescription",
    "WorkflowPage",
    "WorkflowResult",
    "WorkflowSummary",
    "WorkflowTree",
]
