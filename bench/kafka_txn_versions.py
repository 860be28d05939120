"""What Kafka's transactions v2 (KIP-890) would save each engine step: ``python -m
bench.kafka_txn_versions``.

aiokafka 0.14 speaks transactions v1 only: an AddPartitionsToTxn round trip before the first
record of each partition, and a next transaction refused (CONCURRENT_TRANSACTIONS) until the
coordinator has written the last one's markers. v2 adds partitions with the produce itself and
bumps the producer's epoch at each commit. Whether a client speaking v2 would pay enough to be
worth building is measured here, on this machine's broker, before anyone builds one:

- ``java`` v1 and v2: Kafka's own Java client (``bench/java/TxnVersions.java``, compiled with
  ``javac`` against the broker's jars) runs ``bench.kafka_txn``'s ``in-log`` shape — the
  engine's: three records on three partitions, commit, wait until a read_committed consumer
  sees them — with the cluster's ``transaction.version`` feature set to 1, then to 2;
- ``aiokafka``: ``bench.kafka_txn``'s own ``in-log`` cycles, as the engine runs them.

The three alternate in ``--rounds`` turns. Each figure is printed (p50/p99 of the time from
``begin`` to ``committed`` and to ``visible``), then the ratios: Java v2 to Java v1 (what v2
saves), aiokafka to Java v1 (whether Java's v1 is a fair stand-in for aiokafka's). Starts its own
broker unless ``AION_BENCH_KAFKA=host:port`` names one; either way it leaves the cluster at
``transaction.version`` 2, Kafka 4's default.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiokafka.producer.sender as _aiokafka_sender

from aion_common.testing import percentile
from aion_common.testing.broker import ensure_jars
from bench._kafka import bench_kafka
from bench.kafka_txn import _cycles

_ROOT = Path(__file__).resolve().parents[1]
_SOURCE = _ROOT / "bench/java/TxnVersions.java"
_SIDES = ("java_v1", "aiokafka", "java_v2")
_PHASES = ("committed", "visible")


def _compiled(libs: Path) -> Path:
    """The probe's class directory, compiled once per source (cached under ``.aion/cache``)."""
    javac = shutil.which("javac")
    if javac is None:
        raise SystemExit(
            "bench.kafka_txn_versions: javac not found: install a JDK "
            "(apt-get install openjdk-17-jdk-headless)"
        )
    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:16]
    target = _ROOT / ".aion/cache/bench-java" / digest
    if not (target / "TxnVersions.class").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
        subprocess.run(
            [javac, "-d", str(building), "-cp", _classpath(libs), str(_SOURCE)], check=True
        )
        try:
            building.rename(target)
        except OSError:  # another run compiled it first
            shutil.rmtree(building, ignore_errors=True)
    return target


def _classpath(libs: Path, *extra: Path) -> str:
    return os.pathsep.join([*(str(p) for p in extra), *sorted(str(j) for j in libs.glob("*.jar"))])


class _JavaProbe:
    """One JVM running the Java turns asked of it, so its JIT warms once for all of them."""

    def __init__(self, bootstrap: str, classes: Path, libs: Path) -> None:
        argv = ["java", "-cp", _classpath(libs, classes), "TxnVersions", bootstrap]
        self._process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def turn(self, version: int, cycles: int, warm_up: int) -> dict[str, list[float]]:
        process = self._process
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(f"{version} {cycles} {warm_up}\n")
        process.stdin.flush()
        for line in process.stdout:
            if line.startswith("{"):
                found = json.loads(line)
                return {phase: [float(v) for v in found[phase]] for phase in _PHASES}
        raise SystemExit(f"the Java probe ended (exit {process.wait()}); see its output above")

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=30)


async def _aiokafka(bootstrap: str, cycles: int, warm_up: int) -> dict[str, list[float]]:
    timings = await _cycles(bootstrap, cycles, warm_up, "in-log")
    acked, committed = timings["records_acked"], timings["committed"]
    offsets = timings["offsets_added"]  # zero in this shape; kept so the spans add up
    return {
        "committed": [a + o + c for a, o, c in zip(acked, offsets, committed, strict=True)],
        "visible": timings["total"],
    }


def _line(metric: str, value: float, unit: str, samples: int) -> None:
    line = {"bench": "kafka_txn_versions", "metric": metric, "value": value, "unit": unit}
    sys.stdout.write(json.dumps(line | {"samples": samples}) + "\n")


def _report(by_side: dict[str, dict[str, list[float]]]) -> None:
    for side, timings in by_side.items():
        for phase, values in timings.items():
            for label, q in (("p50", 0.5), ("p99", 0.99)):
                value = round(percentile(values, q), 2)
                _line(f"{side}_{phase}_{label}_ms", value, "ms", len(values))
    for top, bottom in (("java_v2", "java_v1"), ("aiokafka", "java_v1")):
        for phase in _PHASES:
            for label, q in (("p50", 0.5), ("p99", 0.99)):
                theirs = percentile(by_side[top][phase], q)
                ours = percentile(by_side[bottom][phase], q)
                ratio = round(theirs / ours, 3) if ours else float("nan")
                sys.stderr.write(
                    f"{phase} {label}: {top} {theirs:.2f} ms, {bottom} {ours:.2f} ms, "
                    f"ratio {ratio}\n"
                )
                _line(f"ratio_{top}_to_{bottom}_{phase}_{label}", ratio, "ratio", 0)


def _measure(bootstrap: str, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    libs, _ = ensure_jars(_ROOT)
    java = _JavaProbe(bootstrap, _compiled(libs), libs)
    by_side: dict[str, dict[str, list[float]]] = {
        side: {phase: [] for phase in _PHASES} for side in _SIDES
    }
    try:
        for turn in range(args.rounds):
            # every other round in the other order: neither side always runs on a warmer broker
            for side in _SIDES if turn % 2 == 0 else reversed(_SIDES):
                if side == "aiokafka":
                    timings = asyncio.run(_aiokafka(bootstrap, args.cycles, args.warm_up))
                else:
                    timings = java.turn(int(side[-1]), args.cycles, args.warm_up)
                for phase in _PHASES:
                    by_side[side][phase].extend(timings[phase])
                p50 = percentile(timings["visible"], 0.5)
                sys.stderr.write(f"round {turn + 1}: {side} visible p50 {p50:.2f} ms\n")
        java.turn(2, 0, 0)  # the cluster left at Kafka 4's default
    finally:
        java.close()
    return by_side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_txn_versions", description=__doc__)
    parser.add_argument("--cycles", type=int, default=400, help="measured, per side and round")
    parser.add_argument("--warm-up", type=int, default=100, help="unmeasured, before each turn")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    _aiokafka_sender.BACKOFF_OVERRIDE = 0.002  # as the engine (decision 17)
    with bench_kafka() as kafka:
        _report(_measure(kafka.bootstrap, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
