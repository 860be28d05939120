"""The ``aion`` CLI's numeric options: each has a range, and a value outside it is argparse's
usage error at once (exit 2), naming the option, the value and the range (decision 65).

Whole-number options the API bounds itself (``--limit``, ``--depth``, ``--from-seq``,
``--sample``) are left to its answer (exit 2 with the parameter and its bound), so the CLI
never refuses what a newer API takes.
"""

from __future__ import annotations

import os

from aion.client import DEFAULT_RETRY_FOR_S
from aion_common.settings import parse_seconds, seconds_option

__all__ = [
    "CONFIRM_SECONDS",
    "DEFAULT_RETRY_FOR_S",
    "MAX_WAIT_S",
    "QUERY_SECONDS",
    "REQUEST_SECONDS",
    "WAIT_SECONDS",
    "retry_for_from_env",
]

MAX_WAIT_S = 86_400
"""The longest a command waits (``--retry-for``, ``--timeout`` of ``--wait`` and ``run move``):
a day. ``inf`` would never give up and ``nan`` would not wait at all, silently."""
_WAIT_WHY = "a day at most; 0: do not wait"

WAIT_SECONDS = seconds_option(minimum=0, maximum=MAX_WAIT_S, why=_WAIT_WHY)
CONFIRM_SECONDS = seconds_option(
    minimum=0, maximum=60, why="the API waits at most 60 s for the engine's answer"
)
QUERY_SECONDS = seconds_option(
    minimum=0.1, maximum=60, why="the API waits at most 60 s for an engine to answer"
)
REQUEST_SECONDS = seconds_option(minimum=0.1, maximum=3600, why="each HTTP request's timeout")


def retry_for_from_env() -> float:
    """``AION_RETRY_FOR`` (``--retry-for`` when it is not given): 60 when unset or blank; a
    value outside 0..86400 is a :class:`~aion_common.settings.SettingsError` naming it."""
    raw = os.environ.get("AION_RETRY_FOR", "")
    if not raw.strip():
        return DEFAULT_RETRY_FOR_S
    return parse_seconds("AION_RETRY_FOR", raw, minimum=0, maximum=MAX_WAIT_S, why=_WAIT_WHY)
