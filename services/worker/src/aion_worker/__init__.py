"""aion worker service: runs activities (``@aion.activity.defn`` functions) from a task queue.

``aion worker --activities my_pkg.activities [--task-queue Q] [--max-concurrent N]`` (or
``aion-worker``) joins the queue's consumer group; see :mod:`aion_worker.service`.
"""

from aion_worker.config import WorkerConfig
from aion_worker.registry import ActivityRegistry, load_modules
from aion_worker.service import WorkerService

__all__ = ["ActivityRegistry", "WorkerConfig", "WorkerService", "load_modules"]
