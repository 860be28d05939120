"""The CLI's version commands: ``aion package build|rm``, ``aion deploy``, ``aion packages``,
``aion route``, ``aion routes``, ``aion run move`` and ``aion replay``.

Building a package and replaying histories happen here, in the user's environment: a build
imports the package the way an engine will (in a namespace of its own), so an import error
shows in the terminal before anything is uploaded; ``aion replay`` runs the engine's own
replay (it needs the engine package installed beside the CLI).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aion._cli_options import WAIT_SECONDS
from aion.client import AionClient

if TYPE_CHECKING:
    from aion._cli_output import Output
    from aion_common.packages import Package

__all__ = ["VersionUsageError", "add_commands", "fetch_history", "run_replay_check"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 4
_HISTORY_PAGE = 1000


class VersionUsageError(Exception):
    """A version command was given something it cannot use (the message says what)."""


@dataclass(frozen=True, slots=True)
class Built:
    """A package built from a path, and the workflow types importing it registers."""

    package: Package
    declared: dict[str, str]
    imported: tuple[str, ...]


def build(path: str, include: list[str]) -> Built:
    """Build the package of ``path`` and import it as an engine would."""
    from aion_common.packages import (  # noqa: PLC0415 - the CLI starts fast without these
        PackageError,
        build_package,
        declared_workflows,
    )

    try:
        package = build_package(Path(path), include=include)
        declared = declared_workflows(package)
    except PackageError as err:
        raise VersionUsageError(str(err)) from err
    if not declared:
        raise VersionUsageError(
            f"{path} declares no workflow: decorate one with @workflow.defn (from aion import "
            "workflow)"
        )
    return Built(package, declared, _import_types(package))


def _import_types(package: Package) -> tuple[str, ...]:
    """The workflow types the package registers when imported as an engine imports it (in a
    namespace of its own, from a scratch directory): an import error shows here, before any
    upload."""
    from aion import workflow  # noqa: PLC0415
    from aion_common.packages import PackageError, PackageLoader  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="aion-build-") as where:
        try:
            modules = PackageLoader(Path(where)).load(package)
        except PackageError as err:
            raise VersionUsageError(f"the package does not import: {err}") from err
    return tuple(
        sorted(
            found.name
            for module in modules
            for value in vars(module).values()
            if (found := workflow.definition(value)) is not None
        )
    )


def _show_built(out: Output, built: Built) -> None:
    package = built.package
    if out.as_json:
        out.json(
            {
                "version": package.version,
                "workflow_types": sorted(built.declared),
                "files": [p for p, _ in package.files],
                "size_bytes": len(package.archive()),
            }
        )
        return
    out.console.print(package.version, markup=False, highlight=False)
    for name, where in sorted(built.declared.items()):
        out.console.print(f"  workflow {name}  ({where})", markup=False, highlight=False)
    out.console.print(
        f"  {len(package.files)} files, {len(package.archive())} bytes compressed",
        markup=False,
        highlight=False,
    )
    missing = sorted(set(built.declared) - set(built.imported)) if built.imported else []
    if missing:
        out.errors.print(f"warning: importing it registers no {', '.join(missing)}", markup=False)


async def _package_build(_client: AionClient, args: argparse.Namespace, out: Output) -> int:
    _show_built(out, build(args.path, args.include))
    return EXIT_OK


async def _deploy(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    built = build(args.path, args.include)
    info = await client.deploy(built.package.archive(), route=args.route)
    if out.as_json:
        out.json(info)
        return EXIT_OK
    state = "uploaded" if info.created else "already uploaded"
    out.console.print(f"{info.version} {state}", markup=False, highlight=False)
    for name in info.workflow_types:
        routed = " (routed: new runs start on it)" if args.route else ""
        out.console.print(f"  workflow {name}{routed}", markup=False, highlight=False)
    if not args.route:
        first = info.workflow_types[0]
        out.console.print(
            f"route new runs to it with: aion route {first} {info.version}",
            markup=False,
            highlight=False,
        )
    return EXIT_OK


async def _packages(client: AionClient, _args: argparse.Namespace, out: Output) -> int:
    from aion._cli_output import table as _table  # noqa: PLC0415
    from aion._cli_output import when as _when  # noqa: PLC0415

    entries = await client.packages()
    if out.as_json:
        out.json(list(entries))
        return EXIT_OK
    table = _table("type", "version", "routed", "open runs", "uploaded", "size")
    for e in entries:
        table.add_row(
            e.workflow_type,
            e.version,
            "yes" if e.routed else "",
            str(e.open_runs),
            _when(e.uploaded_at),
            f"{e.size_bytes} B",
        )
    out.console.print(table)
    return EXIT_OK


async def _package_rm(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    await client.delete_package(args.type, args.version)
    if out.as_json:
        out.json({"deleted": True, "workflow_type": args.type, "version": args.version})
    else:
        out.console.print(f"deleted {args.type} {args.version}", markup=False, highlight=False)
    return EXIT_OK


async def _route(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    route = await client.route(args.type, args.version)
    if out.as_json:
        out.json(route)
    else:
        out.console.print(
            f"new runs of {route.workflow_type} start on {route.version}",
            markup=False,
            highlight=False,
        )
    return EXIT_OK


async def _routes(client: AionClient, _args: argparse.Namespace, out: Output) -> int:
    from aion._cli_output import table as _table  # noqa: PLC0415
    from aion._cli_output import when as _when  # noqa: PLC0415

    routes = await client.routes()
    if out.as_json:
        out.json(list(routes))
        return EXIT_OK
    table = _table("type", "version", "routed")
    for r in routes:
        table.add_row(r.workflow_type, r.version, _when(r.routed_at))
    out.console.print(table)
    return EXIT_OK


async def _move(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    accepted = await client.move(args.id, args.version, run_id=args.run)
    deadline = time.monotonic() + args.timeout
    while True:
        found = await client.describe(args.id)
        run = next(
            (r for r in found.runs if r.run_id == (args.run or found.current_run.run_id)),
            found.current_run,
        )
        refused = [r for r in await client.refusals(args.id) if r.command_id == accepted.command_id]
        if refused:
            out.errors.print(f"refused: {refused[0].code}: {refused[0].reason}", markup=False)
            return EXIT_REFUSED
        if run.package_version == args.version:
            if out.as_json:
                out.json({"moved": True, "workflow_id": args.id, "run_id": run.run_id})
            else:
                out.console.print(
                    f"{args.id} run {run.run_id} is on {args.version} ({run.status})",
                    markup=False,
                    highlight=False,
                )
            return EXIT_OK
        if time.monotonic() > deadline:
            out.errors.print(
                f"the move was sent (command {accepted.command_id}) but not applied within "
                f"{args.timeout:.0f} s; check `aion describe {args.id}` and `aion refusals "
                f"{args.id}`",
                markup=False,
            )
            return EXIT_FAILED
        await asyncio.sleep(0.2)


async def fetch_history(client: AionClient, workflow_id: str) -> dict[str, Any]:
    """Every event of a workflow, as the API's history JSON (one page holding all)."""
    events: list[dict[str, Any]] = []
    from_seq: int | None = 1
    while from_seq is not None:
        page = await client.history(workflow_id, from_seq=from_seq, limit=_HISTORY_PAGE)
        events.extend(
            {
                "seq": e.seq,
                "run_id": e.run_id,
                "event_type": e.event_type,
                "recorded_at": e.recorded_at.isoformat(),
                "command_id": e.command_id,
                "fields": e.fields,
            }
            for e in page.events
        )
        from_seq = page.next_from_seq
    return {"workflow_id": workflow_id, "events": events, "next_from_seq": None}


async def _code_args(
    client: AionClient, against: str | None, workflow_type: str, run_version: str, scratch: Path
) -> tuple[str, list[str]]:
    """(what it is, the replay check's code arguments) for ``--against``: a path, a hash, or
    by default the type's route (else the run's own version)."""
    if against is not None and not _is_hash(against):
        return against, ["--path", against]
    version = against
    if version is None:
        routes = {r.workflow_type: r.version for r in await client.routes()}
        version = routes.get(workflow_type) or run_version
    if not version:
        raise VersionUsageError(
            f"no version to replay {workflow_type!r} against: its runs are on the engine's own "
            "modules and it has no route; say --against PATH"
        )
    archive = scratch / f"{version}.zip"
    archive.write_bytes(await client.package_archive(version))
    return version[:12], ["--package", str(archive)]


def _is_hash(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)  # noqa: PLR2004


def run_replay_check(histories: list[Path], code: list[str]) -> list[dict[str, Any]]:
    """Run the engine's replay check (``python -m aion_engine.replay_check``) on saved
    histories; its outcomes as JSON. The engine package must be installed beside the CLI."""
    if importlib.util.find_spec("aion_engine") is None:
        raise VersionUsageError(
            "replay checks run the engine's replay: install the engine package beside the CLI "
            "(make install in an aion checkout, or pip install ./services/engine)"
        )
    argv = [sys.executable, "-m", "aion_engine.replay_check", "--json", *code]
    for history in histories:
        argv += ["--history", str(history)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode not in (0, 1):
        raise VersionUsageError(done.stderr.strip().removeprefix("error: ") or "replay failed")
    outcomes: list[dict[str, Any]] = json.loads(done.stdout)
    return outcomes


async def _replay(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    if (args.id is None) == (args.type is None):
        raise VersionUsageError("give a WORKFLOW_ID, or --type TYPE [--sample N]")
    if args.type is not None:
        page = await client.list(workflow_type=args.type, limit=args.sample)
        ids = [w.workflow_id for w in page.items]
        if not ids:
            raise VersionUsageError(f"no workflow of type {args.type!r} is in the views")
    else:
        ids = [args.id]
    outcomes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aion-replay-") as where:
        scratch = Path(where)
        groups: dict[tuple[str, str], list[Path]] = {}
        for index, workflow_id in enumerate(ids):
            document = await fetch_history(client, workflow_id)
            started = next(
                (e for e in document["events"] if e["event_type"] == "WorkflowStarted"), None
            )
            if started is None:
                raise VersionUsageError(f"workflow {workflow_id!r} has no started run in the views")
            fields = started["fields"]
            key = (fields["workflow_type"], fields.get("package_version", ""))
            path = scratch / f"history-{index}.json"
            path.write_text(json.dumps(document), encoding="utf-8")
            groups.setdefault(key, []).append(path)
        for (workflow_type, version), paths in groups.items():
            label, code = await _code_args(client, args.against, workflow_type, version, scratch)
            found = run_replay_check(paths, code)
            outcomes += found
            if not out.as_json:
                _print_outcomes(out, found, label)
    if out.as_json:
        out.json(outcomes)
    elif len(outcomes) > 1:
        bad = sum(not o["ok"] for o in outcomes)
        out.console.print(
            f"{len(outcomes) - bad} of {len(outcomes)} replay; {bad} diverge",
            markup=False,
            highlight=False,
        )
    return EXIT_OK if all(o["ok"] for o in outcomes) else EXIT_FAILED


def _print_outcomes(out: Output, outcomes: list[dict[str, Any]], label: str) -> None:
    for outcome in outcomes:
        for run in outcome["runs"]:
            mark = "ok  " if run["ok"] else "FAIL"
            out.console.print(
                f"{mark} {outcome['workflow_id']} run {run['run_id']} ({run['workflow_type']}) "
                f"against {label}: {run['describe']}",
                markup=False,
                highlight=False,
            )


def add_commands(sub: Any) -> None:
    """Add the version commands to the CLI's subcommands."""
    p = sub.add_parser("package", help="build a package, or delete an uploaded version")
    group = p.add_subparsers(dest="package_command", required=True, metavar="ACTION")
    q = group.add_parser("build", help="print a package's version and workflow types")
    q.add_argument("path", help="a module file, a package directory or a project directory")
    q.add_argument("--include", action="append", default=[], metavar="GLOB", help="data files")
    q.set_defaults(handler=_package_build)
    q = group.add_parser("rm", help="delete one type of a version no open run uses")
    q.add_argument("type")
    q.add_argument("version")
    q.set_defaults(handler=_package_rm)
    p = sub.add_parser("deploy", help="upload a package (the same files: the same version)")
    p.add_argument("path")
    p.add_argument("--route", action="store_true", help="start new runs of its types on it")
    p.add_argument("--include", action="append", default=[], metavar="GLOB", help="data files")
    p.set_defaults(handler=_deploy)
    p = sub.add_parser("packages", help="uploaded package versions")
    p.set_defaults(handler=_packages)
    p = sub.add_parser("route", help="start new runs of TYPE on VERSION")
    p.add_argument("type")
    p.add_argument("version")
    p.set_defaults(handler=_route)
    p = sub.add_parser("routes", help="the version each type's new runs start on")
    p.set_defaults(handler=_routes)
    p = sub.add_parser("run", help="act on one run: `aion run move ID VERSION`")
    group = p.add_subparsers(dest="run_command", required=True, metavar="ACTION")
    q = group.add_parser("move", help="go on with a (blocked) run on VERSION if it replays")
    q.add_argument("id")
    q.add_argument("version")
    q.add_argument("--run", help="the run (default: the current one)")
    q.add_argument(
        "--timeout", type=WAIT_SECONDS, default=30.0, help="seconds to wait for the move"
    )
    q.set_defaults(handler=_move)
    p = sub.add_parser(
        "replay",
        help="check that code replays recorded histories (exit 1 if any diverges)",
    )
    p.add_argument("id", nargs="?", help="a workflow id")
    p.add_argument("--type", help="replay the latest runs of this type instead")
    p.add_argument("--sample", type=int, default=20, help="how many with --type")
    p.add_argument(
        "--against",
        help="PATH to build, or an uploaded VERSION (default: the type's route)",
    )
    p.set_defaults(handler=_replay)
