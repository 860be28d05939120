"""``python -m bench`` (``make bench``): run every benchmark of the project in turn.

Each benchmark runs as a subprocess and prints one JSON object per line,
``{"bench": …, "metric": …, "value": …, "unit": …}``; their lines are passed through to
stdout unchanged so runs can be compared. Exits non-zero if any benchmark failed.

All of them share one Apache Kafka broker (``AION_BENCH_KAFKA`` if set, else one started here),
warmed up first by a short pass of each benchmark: a JVM broker started seconds ago runs its
first minute or so interpreted, and measured here that doubles-to-tenfolds latencies (watcher
terminal→recorded p50 103 ms on a fresh broker, 8 ms on a warm one; engine p99 at 2,500
commands/s 240 ms vs 95 ms). A deployed broker is warm; so is the one these figures come from.
``--cold`` skips the warm-up passes to see the cold figures.
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
from pathlib import Path

from bench._kafka import bench_kafka

# One short pass of every broker-bound benchmark, output discarded: the JIT compiles the code
# paths each of them drives (a heavy engine pass alone left the first fan-out or watcher run
# after it with p99s 1.5-2.5x those of a second run).
WARM_UP = [
    [sys.executable, "-m", "bench.engine", "--parents", "5000", "--rebuild-events", "10000"],
    [sys.executable, "-m", "bench.fanout", "--parents", "50", "--singles", "50"],
    [sys.executable, "-m", "bench.activities", "--workflows", "50", "--singles", "30"],
    [
        sys.executable,
        "-m",
        "bench.ingress",
        "--records",
        "500",
        "--paced",
        "50",
        "--publishers",
        "50",
    ],
    [sys.executable, "-m", "aion_watcher.bench", "--seconds", "5", "--terminals", "5000"],
]


def _benchmarks(scratch: Path) -> list[tuple[str, list[str]]]:
    return [
        ("kafka-txn", [sys.executable, "-m", "bench.kafka_txn"]),
        # Kafka's Java client under transaction.version 1 and 2 beside aiokafka (decision 71)
        ("kafka-txn-versions", [sys.executable, "-m", "bench.kafka_txn_versions"]),
        ("engine", [sys.executable, "-m", "bench.engine"]),
        ("fanout", [sys.executable, "-m", "bench.fanout"]),
        ("activities", [sys.executable, "-m", "bench.activities"]),
        ("versions", [sys.executable, "-m", "bench.versions"]),
        ("queries", [sys.executable, "-m", "bench.queries"]),
        ("results", [sys.executable, "-m", "bench.results"]),
        ("ingress", [sys.executable, "-m", "bench.ingress"]),
        ("watcher", [sys.executable, "-m", "aion_watcher.bench"]),
        ("recovery", [sys.executable, "-m", "bench.recovery"]),
        # On an embedded broker of its own: it stops and kills it.
        ("outage", [sys.executable, "-m", "bench.outage"]),
        # A fresh single node and a fresh three-node cluster of its own, side by side.
        ("replication", [sys.executable, "-m", "bench.replication"]),
        *(
            (
                f"projection-{backend}",
                [
                    sys.executable,
                    "-m",
                    "aion_projector.bench",
                    "--database",
                    database,  # "postgresql": a scratch database, dropped after
                    "--events",
                    "20000",
                    "--lag-seconds",
                    "20",
                    "--lag-rate",
                    "2000",
                    "--catch-up-events",
                    "20000",
                ],
            )
            for backend, database in (
                ("sqlite", f"sqlite+aiosqlite:///{scratch / 'projector-bench.db'}"),
                ("postgresql", "postgresql"),
            )
        ),
        # the web UI's list page at 1,000 and 100,000 workflows (issue 16)
        *(
            (f"ui-list-{backend}", [sys.executable, "-m", "bench.ui_list", "--database", backend])
            for backend in ("sqlite", "postgresql")
        ),
    ]


@contextlib.contextmanager
def _broker(scratch: Path) -> Iterator[dict[str, str]]:
    """The environment that points every benchmark at the broker (and its pid, for CPU shares)."""
    started = time.monotonic()
    with bench_kafka(scratch=scratch) as kafka:
        if not os.environ.get("AION_BENCH_KAFKA"):
            _say(f"bench: broker at {kafka.bootstrap} in {time.monotonic() - started:.1f} s")
        env = {"AION_BENCH_KAFKA": kafka.bootstrap}
        if kafka.pid is not None:
            env["AION_BENCH_BROKER_PID"] = str(kafka.pid)
        yield env


def _say(text: str) -> None:
    sys.stderr.write(f"{text}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark against one warm broker; non-zero if any failed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--cold", action="store_true", help="no warm-up pass")
    args = parser.parse_args(argv)
    failed = []
    with (
        tempfile.TemporaryDirectory(prefix="aion-bench-") as scratch,
        _broker(Path(scratch)) as broker_env,
    ):
        env = {**os.environ, **broker_env}
        for argv_ in [] if args.cold else WARM_UP:
            _say(f"bench: warm-up (output discarded): {' '.join(argv_[1:])}")
            subprocess.run(argv_, check=False, env=env, stdout=subprocess.DEVNULL)
        for name, command in _benchmarks(Path(scratch)):
            _say(f"bench: running {name}: {' '.join(command[1:])}")
            status = subprocess.run(command, check=False, env=env).returncode
            if status != 0:
                failed.append(name)
                _say(f"bench: {name} failed with status {status}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
