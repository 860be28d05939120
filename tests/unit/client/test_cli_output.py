"""The CLI's argument handling and human output that need no API: pure units."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aion import _cli_output, cli
from aion._cli_init import project_files
from aion._stack_home import DEFAULT_API, find_api, forget_api_url, write_api_url


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
    assert _cli_output.when(when) == "2026-11-28 08:45:49.218"
    assert _cli_output.when(when, time_only=True) == "08:45:49.218"
    assert _cli_output.when(None) == ""


def test_event_fields_are_compact_and_shortened() -> None:
    fields = {"workflow_type": "greet", "parent": None, "input": ["ada"], "note": "x" * 200}
    text = _cli_output.compact(fields, limit=20)
    assert text.startswith('workflow_type=greet input=["ada"] note=')
    assert "parent" not in text
    assert text.endswith("…")
    assert len(text.split("note=")[1]) == 20


def test_dev_options_are_left_to_the_supervisor() -> None:
    args, unknown = cli._parser().parse_known_args(["dev", "--demo", "--port", "8085"])
    assert args.command == "dev"
    assert [*unknown, *args.rest] == ["--demo", "--port", "8085"]


@pytest.mark.parametrize("given", ["failed", "Failed", "FAILED", "timed-out", "terminated"])
def test_status_is_accepted_in_any_case(given: str) -> None:
    args, _ = cli._parser().parse_known_args(["list", "--status", given])
    assert args.status == given.upper().replace("-", "_")


def test_an_unknown_status_is_a_usage_error_listing_the_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli._parser().parse_known_args(["list", "--status", "sleeping"])
    assert exited.value.code == 2
    assert "TERMINATED" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["list", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "RUNNING, BLOCKED, COMPLETED, FAILED, CANCELLED, TERMINATED, TIMED_OUT" in help_text


@pytest.mark.parametrize(
    ("given", "policy"),
    [
        ("RejectDuplicate", "REJECT_DUPLICATE"),
        ("reject-duplicate", "REJECT_DUPLICATE"),
        ("allow_duplicate_failed_only", "ALLOW_DUPLICATE_FAILED_ONLY"),
        ("TERMINATE_IF_RUNNING", "TERMINATE_IF_RUNNING"),
    ],
)
def test_id_reuse_policy_names_as_temporal_writes_them(given: str, policy: str) -> None:
    args, _ = cli._parser().parse_known_args(["start", "t", "--id-reuse-policy", given])
    assert args.id_reuse_policy.value == policy


def test_no_wait_and_wait_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        cli._parser().parse_known_args(["start", "t", "--wait", "--no-wait"])


def test_tables_fit_the_width_they_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    out = _cli_output.Output(as_json=False)
    view = _cli_output.table("seq", "event", "fields", short=("seq", "event"))
    view.add_row("12", "WorkflowContinuedAsNew", "x=" + "y" * 300)
    with out.console.capture() as captured:
        out.console.print(view)
    lines = captured.get().splitlines()
    assert max(len(line) for line in lines) <= 60
    assert any("WorkflowContinuedAsNew" in line for line in lines)  # short columns never fold


def test_the_cli_finds_the_running_stack_above_the_working_directory(tmp_path: Path) -> None:
    home = tmp_path / ".aion"
    home.mkdir()
    below = tmp_path / "src" / "pkg"
    below.mkdir(parents=True)
    assert find_api(below, {})[0] == DEFAULT_API
    write_api_url(home, "http://127.0.0.1:8123")
    assert find_api(below, {})[0] == DEFAULT_API  # no live supervisor holds the home
    (home / "aion-dev.lock").write_text(f"{os.getpid()}\n")
    url, where = find_api(below, {})
    assert url == "http://127.0.0.1:8123"
    assert str(home) in where
    forget_api_url(home)
    assert find_api(below, {})[0] == DEFAULT_API


def test_aion_dev_home_wins(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_api_url(elsewhere, "http://127.0.0.1:9001")
    (elsewhere / "aion-dev.lock").write_text(f"{os.getpid()}\n")
    assert find_api(tmp_path, {"AION_DEV_HOME": str(elsewhere)})[0] == "http://127.0.0.1:9001"


def test_init_writes_a_project_whose_test_uses_the_plugin(tmp_path: Path) -> None:
    files = project_files("demo", tmp_path)
    assert set(files) >= {"workflows.py", "activities.py", "tests/test_workflows.py"}
    assert 'dependencies = ["aion", "aion-dev"]' in files["pyproject.toml"]
    assert 'aion_workflows = ["workflows"]' in files["pyproject.toml"]
    assert "asyncio_default_fixture_loop_scope" in files["pyproject.toml"]
    assert "aion_client" in files["tests/test_workflows.py"]
    assert f"source {tmp_path}/.venv/bin/activate" in files["README.md"]
    assert "pip install aion" not in files["README.md"]
    for name in ("workflows.py", "activities.py", "tests/test_workflows.py"):
        compile(files[name], name, "exec")


def test_init_refuses_a_directory_that_holds_something(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    assert cli.main(["init", str(tmp_path)]) == 2
    assert cli.main(["init", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "workflows.py").is_file()


def test_query_args_must_be_a_json_array(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--api", "http://127.0.0.1:9", "query", "w", "q", "--args", "{}"]) == 2
    assert "--args is the JSON array" in capsys.readouterr().err
    assert cli.main(["--api", "http://127.0.0.1:9", "query", "w", "q", "--args", "[1,"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_waiting_on_is_shown_awaited_first_with_the_stack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aion import WaitingOn
    from aion._cli_queries import show_waiting

    found = WaitingOn.from_json(
        {
            "workflow_id": "w",
            "run_id": "r",
            "status": "RUNNING",
            "waiting_on": [
                {"kind": "child", "awaited": True, "workflow_id": "kid", "workflow_type": "t"},
                {
                    "kind": "activity",
                    "awaited": False,
                    "activity_id": "a",
                    "activity_type": "charge",
                    "attempt": 3,
                    "state": "backing-off",
                    "next_retry_at": "2026-01-01T00:10:00Z",
                    "last_error": "down",
                },
                {
                    "kind": "timer",
                    "awaited": False,
                    "purpose": "execution timeout",
                    "fire_at": "2026-01-02T00:00:00Z",
                },
                {"kind": "signal", "awaited": False, "name": "go", "deadline": None},
            ],
            "stack": ["flows.py:3 in run: await helper()", "flows.py:9 in helper: await x"],
        }
    )
    show_waiting(cli.Output(as_json=False), found)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "waiting on:",
        "  ▸ child kid (t)  (awaited now)",
        "    activity charge (attempt 3, backing-off, next retry 2026-01-01T00:10:00+00:00, "
        "last error: down)",
        "    timer execution timeout firing at 2026-01-02T00:00:00+00:00",
        "    signal 'go'",
        "suspended at (outermost first):",
        "    flows.py:3 in run: await helper()",
        "    flows.py:9 in helper: await x",
    ]
    show_waiting(cli.Output(as_json=False), "no engine answered")
    assert capsys.readouterr().out.strip() == "waiting on: unknown (no engine answered)"
