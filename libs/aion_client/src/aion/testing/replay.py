"""Replay a saved workflow history against your code, in a test (``aion replay`` offline).

Save a history with ``aion history WORKFLOW_ID --all --json > tests/histories/order-17.json``
(the API's ``GET /v1/workflows/{id}/history`` pages, joined), then::

    from aion.testing.replay import assert_replays

    def test_the_order_workflow_still_replays() -> None:
        assert_replays("tests/histories/order-17.json", workflows="examples.order")

``workflows`` names importable modules, or is a :class:`~pathlib.Path` to a module file or a
package directory (loaded as an engine loads a deployed package). A failed check says at which
event seq the code diverged, what the history holds, what the code did, and the line that did
it. The replay is the engine's own (``python -m aion_engine.replay_check``, run as a
subprocess): the engine package must be installed beside ``aion``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aion._cli_versions import VersionUsageError, run_replay_check

__all__ = ["ReplayOutcome", "assert_replays", "check_replay"]

History = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """Whether every run of a history replays, and each run's outcome (JSON: ``run_id``,
    ``workflow_type``, ``ok``, ``seq``, ``detail``, ``source``, ``problem``, ``describe``)."""

    workflow_id: str
    ok: bool
    runs: tuple[dict[str, Any], ...]

    @property
    def first_failure(self) -> dict[str, Any] | None:
        """The first run that does not replay."""
        return next((run for run in self.runs if not run["ok"]), None)


def check_replay(history: History, *, workflows: str | Sequence[str] | Path) -> ReplayOutcome:
    """Replay ``history`` (a file of the API's history JSON, or that JSON loaded) against
    ``workflows``."""
    with tempfile.TemporaryDirectory(prefix="aion-test-replay-") as where:
        if isinstance(history, Mapping):
            path = Path(where) / "history.json"
            path.write_text(json.dumps(history), encoding="utf-8")
        else:
            path = Path(history)
        if isinstance(workflows, Path):
            code = ["--path", str(workflows)]
        else:
            names = [workflows] if isinstance(workflows, str) else list(workflows)
            code = [arg for name in names for arg in ("--workflows", name)]
        try:
            (found,) = run_replay_check([path], code)
        except VersionUsageError as err:
            raise AssertionError(f"cannot replay {path}: {err}") from err
    return ReplayOutcome(found["workflow_id"], found["ok"], tuple(found["runs"]))


def assert_replays(history: History, *, workflows: str | Sequence[str] | Path) -> None:
    """Fail the test, naming the divergence, unless ``workflows`` replays every run of
    ``history``."""
    outcome = check_replay(history, workflows=workflows)
    failure = outcome.first_failure
    if failure is not None:
        raise AssertionError(
            f"workflow {outcome.workflow_id!r}, run {failure['run_id']} "
            f"({failure['workflow_type']}): {failure['describe']}"
        )
