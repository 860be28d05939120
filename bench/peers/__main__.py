"""``python -m bench.peers`` (``make bench-peers``): aion, DBOS and Restate on the same
workloads, interleaved, and the table of aion's ratio to the best peer on each figure.

Installs the peers under ``--scratch`` (``.aion/peers``, outside git) — see
:mod:`bench.peers.setup` — starts one Apache Kafka broker (warmed by short aion passes until its
JIT compiler has settled: a deployed broker is warm) and the peers' PostgreSQL cluster, then
runs ``--cycles`` cycles. In each, every system runs every phase once, in one process (the
peers' scripts ``dbos/bench_dbos.py`` and ``restate/run.sh`` beside this file;
:mod:`bench.peers.aion_side` for aion), and the order of the systems turns by one each cycle so
none always runs first. DBOS gets a fresh database and Restate a fresh server and data directory
every cycle, aion a fresh stack on fresh topics. The phases: warm-up, ``--latency-n``
single-child parents one after another, ``--steps-n`` workflows of ``--steps-k`` steps one after
another, ``--steps-tp`` workflows x steps at once, and the ``--tp`` fan-outs. Each run's JSON
lines, logs and table are kept under ``<scratch>/runs/<time>/``; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from aion_common.testing import KafkaBroker, free_port
from aion_common.testing.postgres import create_database, drop_database
from bench.peers import table
from bench.peers.setup import Peers, say

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SETTLED = 0.05
"""A warm-up pass whose broker JIT used less than this share of one core ends the warm-up."""


def _common(args: argparse.Namespace) -> list[str]:
    return [
        "--latency-n", str(args.latency_n), "--steps-n", str(args.steps_n),
        "--steps-k", str(args.steps_k), "--steps-tp", args.steps_tp, "--tp", args.tp,
    ]  # fmt: skip


@contextlib.contextmanager
def _broker(scratch: Path, args: argparse.Namespace) -> Iterator[dict[str, str]]:
    if args.kafka:
        yield {"AION_BENCH_KAFKA": args.kafka}
        return
    with tempfile.TemporaryDirectory(prefix="kafka-", dir=scratch) as data:
        broker = KafkaBroker(Path(data), die_with_parent=True)
        broker.start()
        say(f"broker at {broker.bootstrap_servers} (pid {broker.pid})")
        try:
            yield {"AION_BENCH_KAFKA": broker.bootstrap_servers,
                   "AION_BENCH_BROKER_PID": str(broker.pid)}  # fmt: skip
        finally:
            broker.stop()


class Runner:
    """Runs one system's cycle, each writing ``<results>/<system>-c<N>.jsonl``."""

    def __init__(self, peers: Peers, run: Path, args: argparse.Namespace, env: dict[str, str]):
        self.peers = peers
        self.run = run
        self.results = run / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.env = env
        self.postgres_url = ""

    def _call(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        began = time.monotonic()
        with (self.run / f"{name}.log").open("ab") as log:
            status = subprocess.run(
                argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=False
            ).returncode
        say(f"  {name}: {time.monotonic() - began:.0f} s" + (f", FAILED ({status})" * bool(status)))

    def aion(self, cycle: int) -> None:
        out = self.results / f"aion-c{cycle}.jsonl"
        argv = [sys.executable, "-m", "bench.peers.aion_side", *_common(self.args),
                "--engines-beside", str(self.args.engines_beside),
                "--label", f"c{cycle}", "--out", str(out)]  # fmt: skip
        mark = _JitMark(self.env)
        self._call("aion", argv, {**os.environ, **self.env}, _ROOT)
        if mark.pid:
            say(f"  the broker's JIT compiler threads used {mark.share():.0%} of a core meanwhile")

    def dbos(self, cycle: int) -> None:
        drop_database(self.postgres_url, "dbos_bench")
        url = create_database(self.postgres_url, "dbos_bench").replace("+asyncpg", "", 1)
        pid = (self.peers.postgres.data_dir / "postmaster.pid").read_text().split()[0]
        env = {**os.environ, "DBOS_SYSTEM_DATABASE_URL": url, "DB_SERVER_PID": pid}
        argv = [str(self.peers.dbos_python), str(_HERE / "dbos/bench_dbos.py"), *_common(self.args),
                "--can-n", "0", "--tp-timeout", "300", "--label", f"c{cycle}",
                "--out", str(self.results / f"dbos-c{cycle}.jsonl")]  # fmt: skip
        self._call("dbos", argv, env, self.run)

    def restate(self, cycle: int) -> None:
        env = {
            **os.environ,
            "PEERS_DIR": str(self.run), "RESTATE_BIN": str(self.peers.restate_server),
            "PYTHON": str(self.peers.restate_python), "REPS": "1", "TAG": f"c{cycle}",
            "INGRESS_PORT": str(free_port()), "ADMIN_PORT": str(free_port()),
            "NODE_PORT": str(free_port()), "SVC_PORT": str(free_port()),
        }  # fmt: skip
        argv = ["bash", str(_HERE / "restate/run.sh"), *_common(self.args), "--can-n", "0",
                "--tp-timeout", "300"]  # fmt: skip
        self._call("restate", argv, env, _HERE)


def _compiler_cpu(pid: int) -> float:
    """CPU seconds so far of a JVM's JIT compiler threads (``C1``/``C2 CompilerThread``), from
    ``/proc/<pid>/task``; 0.0 where that cannot be read."""
    total = 0.0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (task / "stat").read_text()
                name, rest = stat[stat.index("(") + 1 :].rsplit(")", 1)
                if "CompilerThre" in name:
                    fields = rest.split()
                    total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def _broker_pid(env: dict[str, str]) -> int:
    """The broker's pid when this run started it (0: not ours to watch)."""
    return int(env.get("AION_BENCH_BROKER_PID") or 0)


class _JitMark:
    """The broker's JIT compiler CPU from now on, as a share of one core (when we started the
    broker and know its pid)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.pid = _broker_pid(env)
        self._cpu = _compiler_cpu(self.pid) if self.pid else 0.0
        self._began = time.monotonic()

    def share(self) -> float:
        elapsed = max(time.monotonic() - self._began, 1e-3)
        return (_compiler_cpu(self.pid) - self._cpu) / elapsed


def _warm_up(runner: Runner, passes: int) -> None:
    """Short aion passes, discarded, until the broker's JIT has settled: a JVM broker started
    seconds ago runs interpreted and compiles its hot paths for a minute or more, its compiler
    threads taking up to half a core of the two (the peers are native, or warm after their own
    warm-up phase; a deployed broker is warm). A pass ends the warm-up once the compiler threads
    used under ``_SETTLED`` of one core during it; at most ``passes`` passes (one when the
    broker is not ours to watch)."""
    argv = [sys.executable, "-m", "bench.peers.aion_side", "--latency-n", "30", "--steps-n", "10",
            "--steps-tp", "20x10", "--tp", "50x10", "--engines-beside", "1"]  # fmt: skip
    watched = bool(_broker_pid(runner.env))
    for n in range(1, (passes if watched else 1) + 1):
        say(f"warm-up pass {n}: a short aion pass (discarded)")
        mark = _JitMark(runner.env)
        runner._call("aion-warm-up", argv, {**os.environ, **runner.env}, _ROOT)
        if not watched:
            return
        share = mark.share()
        say(f"  the broker's JIT compiler threads used {share:.0%} of a core in pass {n}")
        if share < _SETTLED:
            return


def _cycles(runner: Runner, cycles: int, systems: list[str]) -> None:
    for cycle in range(1, cycles + 1):
        turn = (cycle - 1) % len(systems)
        order = systems[turn:] + systems[:turn]
        say(f"cycle {cycle}/{cycles} ({datetime.now(UTC):%H:%M:%S} UTC): {', '.join(order)}")
        for system in order:
            getattr(runner, system)(cycle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--scratch", type=Path, default=_ROOT / ".aion/peers")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--systems", default="aion,dbos,restate")
    parser.add_argument("--kafka", default=os.environ.get("AION_BENCH_KAFKA") or None)
    parser.add_argument("--latency-n", type=int, default=100)
    parser.add_argument("--steps-n", type=int, default=100)
    parser.add_argument("--steps-k", type=int, default=10)
    parser.add_argument("--steps-tp", default="100x10")
    parser.add_argument("--tp", default="100x10,500x10")
    parser.add_argument("--engines-beside", type=int, default=3)
    parser.add_argument(
        "--warm-up-passes", type=int, default=6,
        help="at most this many discarded aion passes before the cycles, until the broker's JIT "
        "has settled (default 6)",
    )  # fmt: skip
    parser.add_argument("--setup-only", action="store_true")
    args = parser.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    if unknown := set(systems) - set(table.SYSTEMS):
        parser.error(f"unknown systems {sorted(unknown)}; choose from {table.SYSTEMS}")
    peers = Peers(args.scratch)
    peers.install()
    if args.setup_only:
        return 0
    run = peers.root / "runs" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    began = time.monotonic()
    with _broker(peers.root, args) as env:
        runner = Runner(peers, run, args, env)
        if "aion" in systems:
            _warm_up(runner, args.warm_up_passes)
        try:
            if "dbos" in systems:
                runner.postgres_url = peers.postgres.provision()
            _cycles(runner, args.cycles, systems)
        finally:
            peers.postgres.stop()
    data = table.load(run / "results")
    text = table.markdown(table.rows(data)) + "\n\n" + table.aion_detail(data) + "\n"
    (run / "table.md").write_text(text)
    print(f"bench-peers {datetime.now(UTC):%Y-%m-%d}, {args.cycles} cycles "
          f"({time.monotonic() - began:.0f} s), results in {run}\n")  # fmt: skip
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
