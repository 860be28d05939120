"""aion's watcher: records every child's final terminal in its parent, exactly once.

It folds ``aion.events`` (:class:`WatchState`), issues ``RecordChildTerminal`` commands with
deterministic ids, retries their delivery with capped backoff, commits only what was
acknowledged, and sweeps for records a parent has not applied. See :mod:`aion_watcher.service`.
"""

from aion_watcher.config import WatcherConfig
from aion_watcher.delivery import CommandSender, KafkaCommandSender, deliver
from aion_watcher.metrics import HealthServer, WatcherMetrics
from aion_watcher.service import SenderWrapper, WatcherService
from aion_watcher.state import Applied, ParentStatus, SweepItem, WatchKey, WatchState

__all__ = [
    "Applied",
    "CommandSender",
    "HealthServer",
    "KafkaCommandSender",
    "ParentStatus",
    "SenderWrapper",
    "SweepItem",
    "WatchKey",
    "WatchState",
    "WatcherConfig",
    "WatcherMetrics",
    "WatcherService",
    "deliver",
]
