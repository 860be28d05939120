"""``aion``: start, signal, cancel and inspect workflows from a shell; schedules; ``aion dev``,
``aion worker``, ``aion ingress``, ``aion scheduler`` and ``aion init`` for the processes and
projects around them.

Exit codes (stable, for scripts):

- 0 — success (for ``result`` and ``start --wait``: the workflow completed);
- 1 — the workflow failed, was cancelled, terminated or timed out, is not known, or was still
  running when ``--timeout`` ended;
- 2 — usage or validation error (bad arguments, invalid JSON, an id or payload the API
  refused, a missing or wrong ``AION_API_TOKEN``);
- 3 — the API could not be reached, something other than aion's API answered at its URL, or
  the API answered that a backend it needs is unavailable (for ``query``: no engine answered
  in time);
- 4 — the engine refused the command (an unknown workflow type, an id already running or not
  reusable, a signal to a workflow that does not exist, …); ``refused: <CODE>: <reason>`` is
  printed on stderr.

Where the API is: ``--api``, else ``AION_API_URL``, else the ``aion dev`` running from this
directory or the nearest ``.aion/`` above it, else ``http://127.0.0.1:8080``. ``--json``
prints machine-readable JSON on stdout; errors always go to stderr.

Commands (``start``, ``signal``, ``cancel``, ``terminate``) ride through outages: while the API
answers 503 (it cannot reach Kafka) or cannot be reached, the command is sent again with the
same request id (applied once) for up to ``--retry-for`` seconds (default 60; 0: no retries;
at most 86400, as every wait of the CLI: ``inf`` or ``nan`` is a usage error),
with a note on stderr before each wait; giving up exits 3 and names the request id to send it
again with (``--request-id``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aion._cli_commands import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    UsageError,
    add_command_parsers,
    refused,
)
from aion._cli_options import (
    DEFAULT_RETRY_FOR_S,
    MAX_WAIT_S,
    REQUEST_SECONDS,
    WAIT_SECONDS,
    retry_for_from_env,
)
from aion._cli_output import Output
from aion._cli_queries import QueryUsageError
from aion._cli_queries import add_commands as add_query_parsers
from aion._cli_schedules import add_schedule_commands
from aion._cli_versions import VersionUsageError
from aion._cli_versions import add_commands as add_version_parsers
from aion._cli_views import add_view_parsers
from aion._stack_home import find_api
from aion.client import (
    AionApiError,
    AionClient,
    AionCommandRefused,
    AionUnavailable,
    AionWrongServer,
)
from aion_common.settings import SettingsError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNAVAILABLE", "EXIT_USAGE", "main"]

EXIT_UNAVAILABLE = 3

Handler = Callable[[AionClient, argparse.Namespace, Output], Awaitable[int]]

_EXEC = {
    "dev": ("aion_dev", "aion-dev", "libs/aion_dev"),
    "worker": ("aion_worker", "aion-worker", "services/worker"),
    "ingress": ("aion_ingress", "aion-ingress", "services/ingress"),
    "scheduler": ("aion_scheduler", "aion-scheduler", "services/scheduler"),
}
_OWN_PARSER = frozenset(_EXEC)  # `aion dev --help` is aion dev's own help


def _exec(command: str, rest: Sequence[str], out: Output) -> int:
    """Replace this process with ``aion dev``'s supervisor, a worker, an ingress or the
    scheduler, so Ctrl-C and SIGTERM
    reach it directly."""
    module, distribution, path = _EXEC[command]
    if importlib.util.find_spec(module) is None:
        out.error(
            f"`aion {command}` needs the {distribution} package ({path}): run `make install` "
            f"in an aion checkout, or install its wheel (`make dist`; docs/install.md)"
        )
        return EXIT_USAGE
    argv = [sys.executable, "-m", module, *rest]
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter and module, no shell


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aion",
        description="Start, signal, cancel and inspect aion workflows; run aion locally.",
        epilog="exit codes: 0 ok; 1 workflow failed/not found/still running; "
        "2 usage or validation; 3 API unreachable or not aion's; 4 command refused by the "
        "engine",
    )
    parser.add_argument(
        "--api",
        default=os.environ.get("AION_API_URL"),
        help="API base URL (env AION_API_URL; default: the aion dev running from this "
        "directory or the nearest .aion/ above it, else http://127.0.0.1:8080)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--request-timeout", type=REQUEST_SECONDS, default=10.0, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--retry-for",
        type=WAIT_SECONDS,
        default=None,  # AION_RETRY_FOR, read in main so that a bad value is named as such
        metavar="SECONDS",
        help="re-send a command while the API or Kafka is away, for at most this long "
        f"(env AION_RETRY_FOR; default {DEFAULT_RETRY_FOR_S:g}; 0: never; at most {MAX_WAIT_S})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command_parsers(sub)
    add_view_parsers(sub)
    add_version_parsers(sub)
    add_query_parsers(sub)
    add_schedule_commands(sub)
    _add_local_commands(sub)
    for name, command in sub.choices.items():  # `aion list --json` as well as `aion --json list`
        if name not in _OWN_PARSER:
            command.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return parser


def _add_local_commands(sub: Any) -> None:
    """``aion dev``, ``aion worker``, ``aion ingress``, ``aion scheduler`` (processes of their
    own: ``main`` execs them) and ``aion init`` (writes files; no API needed)."""
    p = sub.add_parser(
        "dev",
        help="run the whole stack locally (Kafka, engine, watcher, projector, API, worker); "
        "`aion dev --help` for its options",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of `aion dev`")
    p.set_defaults(command="dev")
    p = sub.add_parser(
        "worker",
        help="run activities: `aion worker --activities MODULE [--task-queue Q] "
        "[--max-concurrent N]`; `aion worker --help` for more",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of `aion worker`")
    p.set_defaults(command="worker")
    for name, text in (
        (
            "ingress",
            "map your Kafka topics to workflow starts and signals: "
            "`aion ingress --config FILE`; `aion ingress --help` for more",
        ),
        ("scheduler", "fire the schedules (`aion schedule create`); `aion dev` runs one"),
    ):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=f"options of `aion {name}`")
        p.set_defaults(command=name)
    p = sub.add_parser(
        "init",
        help="write a new project: a workflow, an activity, a test, pyproject.toml, README",
    )
    p.add_argument("directory", help="where (created; must be empty if it exists)")
    p.set_defaults(command="init")


async def _run(args: argparse.Namespace, out: Output) -> int:
    token = os.environ.get("AION_API_TOKEN") or None
    handler: Handler = args.handler
    async with AionClient(
        args.api,
        token,
        timeout=args.request_timeout,
        retry_for=args.retry_for,
        on_retry=out.retrying,
    ) as client:
        return await handler(client, args, out)


_USAGE_PROBLEMS = frozenset(
    {
        "invalid-input",
        "payload-too-large",
        "unauthorized",
        "package-too-large",
        "invalid-package",
        "invalid-route",
        "invalid-move",
    }
)


def _api_error(out: Output, err: AionApiError) -> int:
    """Report a problem the API answered; return the exit code."""
    if isinstance(err, AionCommandRefused):
        return refused(out, err)
    out.error(err.detail if err.kind == "not-found" else str(err))
    if err.kind in {"unavailable", "query-timeout"}:
        return EXIT_UNAVAILABLE
    if err.kind in _USAGE_PROBLEMS:
        return EXIT_USAGE
    if err.kind == "conflict":
        return EXIT_REFUSED
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    out = Output(as_json=args.json)
    if args.command in _OWN_PARSER:  # the rest belongs to that command's own parser
        return _exec(args.command, [*unknown, *args.rest], out)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "init":
        from aion._cli_init import init_project  # noqa: PLC0415 - only `aion init` needs it

        return init_project(args.directory, out)
    if args.retry_for is None:
        try:
            args.retry_for = retry_for_from_env()
        except SettingsError as err:
            parser.error(str(err))
    found_by = "the one --api or AION_API_URL gave"
    if args.api is None:
        args.api, found_by = find_api()
    try:
        return asyncio.run(_run(args, out))
    except (
        UsageError,
        VersionUsageError,
        QueryUsageError,
        AionWrongServer,
        AionUnavailable,
        AionApiError,
    ) as err:
        return _report(out, err, found_by)
    except KeyboardInterrupt:
        return 130


def _report(out: Output, err: Exception, found_by: str) -> int:
    """Print what went wrong; the exit code."""
    if isinstance(err, UsageError | VersionUsageError | QueryUsageError):
        out.error(str(err))
        return EXIT_USAGE
    if isinstance(err, AionWrongServer):
        out.error(f"{err}\nis aion dev running? it prints its API URL: pass it as --api")
        return EXIT_UNAVAILABLE
    if isinstance(err, AionUnavailable) and err.request_id is not None:
        out.error(str(err))  # a command given up on: names the request id to send it again with
        return EXIT_UNAVAILABLE
    if isinstance(err, AionUnavailable):
        out.error(
            f"{err}\n  (that URL is {found_by}) is aion dev running? Start it, run `aion` from "
            "the directory it runs in, or pass the URL it printed as --api or AION_API_URL"
        )
        return EXIT_UNAVAILABLE
    assert isinstance(err, AionApiError)
    return _api_error(out, err)


if __name__ == "__main__":
    sys.exit(main())
