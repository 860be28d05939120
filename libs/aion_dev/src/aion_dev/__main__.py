"""``aion-dev`` (``aion dev``, ``make dev``): the whole aion stack, supervised, until Ctrl-C.

Runs the embedded Apache Kafka (data under ``--home``, default ``./.aion``, kept across runs)
or ``--kafka BOOTSTRAP``, SQLite under the home or ``--database URL``, the engine(s), watcher,
projector and API as supervised child processes with the example workflows plus any
``--workflows MODULE``. ``--demo`` runs the example cases against the stack and exits 0 only
if every one ended as expected. Logs: ``<home>/logs/<name>.log``, this supervisor's own in
``<home>/logs/aion-dev.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

from aion_common.kafka.link import LinkChange
from aion_common.runtime.logging import JsonFormatter, configure_logging
from aion_common.settings import (
    MAX_PARTITIONS,
    MAX_PORT,
    SettingsError,
    whole_from_env,
    whole_option,
)
from aion_common.testing import free_port
from aion_dev.pidfile import HomeBusy
from aion_dev.stack import (
    BROKER_COUNTS,
    MAX_ENGINES,
    Stack,
    StackConfig,
    StackError,
    StartupError,
)
from aion_dev.versions import CodeDeployer

__all__ = ["build_config", "main"]

_log = logging.getLogger("aion.dev")
T = TypeVar("T")
EXAMPLES = "examples"
FALLBACK_EXAMPLES = "aion_engine.examples"
DEMO_CASES = "examples.demo"
SHOP = "examples.shop"
SHOP_URL_ENV = "AION_EXAMPLES_SHOP_URL"
# What the banner suggests starting, by the example module loaded.
_TRY = {
    EXAMPLES: 'examples.order --id order-1 --input \'{"order_id": "A-1", "amount": 4200}\'',
    FALLBACK_EXAMPLES: 'example.payment --id order-1 --input \'{"line": 1, "amount": 5}\'',
}
READY_TIMEOUT_S = 120.0
PREFERRED_API_PORT = 8080  # the `aion` CLI's default API URL is http://127.0.0.1:8080
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_STACK_FAILED = 3
_DEFAULT_PARTITIONS = 6
_PARTITIONS_WHY = "a local stack; each of aion's topics gets this many"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aion-dev", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    env = os.environ.get
    parser.add_argument("--home", type=Path, default=Path(env("AION_DEV_HOME", ".aion")))
    parser.add_argument("--kafka", metavar="BOOTSTRAP", help="use this broker, not the embedded")
    parser.add_argument("--database", metavar="URL", help="SQLAlchemy async URL (default SQLite)")
    parser.add_argument(
        "--workflows", action="append", default=[], metavar="MODULE", help="repeatable"
    )
    parser.add_argument(
        "--activities",
        action="append",
        default=[],
        metavar="MODULE",
        help="modules the worker imports for activities, besides the workflow modules (repeatable)",
    )
    parser.add_argument(
        "--task-queue",
        action="append",
        default=[],
        metavar="QUEUE",
        help="run a worker for this task queue too (repeatable; 'default' always runs)",
    )
    parser.add_argument(
        "--port",
        type=whole_option(minimum=0, maximum=MAX_PORT, what="a port number", why="0: choose"),
        default=0,
        help=f"API port (default: {PREFERRED_API_PORT} if free, else the last one, else any free)",
    )
    parser.add_argument(
        "--ingress",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="run `aion ingress --config FILE` too (repeatable)",
    )
    parser.add_argument(
        "--engines",
        type=whole_option(
            minimum=1,
            maximum=MAX_ENGINES,
            what="a whole number of engines",
            why="processes on this one machine; one past the partitions idles",
        ),
        default=1,
        metavar="N",
        help=f"engine instances (default 1; at most {MAX_ENGINES})",
    )
    parser.add_argument(
        "--brokers",
        type=whole_option(
            minimum=1,
            maximum=BROKER_COUNTS[-1],
            what="a whole number of Kafka nodes",
            why="each a JVM on this one machine",
        ),
        choices=BROKER_COUNTS,
        default=1,
        metavar="N",
        help="embedded Kafka nodes (default 1); 3 runs a cluster with replication factor 3 "
        "and 2 replicas in sync, to try a broker's failover (kill one: kill -9 <pid>, from "
        f"<home>/aion-dev.pids); 1, or 3 to {BROKER_COUNTS[-1]}: with 2, losing either stops "
        "writes",
    )
    parser.add_argument(
        "--partitions",
        type=whole_option(minimum=1, maximum=MAX_PARTITIONS, why=_PARTITIONS_WHY),
        metavar="N",
        help="partitions per topic (env AION_PARTITIONS; default 6)",
    )
    parser.add_argument("--topic-prefix", default=env("AION_TOPIC_PREFIX", "aion"))
    parser.add_argument(
        "--no-examples", action="store_true", help="don't load the example workflows"
    )
    parser.add_argument("--demo", action="store_true", help="run the demo cases, then exit")
    parser.add_argument("--demo-cases", default=DEMO_CASES, metavar="MODULE", help="demo cases")
    parser.add_argument("--log-level", default=env("AION_LOG_LEVEL", "INFO"))
    return parser


def examples_location() -> tuple[str, str | None]:
    """Which example workflows to load, and the directory to put on the engines' path for them.

    The checkout's ``examples`` package — this package's own checkout for an editable install
    (``make install``), else the working directory — or the engine's built-in
    ``aion_engine.examples`` (a plain ``pip install`` has no checkout).
    """
    checkout = Path(__file__).resolve().parents[4]  # libs/aion_dev/src/aion_dev/ → the checkout
    for root in (checkout, Path.cwd()):
        if (root / EXAMPLES / "__init__.py").is_file():
            return EXAMPLES, str(root)
    return FALLBACK_EXAMPLES, None


def build_config(args: argparse.Namespace) -> StackConfig:
    """The stack the command line asks for."""
    partitions = args.partitions if args.partitions is not None else _env_partitions()
    pythonpath: list[str] = []
    workflows: list[str] = []
    companions: list[tuple[str, tuple[str, ...]]] = []
    env: dict[str, str] = {}
    if not args.no_examples:
        module, root = examples_location()
        workflows.append(module)
        pythonpath += [root] if root else []
        if module == EXAMPLES:  # the examples' activities call the shop: run it beside them
            port = free_port()
            companions.append(("shop", ("-m", SHOP, "--port", str(port))))
            env[SHOP_URL_ENV] = f"http://127.0.0.1:{port}"
    workflows += [m for m in args.workflows if m not in workflows]
    # locally, a topic a workflow publishes to is created on first use (off in production)
    env.setdefault("AION_PUBLISH_CREATE_TOPICS", "on")
    return StackConfig(
        home=args.home,
        kafka_bootstrap=args.kafka,
        database_url=args.database,
        workflows=tuple(workflows),
        activities=tuple(args.activities),
        task_queues=tuple(dict.fromkeys(("default", *args.task_queue))),
        companions=tuple(companions),
        ingress=tuple(_ingress_files(args.ingress)),
        env=env,
        pythonpath=tuple(pythonpath),
        api_port=args.port,
        preferred_api_port=PREFERRED_API_PORT,
        engines=args.engines,
        brokers=args.brokers,
        topic_prefix=args.topic_prefix,
        partitions=partitions,
    )


def _env_partitions() -> int:
    """``AION_PARTITIONS`` (when ``--partitions`` is not given): read here, inside ``main``'s
    handling of SettingsError, so a bad value is a one-line refusal and not a traceback."""
    return whole_from_env(
        os.environ,
        "AION_PARTITIONS",
        _DEFAULT_PARTITIONS,
        minimum=1,
        maximum=MAX_PARTITIONS,
        why=_PARTITIONS_WHY,
    )


def _ingress_files(paths: list[Path]) -> list[Path]:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SettingsError(f"--ingress: no such file: {', '.join(missing)}")
    return paths


def _configure_logging(level: str, home: Path) -> None:
    # People read stderr (text on a terminal); <home>/logs/aion-dev.log keeps JSON lines.
    configure_logging(level, json=not sys.stderr.isatty())
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "aion-dev.log", encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _say(text: str, stream: TextIO = sys.stdout) -> None:
    print(text, file=stream, flush=True)


def _banner(stack: Stack, version: str | None = None) -> str:
    workflows = ", ".join(stack.config.workflows) or "none"
    example = _TRY.get(
        next((m for m in stack.config.workflows if m in _TRY), ""),
        "<workflow-type> --input '<json>'",
    )
    default_api = stack.api_url == f"http://127.0.0.1:{PREFERRED_API_PORT}"
    where = (
        []
        if default_api
        else [
            f"  (port {PREFERRED_API_PORT} was taken: the aion CLI finds this stack when run "
            f"from {Path.cwd()} or below; elsewhere: export AION_API_URL={stack.api_url})"
        ]
    )
    nodes = len(stack.kafka_processes)
    cluster = (
        f" ({nodes} nodes, replication factor {stack.settings.replication_factor})"
        if nodes > 1
        else ""
    )
    return "\n".join(
        [
            f"aion dev is up: API {stack.api_url} (OpenAPI at {stack.api_url}/docs)",
            *where,
            f"  web UI {stack.api_url}/  (workflows, registry, dead letters)",
            f"  kafka {stack.settings.bootstrap_servers}{cluster}, "
            f"database {stack.settings.database_url}",
            f"  workflows from: {workflows}; logs in {stack.logs}",
            *(
                [
                    f"  workflow code: version {version[:12]} deployed and routed; an edit "
                    "deploys a new version for new runs (open runs stay on theirs)"
                ]
                if version
                else []
            ),
            "",
            "Try, in another terminal (with the aion command on PATH):",
            f"  aion start {example} --wait",
            "  aion list",
            "  aion tree order-1",
            "",
            "Ctrl-C stops everything.",
        ]
    )


async def _serve(stack: Stack, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: don't wait for graceful shutdowns
            _log.warning("second signal: killing every child now")
            stack.kill_all()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        if await _until(_start(stack), stop) is None:
            return EXIT_INTERRUPTED
        deployer = CodeDeployer(
            stack.config.workflows,
            stack.config.pythonpath,
            stack.client,
            say=lambda text: _say(text, sys.stderr),
        )
        await deployer.deploy_once()
        watching = asyncio.create_task(deployer.watch(), name="aion-dev-deploy")
        try:
            return await _run(stack, args, stop, deployer)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
    finally:
        await stack.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _run(
    stack: Stack, args: argparse.Namespace, stop: asyncio.Event, deployer: CodeDeployer
) -> int:
    if args.demo:
        from aion_dev.demo import run_demo  # noqa: PLC0415 - rich is only needed here

        status = await _until(run_demo(stack, args.demo_cases), stop)
        return EXIT_INTERRUPTED if status is None else status
    _say(_banner(stack, deployer.version))
    await stop.wait()
    _say("stopping aion dev ...")
    return 0


async def _start(stack: Stack) -> bool:
    await stack.start()
    stack.kafka.on_change(_tell_kafka)
    await stack.wait_ready(timeout=READY_TIMEOUT_S)
    return True


def _tell_kafka(change: LinkChange) -> None:
    """What a person watching ``aion dev`` should know about the broker (not its first answer)."""
    now = time.strftime("%H:%M:%S")
    if not change.up:
        _say(
            f"{now} kafka went away ({change.error}): the services wait for it and stay up; "
            "commands are answered 503 meanwhile (the aion CLI re-sends them), reads keep working"
        )
    elif not change.first:
        _say(f"{now} kafka is back after {change.down_for_s or 0:.1f} s")


async def _until(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """Run ``work`` unless ``stop`` is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aion-dev`` console script (and ``python -m aion_dev``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.brokers > 1 and args.kafka:
        parser.error(f"--brokers {args.brokers} starts embedded Kafka nodes: drop it or --kafka")
    _configure_logging(args.log_level, args.home)
    shown: list[str] = []

    def show(problem: str) -> None:  # at once: stopping the broker takes a few seconds more
        shown.append(problem)
        _say(f"aion dev: {problem}\n\naion dev: stopping ...", sys.stderr)

    try:
        stack = Stack(build_config(args), report=show)
        return asyncio.run(_serve(stack, args))
    except (HomeBusy, SettingsError) as err:
        _say(f"aion dev: {err}", sys.stderr)
        return EXIT_USAGE
    except StartupError as err:
        if str(err) not in shown:
            _say(f"aion dev: {err}", sys.stderr)
        _say("aion dev: fix the above and start it again", sys.stderr)
        return EXIT_USAGE
    except StackError as err:
        _say(f"aion dev: {err}", sys.stderr)
        return EXIT_STACK_FAILED


if __name__ == "__main__":
    sys.exit(main())
