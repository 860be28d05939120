"""aion projector service: SQL query and registry views built from ``aion.events``."""

from aion_projector.changes import ApplyStats
from aion_projector.database import connect, migrate, reset, session_factory
from aion_projector.projection import Delivery, Projection
from aion_projector.queries import (
    ChildView,
    HistoryEntry,
    RegistryEntry,
    RunView,
    TreeNode,
    WorkflowDescription,
    WorkflowFilter,
    WorkflowPage,
    WorkflowSummary,
    child_tree,
    describe,
    history,
    list_workflows,
    registry,
    stored_offsets,
)
from aion_projector.schema import ChildState, RunStatus

__all__ = [
    "ApplyStats",
    "ChildState",
    "ChildView",
    "Delivery",
    "HistoryEntry",
    "Projection",
    "RegistryEntry",
    "RunStatus",
    "RunView",
    "TreeNode",
    "WorkflowDescription",
    "WorkflowFilter",
    "WorkflowPage",
    "WorkflowSummary",
    "child_tree",
    "connect",
    "describe",
    "history",
    "list_workflows",
    "migrate",
    "registry",
    "reset",
    "session_factory",
    "stored_offsets",
]
