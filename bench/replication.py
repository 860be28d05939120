"""The price of replication: ``python -m bench.replication`` (also run by ``python -m bench``).

Runs ``bench.fanout`` twice in one run, each on a fresh embedded Kafka of its own with the same
workload and the same warm-up: once on a single node (replication factor 1), once on a
three-node cluster (replication factor 3, ``min.insync.replicas`` 2, ``acks=all``: each write
waits for a second replica). Prints both sides' fan-out and single-child figures, tagged
``brokers``, then each three-node figure divided by the one-node one (``*_ratio``): throughput
below 1 and latency above 1 are what replication costs on this machine (three JVMs and the
services on the same two cores: an upper bound of what separate machines would pay).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

_COMPARED = (
    "child_workflows_per_s",
    "fanout_parent_p50_ms",
    "fanout_parent_p99_ms",
    "single_parent_p50_ms",
    "single_parent_p99_ms",
)


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "replication", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _run(brokers: int, args: argparse.Namespace) -> dict[str, float]:
    argv = [
        sys.executable, "-m", "bench.fanout", "--brokers", str(brokers),
        "--parents", str(args.parents), "--children", str(args.children),
        "--singles", str(args.singles), "--warm-up", str(args.warm_up),
        "--partitions", str(args.partitions), "--short-warm-up", str(args.short_warm_up),
    ]  # fmt: skip
    if brokers == 1 and args.kafka:
        argv += ["--kafka", args.kafka]
    env = {k: v for k, v in os.environ.items() if k not in ("AION_BENCH_KAFKA",)}
    env.pop("AION_BENCH_BROKER_PID", None)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"bench.fanout --brokers {brokers} failed ({done.returncode})")
    figures: dict[str, float] = {}
    for text in done.stdout.splitlines():
        if not text.startswith("{"):
            continue
        record = json.loads(text)
        if record["metric"] in _COMPARED:
            figures[record["metric"]] = record["value"]
            unit = record["unit"]
            _line(record["metric"], record["value"], unit, brokers=brokers)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__)
    parser.add_argument("--parents", type=int, default=200)
    parser.add_argument("--children", type=int, default=10)
    parser.add_argument("--singles", type=int, default=100)
    parser.add_argument("--warm-up", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--short-warm-up", type=int, default=10)
    parser.add_argument(
        "--kafka",
        default=None,
        help="run the single-node side on this broker, not a fresh one (a smoke run: the ratios "
        "then set a warm broker beside a fresh cluster)",
    )
    args = parser.parse_args(argv)
    single = _run(1, args)
    cluster = _run(3, args)
    for metric in _COMPARED:
        if single.get(metric) and metric in cluster:
            _line(
                f"{metric}_ratio",
                round(cluster[metric] / single[metric], 2),
                "x",
                note="three nodes (RF 3, min ISR 2) / one node (RF 1), same run",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
