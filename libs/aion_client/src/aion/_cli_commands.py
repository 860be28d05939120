"""``aion start``, ``signal``, ``cancel`` and ``terminate``: send a command, then wait a moment
for the engine to take it or refuse it.

A command is answered 202 as soon as Kafka holds it; the engine applies it, or refuses it (an
unknown workflow type, an id already running, a signal to a workflow that does not exist), a
moment later. So each of these waits up to ``--confirm-timeout`` seconds (2 by default) for
that answer: a refusal prints ``refused: <CODE>: <reason>`` and exits 4, never 0. Past the
wait the command stays queued and the exit code is 0, with a note (and the reason when no
engine is running for the workflow's partition). ``--no-wait`` sends and returns at once.
"""

from __future__ import annotations

import argparse
import getpass
import json
from typing import Any

from aion._cli_options import CONFIRM_SECONDS, WAIT_SECONDS
from aion._cli_output import Output
from aion._errors import AionCommandRefused
from aion._results import Accepted, CommandStatus, Refusal, WorkflowResult
from aion.client import AionClient
from aion_common.domain.outcomes import IdReusePolicy

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "UsageError",
    "add_command_parsers",
    "refused",
    "show_result",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 4
DEFAULT_CONFIRM_S = 2.0


class UsageError(Exception):
    """Arguments that parse but cannot be used (invalid JSON, say)."""


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise UsageError(f"{what} is not valid JSON: {err}") from err


def _policy(text: str) -> IdReusePolicy:
    try:
        return IdReusePolicy.parse(text)
    except ValueError as err:  # InvalidInput is a ValueError
        raise argparse.ArgumentTypeError(str(err)) from err


def refused(out: Output, refusal: Refusal | AionCommandRefused) -> int:
    """Report a refusal (stderr; with ``--json`` also as JSON on stdout): exit code 4."""
    if out.as_json:
        out.json(
            {
                "refused": True,
                "workflow_id": refusal.workflow_id,
                "command_id": refusal.command_id,
                "command_type": refusal.command_type,
                "code": refusal.code,
                "reason": refusal.reason,
            }
        )
    out.errors.print(f"refused: {refusal.code}: {refusal.reason}", markup=False)
    return EXIT_REFUSED


def show_result(out: Output, outcome: WorkflowResult) -> int:
    """Print a result (or where the workflow stands); 0 only if it completed."""
    if out.as_json:
        out.json(outcome)
    elif outcome.status == "BLOCKED":
        out.console.print(
            f"{outcome.workflow_id} is [red]BLOCKED[/]: {outcome.error_message or ''}\n"
            f"  see `aion describe {outcome.workflow_id}`; once fixed code is deployed, "
            f"`aion run move {outcome.workflow_id} HASH` (or route the type to it)"
        )
    elif not outcome.closed:
        why = f": {outcome.pending_reason}" if outcome.pending_reason else ""
        out.console.print(f"{outcome.workflow_id} is still [yellow]{outcome.status}[/]{why}")
    elif outcome.succeeded:
        out.console.print(json.dumps(outcome.result, indent=2), markup=False)
    else:
        out.console.print(
            f"{outcome.workflow_id} [red]{outcome.status}[/]: {outcome.error_message or ''}"
        )
        if outcome.error_traceback:
            out.errors.print(outcome.error_traceback.rstrip(), markup=False, highlight=False)
    if outcome.closed and outcome.succeeded:
        return EXIT_OK
    return EXIT_FAILED


async def _confirmed(
    client: AionClient, out: Output, args: argparse.Namespace, accepted: Accepted, done: str
) -> int:
    """Wait for the engine's answer to ``accepted``; print ``done`` once it applied it."""
    if args.no_wait:
        if out.as_json:
            out.json(accepted)
        else:
            out.console.print(f"{done}: sent (command {accepted.command_id})", markup=False)
        return EXIT_OK
    status = await client.command_status(
        accepted.workflow_id, accepted.command_id, wait=args.confirm_timeout
    )
    if status.refusal is not None:
        return refused(out, status.refusal)
    _note_pending(out, args, status)
    if out.as_json:
        out.json(status)
    elif status.state == "APPLIED":
        out.console.print(f"{done} (command {accepted.command_id})", markup=False)
    else:
        out.console.print(f"{done}: sent (command {accepted.command_id})", markup=False)
    return EXIT_OK


def _note_pending(out: Output, args: argparse.Namespace, status: CommandStatus) -> None:
    if status.state != "PENDING":
        return
    wait = f"{args.confirm_timeout:g} s"
    if status.pending_reason:
        out.note(
            f"{status.pending_reason}: the command is queued until one runs "
            "(is `aion dev` running, with your workflows?)"
        )
    else:
        out.note(f"the engine has not taken the command yet (waited {wait}); it stays queued")


async def _start(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    payload = _json_arg(args.input, "--input")
    handle = await client.start(
        args.type,
        payload,
        id=args.id,
        request_id=args.request_id,
        id_reuse_policy=args.id_reuse_policy,
        package_version=args.version,
    )
    done = f"started {handle.workflow_id}" + (f" (run {handle.run_id})" if handle.run_id else "")
    if not args.wait:
        return await _confirmed(client, out, args, handle, done)
    status = await handle.confirmed(wait=args.confirm_timeout)
    if status.refusal is not None:
        return refused(out, status.refusal)
    if status.pending_reason:  # else the result's wait covers a slow start: nothing to say
        _note_pending(out, args, status)
    return show_result(out, await handle.outcome(wait=args.timeout))


async def _signal(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    payload = _json_arg(args.payload, "--payload")
    if args.start is None:
        if args.input is not None:
            raise UsageError("--input is the input of --start TYPE; give --start too")
        accepted = await client.signal(args.id, args.name, payload, request_id=args.request_id)
        done = f"signal {args.name!r} sent to {args.id}"
        return await _confirmed(client, out, args, accepted, done)
    accepted = await client.signal_with_start(
        args.id,
        args.name,
        payload,
        workflow_type=args.start,
        input=_json_arg(args.input or "null", "--input"),
        request_id=args.request_id,
        id_reuse_policy=args.id_reuse_policy,
    )
    done = f"signal {args.name!r} sent to {args.id} (started as {args.start} if absent)"
    return await _confirmed(client, out, args, accepted, done)


async def _cancel(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    accepted = await client.cancel(args.id, args.reason, request_id=args.request_id)
    return await _confirmed(client, out, args, accepted, f"cancellation of {args.id} requested")


def default_terminate_reason() -> str:
    """What ``aion terminate`` records without ``--reason`` (as Temporal's CLI: who did it)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container, say)
        user = "someone"
    return f"by {user} with `aion terminate`"


async def _terminate(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    reason = args.reason or default_terminate_reason()
    accepted = await client.terminate(args.id, reason, request_id=args.request_id)
    return await _confirmed(client, out, args, accepted, f"{args.id} terminated ({reason})")


def _waiting(parser: argparse.ArgumentParser, *, result: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--no-wait",
        action="store_true",
        help="send and return at once, without waiting for the engine to take or refuse it",
    )
    if result:
        group.add_argument("--wait", action="store_true", help="wait for the result")
    parser.add_argument("--request-id", help="idempotency key: a retry sends the same command")


def add_command_parsers(sub: Any) -> None:
    """``start``, ``signal``, ``cancel``, ``terminate``."""
    p = sub.add_parser("start", help="start a workflow")
    p.add_argument("type")
    p.add_argument("--id", help="workflow id (default: generated)")
    p.add_argument("--input", default="null", help="JSON input (default null)")
    p.add_argument(
        "--id-reuse-policy",
        type=_policy,
        metavar="POLICY",
        help="when the id was used before: AllowDuplicate (default: a closed id may start "
        "again, a running one is refused), AllowDuplicateFailedOnly (only if its last run did "
        "not complete), RejectDuplicate (never), TerminateIfRunning (replace a running one); "
        "any case, with or without _ or -",
    )
    p.add_argument("--version", metavar="HASH", help="pin the run to this package version")
    _waiting(p, result=True)
    p.add_argument("--timeout", type=WAIT_SECONDS, default=60.0, help="seconds --wait waits")
    p.set_defaults(handler=_start)
    p = sub.add_parser("signal", help="send a signal (with --start: signal-with-start)")
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("--payload", default="null", help="JSON payload (default null)")
    p.add_argument(
        "--start",
        metavar="TYPE",
        help="signal-with-start: start a TYPE run first if the workflow has no open run",
    )
    p.add_argument("--input", help="JSON input of the run --start starts (default null)")
    p.add_argument(
        "--id-reuse-policy",
        type=_policy,
        metavar="POLICY",
        help="with --start, when the id was used before (default AllowDuplicate)",
    )
    _waiting(p)
    p.set_defaults(handler=_signal)
    p = sub.add_parser("cancel", help="ask a workflow to cancel (its code decides how it ends)")
    p.add_argument("id")
    p.add_argument("--reason", default="")
    _waiting(p)
    p.set_defaults(handler=_cancel)
    p = sub.add_parser("terminate", help="end a workflow's run at once (TERMINATED)")
    p.add_argument("id")
    p.add_argument("--reason", default="", help="recorded with it (default: who ran this)")
    _waiting(p)
    p.set_defaults(handler=_terminate)
    for command in ("start", "signal", "cancel", "terminate"):
        sub.choices[command].add_argument(
            "--confirm-timeout",
            type=CONFIRM_SECONDS,
            default=DEFAULT_CONFIRM_S,
            metavar="SECONDS",
            help=f"how long to wait for the engine to take or refuse it (default "
            f"{DEFAULT_CONFIRM_S:g})",
        )
