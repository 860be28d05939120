"""The CLI's argument handling and human output that need no API: pure units."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aion import cli


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "list"],
        ["list", "--json"],
        ["--json", "describe", "x"],
        ["describe", "x", "--json"],
    ],
)
def test_json_is_accepted_before_or_after_the_command(argv: list[str]) -> None:
    args, unknown = cli._parser().parse_known_args(argv)
    assert unknown == []
    assert args.json is True


def test_without_json_tables_are_printed() -> None:
    args, _ = cli._parser().parse_known_args(["list"])
    assert args.json is False


def test_times_are_shown_to_the_millisecond() -> None:
    when = datetime(2026, 11, 28, 8, 45, 49, 218_765, tzinfo=UTC)
    assert cli._when(when) == "2026-11-28 08:45:49.218"
    assert cli._when(None) == ""


def test_event_fields_are_compact_and_shortened() -> None:
    fields = {"workflow_type": "greet", "parent": None, "input": ["ada"], "note": "x" * 200}
    text = cli._compact(fields, limit=20)
    assert text.startswith('workflow_type=greet input=["ada"] note=')
    assert "parent" not in text
    assert text.endswith("…")
    assert len(text.split("note=")[1]) == 20


def test_dev_options_are_left_to_the_supervisor() -> None:
    args, unknown = cli._parser().parse_known_args(["dev", "--demo", "--port", "8085"])
    assert args.handler is cli._dev
    assert [*unknown, *args.rest] == ["--demo", "--port", "8085"]
