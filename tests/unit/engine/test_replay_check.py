"""Replay checks (``aion replay``, ``aion.testing``): a compatible change matches, a divergent
one is reported at its seq with the line of code, and a history survives the API's JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from engine_harness import World

from aion_common.codecs.event_json import encode_body
from aion_common.domain import InvalidInput
from aion_common.packages import build_package
from aion_engine.registry import WorkflowRegistry
from aion_engine.replay_check import events_from_json, load_package, replay_history

AT = datetime(2026, 1, 1, tzinfo=UTC)

CODE = """
from aion import workflow


@workflow.defn("greet")
async def greet(ctx, name):
    {body}
"""
V1 = """await ctx.sleep(5)
    first = await ctx.wait_signal("go")
    return f"hello {{name}} {{first}}"
"""
COMPATIBLE = """await ctx.sleep(5)
    first = await ctx.wait_signal("go")
    return f"hi {{name}} {{first}}"  # a changed result is not a divergence
"""
DIVERGENT = """await ctx.sleep(10)  # a changed duration is fine: the timer id is the same
    await ctx.sleep(1)  # an extra step is not
    first = await ctx.wait_signal("go")
    return first
"""


def _package(tmp_path: Path, tag: str, body: str) -> dict:
    root = tmp_path / tag
    root.mkdir(exist_ok=True)
    (root / "greetings.py").write_text(CODE.format(body=body.format()))
    return load_package(build_package(root / "greetings.py"), tmp_path / f"{tag}-loaded")


@pytest.fixture
def history(tmp_path: Path) -> list:
    v1 = _package(tmp_path, "v1", V1)
    registry = WorkflowRegistry()
    registry.register("greet", v1["greet"])
    world = World(registry)
    world.start("g", "greet", "ada")
    world.fire_all("g")
    world.signal("g", "go", 1)
    assert world.result("g") == "hello ada 1"
    return world.history("g")


def test_a_compatible_change_matches_and_a_divergent_one_names_seq_and_line(
    tmp_path: Path, history: list
) -> None:
    assert replay_history(history, _package(tmp_path, "same", V1)).ok
    assert replay_history(history, _package(tmp_path, "ok", COMPATIBLE)).ok
    outcome = replay_history(history, _package(tmp_path, "bad", DIVERGENT))
    failure = outcome.first_failure
    assert failure is not None
    assert failure.divergence is not None
    assert failure.divergence.seq == 4  # the code waits for the second timer, not the signal
    assert "greetings.py:8: await ctx.sleep(1)" in failure.divergence.source
    assert "diverges at seq 4" in failure.describe()


def test_the_type_must_be_in_the_code(tmp_path: Path, history: list) -> None:
    outcome = replay_history(history, {})
    assert not outcome.ok
    assert "no workflow type 'greet'" in outcome.runs[0].describe()


def test_a_history_round_trips_through_the_apis_json(tmp_path: Path, history: list) -> None:
    document = {
        "workflow_id": "g",
        "events": [
            {
                "seq": e.seq,
                "run_id": e.run_id,
                "event_type": type(e).__name__,
                "recorded_at": e.recorded_at.isoformat(),
                "command_id": e.command_id,
                "fields": orjson.loads(encode_body(e)),
            }
            for e in history
        ],
    }
    events = events_from_json(orjson.loads(orjson.dumps(document)))
    assert events == history
    assert replay_history(events, _package(tmp_path, "again", V1)).ok
    with pytest.raises(InvalidInput, match="entry 0"):
        events_from_json({"events": [{"seq": 1}]})
    with pytest.raises(InvalidInput, match="'events' list"):
        events_from_json({"nope": 1})
