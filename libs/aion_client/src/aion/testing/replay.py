"""Replay a saved workflow history against your code, in a test (``aion replay`` offline).

Save a history with ``aion history WORKFLOW_ID --json > tests/histories/order-17.json`` (or
the API's ``GET /v1/workflows/{id}/history``), then::

    from aion.testing.replay import assert_replays

    def test_the_order_workflow_still_replays() -> None:
        assert_replays("tests/histories/order-17.json", workflows="examples.order")

``workflows`` names importable modules (imported as usual) or a path to a module file or
package directory (loaded as an engine loads a deployed package, in a namespace of its own,
so two versions can be checked in one process). A failed check says at which event seq the
code diverged, what the history holds, what the code did, and the line that did it.

It needs the engine package (``aion-engine``), which runs the replay exactly as an engine does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aion_engine.replay_check import WorkflowReplay

__all__ = ["assert_replays", "check_replay"]

History = str | os.PathLike[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]]


def check_replay(history: History, *, workflows: str | Sequence[str] | Path) -> WorkflowReplay:
    """Replay ``history`` (a file of the API's history JSON, or that JSON already loaded)
    against ``workflows``; the outcome per run (``.ok``, ``.first_failure``)."""
    try:
        from aion_common.packages import build_package  # noqa: PLC0415 - optional dependency
        from aion_engine.registry import WorkflowRegistry, load_modules  # noqa: PLC0415
        from aion_engine.replay_check import (  # noqa: PLC0415
            events_from_json,
            load_package,
            replay_history,
        )
    except ImportError as err:  # pragma: no cover - depends on what is installed
        raise RuntimeError(
            "replay checks need the aion engine package: pip install aion-engine"
        ) from err
    if isinstance(history, str | os.PathLike):
        document: Any = json.loads(Path(history).read_text(encoding="utf-8"))
    else:
        document = history
    events = events_from_json(document)
    if isinstance(workflows, Path):
        code = load_package(build_package(workflows))
    else:
        names = [workflows] if isinstance(workflows, str) else list(workflows)
        registry = WorkflowRegistry()
        load_modules(names, registry)
        code = {t: fn for t in registry.types() if (fn := registry.get(t)) is not None}
    return replay_history(events, code)


def assert_replays(history: History, *, workflows: str | Sequence[str] | Path) -> None:
    """Fail the test, naming the divergence, unless ``workflows`` replays every run of
    ``history``."""
    outcome = check_replay(history, workflows=workflows)
    failure = outcome.first_failure
    if failure is not None:
        raise AssertionError(
            f"workflow {outcome.workflow_id!r}, run {failure.run_id} "
            f"({failure.workflow_type}): {failure.describe()}"
        )
