"""``python -m aion_common.testing.broker``: fetch the jars, run, start or stop a broker."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from aion_common.settings import MAX_PORT, seconds_option, whole_option
from aion_common.testing._support import ProvisionError, find_repo_root
from aion_common.testing.broker import KafkaBroker, ensure_jars, kafka_libs_dir

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run one subcommand; errors print one clear message and exit 1."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except ProvisionError as err:
        _say(f"error: {err}")
        return 1
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aion_common.testing.broker")
    parser.add_argument("--repo", type=Path, help="aion checkout (default: AION_HOME or found)")
    parser.add_argument("--libs-dir", type=Path, help="jar cache (default: .aion/cache/kafka-libs)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    fetch = commands.add_parser("fetch", help="fetch the Kafka jars from Maven Central if missing")
    fetch.set_defaults(handler=_fetch)
    for name, handler, text in (
        ("run", _run, "run a broker in the foreground until Ctrl-C or SIGTERM"),
        ("start", _start, "start a broker in the background and write a pid file"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--data-dir", type=Path, required=True, help="kept across restarts")
        sub.add_argument(
            "--port",
            type=whole_option(minimum=1, maximum=MAX_PORT, what="a port number"),
            help="client port (default: previous, else free)",
        )
        sub.set_defaults(handler=handler)
        if name == "start":
            sub.add_argument("--pid-file", type=Path, required=True)
    stop = commands.add_parser("stop", help="stop a broker started with `start`")
    stop.add_argument("--pid-file", type=Path, required=True)
    stop.add_argument(
        "--timeout",
        type=seconds_option(minimum=0, maximum=3600),
        default=30.0,
        help="seconds before SIGKILL",
    )
    stop.set_defaults(handler=_stop)
    return parser


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201 - this is a command-line tool


def _repo(args: argparse.Namespace) -> Path:
    return Path(args.repo).resolve() if args.repo else find_repo_root()


def _fetch(args: argparse.Namespace) -> int:
    repo = _repo(args)
    libs, seconds = ensure_jars(repo, args.libs_dir or kafka_libs_dir(repo))
    count = len(list(libs.glob("*.jar")))
    if seconds is None:
        _say(f"kafka jars: {count} already in {libs}")
    else:
        _say(f"kafka jars: fetched {count} into {libs} in {seconds:.1f} s")
    return 0


def _broker(args: argparse.Namespace, *, die_with_parent: bool) -> KafkaBroker:
    return KafkaBroker(
        args.data_dir,
        port=args.port,
        repo_root=_repo(args),
        libs_dir=args.libs_dir,
        die_with_parent=die_with_parent,
    )


def _announce(broker: KafkaBroker) -> None:
    fetch = broker.fetch_seconds
    fetched = "" if fetch is None else f" (jars fetched in {fetch:.1f} s)"
    _say(
        f"Apache Kafka {broker.kafka_version} ready at {broker.bootstrap_servers} in "
        f"{broker.start_seconds or 0:.1f} s{fetched}"
    )
    _say(f"  data: {broker.data_dir}\n  log:  {broker.log_path}\n  pid:  {broker.pid}")


def _run(args: argparse.Namespace) -> int:
    broker = _broker(args, die_with_parent=True)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        broker.start()
        _announce(broker)
        _say("Ctrl-C stops it.")
        status = broker.wait()
    except KeyboardInterrupt:
        _say("stopping the broker…")
        started = time.monotonic()
        broker.stop()
        _say(f"stopped in {time.monotonic() - started:.1f} s")
        return 0
    finally:
        broker.stop()
    _say(f"broker exited by itself with status {status}; see {broker.log_path}")
    return status or 1


def _start(args: argparse.Namespace) -> int:
    pid_file: Path = args.pid_file
    if pid_file.exists() and _is_broker(_read_pid(pid_file)):
        raise ProvisionError(f"a broker from {pid_file} is already running; stop it first")
    broker = _broker(args, die_with_parent=False)
    broker.start()
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{broker.pid}\n{broker.bootstrap_servers}\n{broker.log_path}\n")
    _announce(broker)
    return 0


def _stop(args: argparse.Namespace) -> int:
    pid_file: Path = args.pid_file
    if not pid_file.exists():
        _say(f"no pid file at {pid_file}: nothing to stop")
        return 0
    pid = _read_pid(pid_file)
    if not _is_broker(pid):
        _say(f"pid {pid} from {pid_file} is not a running Kafka broker; removing the pid file")
        pid_file.unlink()
        return 0
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while _is_broker(pid) and time.monotonic() - started < args.timeout:
        time.sleep(0.2)
    if _is_broker(pid):
        _say(f"broker pid {pid} ignored SIGTERM for {args.timeout:.0f} s; sending SIGKILL")
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink()
    _say(f"stopped broker pid {pid} in {time.monotonic() - started:.1f} s")
    return 0


def _read_pid(pid_file: Path) -> int:
    first = pid_file.read_text().split("\n", 1)[0].strip()
    if not first.isdigit():
        raise ProvisionError(f"{pid_file} does not start with a process id")
    return int(first)


def _is_broker(pid: int) -> bool:
    # Checked through /proc so a recycled pid never gets a signal meant for the broker.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return b"kafka.Kafka" in cmdline and state != "Z"


if __name__ == "__main__":
    sys.exit(main())
