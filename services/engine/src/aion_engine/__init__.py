"""aion engine service: the engine's pure core (:class:`EngineCore`), which the Kafka service
loop drives, and the registry of the workflow types it runs. Workflow code itself is written
against the SDK, :mod:`aion.workflow`."""

from aion_engine.core import DEFAULT_MAX_RESIDENT, EngineCore
from aion_engine.decision import Decision, TimerRequest
from aion_engine.registry import WorkflowRegistry, load_modules
from aion_engine.replayer import replay_history

__all__ = [
    "DEFAULT_MAX_RESIDENT",
    "Decision",
    "EngineCore",
    "TimerRequest",
    "WorkflowRegistry",
    "load_modules",
    "replay_history",
]
