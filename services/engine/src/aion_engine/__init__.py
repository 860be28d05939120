"""aion engine service: the workflow SDK (:mod:`aion_engine.workflow`) and the engine's pure
core (:class:`EngineCore`), which the Kafka service loop drives."""

from aion_engine.core import DEFAULT_MAX_RESIDENT, EngineCore
from aion_engine.decision import Decision, TimerRequest
from aion_engine.registry import WorkflowRegistry, default_registry, load_modules
from aion_engine.replayer import replay_history

__all__ = [
    "DEFAULT_MAX_RESIDENT",
    "Decision",
    "EngineCore",
    "TimerRequest",
    "WorkflowRegistry",
    "default_registry",
    "load_modules",
    "replay_history",
]
