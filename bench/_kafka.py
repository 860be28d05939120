"""The broker a benchmark runs against: ``AION_BENCH_KAFKA`` when it names one (``make bench``
starts one for all of them and passes its pid in ``AION_BENCH_BROKER_PID``), else one of its
own for the block."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchKafka", "bench_kafka"]


@dataclass(frozen=True, slots=True)
class BenchKafka:
    """Where the broker is, and its pid when known (for its CPU share)."""

    bootstrap: str
    pid: int | None


@contextlib.contextmanager
def bench_kafka(*, scratch: Path | None = None) -> Iterator[BenchKafka]:
    """The named broker, or a broker started for the block (its data under ``scratch``, else a
    temporary directory) and stopped after it."""
    external = os.environ.get("AION_BENCH_KAFKA")
    if external:
        pid = os.environ.get("AION_BENCH_BROKER_PID")
        yield BenchKafka(external, int(pid) if pid else None)
        return
    from aion_common.testing.broker import KafkaBroker  # noqa: PLC0415 - only when needed

    with contextlib.ExitStack() as stack:
        if scratch is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aion-bench-")))
        broker = KafkaBroker(scratch / "kafka", die_with_parent=True)
        broker.start()
        stack.callback(broker.stop)
        yield BenchKafka(broker.bootstrap_servers, broker.pid)
