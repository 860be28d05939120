"""aion's HTTP API over the projector's views: queries, commands, health and metrics.

``create_app(settings, session_factory=…, command_sink=…)`` builds the FastAPI app (mount it,
or serve it with :func:`run_api`). Errors are RFC 9457 problems whose ``type`` is one of
``https://aion.dev/problems/{invalid-input, payload-too-large, not-found, unauthorized,
method-not-allowed, unavailable, internal}``, and for queries ``unknown-query``,
``query-failed``, ``query-refused``, ``query-timeout``, ``workflow-blocked``,
``workflow-closed``, ``cannot-replay``.
"""

from aion_projector.api._answers import KafkaQueryDesk, QueryDesk
from aion_projector.api._app import OPEN_PATHS, create_app
from aion_projector.api._problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, Problem, ProblemError
from aion_projector.api._server import run_api
from aion_projector.api._sink import CommandSink, KafkaCommandSink

__all__ = [
    "OPEN_PATHS",
    "PROBLEM_BASE",
    "PROBLEM_MEDIA_TYPE",
    "CommandSink",
    "KafkaCommandSink",
    "KafkaQueryDesk",
    "Problem",
    "ProblemError",
    "QueryDesk",
    "create_app",
    "run_api",
]
