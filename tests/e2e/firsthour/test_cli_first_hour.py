"""What a new user's first mistakes get from the ``aion`` command, on a real stack.

Refusals are never reported as success: a typo'd type, a second start of a running id and a
signal to an id that never started each exit 4 with ``refused: CODE: reason``, and
``describe`` of an id whose only start was refused says so. Each id reuse policy does what the
README says; ``result()`` after an id is reused returns the new run's result (and the client
that started the old run still gets the old one). A workflow's exception comes back with its
type and the user's file and line; ``terminate`` records a reason and shows TERMINATED; default
child ids are readable. Every command runs from the stack's work directory, without ``--api``.
"""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aion import AionClient
from aion.testing import AionStack

from .conftest import aion, line_of

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def test_typos_running_ids_and_unknown_ids_are_refused_with_exit_4(
    stack: AionStack, workdir: Path
) -> None:
    typo = aion(workdir, "start", "fh.ecoh", "--id", "fh-typo")
    assert typo.returncode == 4, (typo.stdout, typo.stderr)
    assert typo.stderr.startswith(
        "refused: UNKNOWN_WORKFLOW_TYPE: workflow type 'fh.ecoh' is not loaded"
    ), typo.stderr
    assert "fh.echo" in typo.stderr  # the loaded types are listed
    described = aion(workdir, "describe", "fh-typo")
    assert described.returncode == 1
    assert "not in the views; its start was refused: UNKNOWN_WORKFLOW_TYPE" in described.stderr

    first = aion(workdir, "start", "fh.wait", "--id", "fh-busy")
    assert first.returncode == 0, first.stderr
    assert "started fh-busy" in first.stdout
    again = aion(workdir, "start", "fh.wait", "--id", "fh-busy")
    assert again.returncode == 4, (again.stdout, again.stderr)
    assert again.stderr.startswith("refused: ALREADY_RUNNING: workflow 'fh-busy' is already")

    nobody = aion(workdir, "signal", "fh-nobody", "go")
    assert nobody.returncode == 4, (nobody.stdout, nobody.stderr)
    assert nobody.stderr.startswith("refused: UNKNOWN_WORKFLOW: workflow 'fh-nobody' does not")
    assert aion(workdir, "signal", "fh-busy", "go", "--payload", "1").returncode == 0


def test_each_id_reuse_policy_does_what_the_readme_says(stack: AionStack, workdir: Path) -> None:
    def start(workflow_id: str, *args: str) -> tuple[int, str]:
        done = aion(workdir, "start", *args, "--id", workflow_id, "--wait", "--timeout", "60")
        return done.returncode, done.stdout + done.stderr

    assert start("fh-done", "fh.echo", "--input", "1")[0] == 0
    assert start("fh-failed", "fh.fail", "--input", "1")[0] == 1
    # AllowDuplicate (the default): a closed id starts again
    assert start("fh-done", "fh.echo", "--input", "2") == (0, "2\n")
    # RejectDuplicate: never again
    code, said = start("fh-done", "fh.echo", "--id-reuse-policy", "RejectDuplicate")
    assert (code, said.split(":")[:2]) == (4, ["refused", " ID_REUSE_REJECTED"])
    # AllowDuplicateFailedOnly: only after a run that did not complete
    code, said = start("fh-done", "fh.echo", "--id-reuse-policy", "allow_duplicate_failed_only")
    assert (code, "ID_REUSE_REJECTED" in said) == (4, True)
    code, said = start(
        "fh-failed", "fh.echo", "--input", "3", "--id-reuse-policy", "AllowDuplicateFailedOnly"
    )
    assert (code, said) == (0, "3\n")
    # TerminateIfRunning: the running run is replaced
    assert aion(workdir, "start", "fh.wait", "--id", "fh-replaced").returncode == 0
    code, said = start(
        "fh-replaced", "fh.echo", "--input", "4", "--id-reuse-policy", "TerminateIfRunning"
    )
    assert (code, said) == (0, "4\n")
    runs = _json(aion(workdir, "--json", "describe", "fh-replaced"))["runs"]
    assert [r["status"] for r in runs] == ["TERMINATED", "COMPLETED"]
    assert runs[0]["error_message"].startswith("terminated:replaced by a new start")


async def test_result_after_reusing_an_id_is_the_new_runs(stack: AionStack) -> None:
    async with stack.client() as first, stack.client() as second, stack.client() as third:
        old = await first.start("fh.echo", "old", id="fh-result")
        assert await old.result() == "old"
        new = await second.start("fh.echo", "new", id="fh-result")
        assert new.run_id != old.run_id
        assert await new.result() == "new"  # asked at once: never the old run's result
        assert (await second.result("fh-result", wait=30)).result == "new"
        assert (await first.result("fh-result", wait=30)).result == "old"  # the run it started
        assert (await third.result("fh-result")).result == "new"  # the current run


def test_a_failure_names_the_users_file_and_line(stack: AionStack, workdir: Path) -> None:
    module = workdir / "firsthour_workflows.py"
    done = aion(workdir, "start", "fh.fail", "--id", "fh-fail", "--input", '"x"', "--wait")
    assert done.returncode == 1
    assert "fh-fail FAILED: ValueError: cannot take 'x'" in done.stdout
    where = f'File "{module}", line {line_of("FAIL_LINE")}, in fail'
    assert where in done.stderr  # the traceback is printed under the failure

    run = _json(aion(workdir, "--json", "describe", "fh-fail"))["current_run"]
    assert (run["status"], run["error_type"]) == ("FAILED", "ValueError")
    assert where in run["error_traceback"]
    assert "aion_engine" not in run["error_traceback"]  # the engine's own frames are left out
    assert where in aion(workdir, "describe", "fh-fail").stdout

    activity = aion(workdir, "start", "fh.activity-fails", "--id", "fh-act", "--wait")
    assert activity.returncode == 1
    run = _json(aion(workdir, "--json", "describe", "fh-act"))["current_run"]
    assert run["error_type"] == "ActivityError"
    assert f'File "{module}", line {line_of("ACTIVITY_LINE")}, in explode' in run["error_traceback"]
    assert f"line {line_of('CALL_LINE')}, in activity_fails" in run["error_traceback"]

    logged = [
        json.loads(line)
        for line in (stack.logs / "engine-1.log").read_text().splitlines()
        if line.startswith("{") and '"fh-fail"' in line
    ]
    failures = [r for r in logged if r["msg"].startswith("workflow failed")]
    assert len(failures) == 1
    assert where in failures[0]["traceback"]


def test_terminate_records_a_reason_and_shows_terminated(stack: AionStack, workdir: Path) -> None:
    assert aion(workdir, "start", "fh.wait", "--id", "fh-term").returncode == 0
    ended = aion(workdir, "terminate", "fh-term")
    assert ended.returncode == 0, ended.stderr
    reason = f"by {getpass.getuser()} with `aion terminate`"
    run = _json(aion(workdir, "--json", "describe", "fh-term"))["current_run"]
    assert (run["status"], run["error_type"]) == ("TERMINATED", "Terminated")
    assert run["error_message"] == f"terminated:{reason}"
    listed = _json(aion(workdir, "--json", "list", "--status", "terminated"))["items"]
    assert "fh-term" in [w["workflow_id"] for w in listed]
    result = aion(workdir, "result", "fh-term")
    assert (result.returncode, "TERMINATED" in result.stdout) == (1, True)


def test_default_child_ids_are_readable(stack: AionStack, workdir: Path) -> None:
    done = aion(workdir, "start", "fh.parent", "--id", "fh-kids", "--input", "2", "--wait")
    assert done.returncode == 0, done.stderr
    tree = aion(workdir, "tree", "fh-kids").stdout
    assert "fh-kids/fh.echo/1 (fh.echo) COMPLETED" in tree
    assert "fh-kids/fh.echo/2 (fh.echo) COMPLETED" in tree


async def test_a_client_without_a_url_finds_the_stack_from_its_directory(
    stack: AionStack, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir / "cards" if (workdir / "cards").is_dir() else workdir)
    monkeypatch.delenv("AION_API_URL", raising=False)
    async with AionClient() as client:
        handle = await client.start("fh.echo", 5)
        assert await handle.result() == 5
