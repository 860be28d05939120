"""``python -m bench`` (``make bench``): run every benchmark of the project in turn.

Each benchmark runs as a subprocess and prints one JSON object per line,
``{"bench": …, "metric": …, "value": …, "unit": …}``; their lines are passed through to
stdout unchanged so runs can be compared. Exits non-zero if any benchmark failed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def _benchmarks(scratch: Path) -> list[tuple[str, list[str]]]:
    return [
        ("engine", [sys.executable, "-m", "bench.engine"]),
        ("fanout", [sys.executable, "-m", "bench.fanout"]),
        ("watcher", [sys.executable, "-m", "aion_watcher.bench"]),
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
                ],
            )
            for backend, database in (
                ("sqlite", f"sqlite+aiosqlite:///{scratch / 'projector-bench.db'}"),
                ("postgresql", "postgresql"),
            )
        ),
    ]


def main() -> int:
    failed = []
    with tempfile.TemporaryDirectory(prefix="aion-bench-") as scratch:
        for name, argv in _benchmarks(Path(scratch)):
            sys.stderr.write(f"bench: running {name}: {' '.join(argv[1:])}\n")
            sys.stderr.flush()
            status = subprocess.run(argv, check=False).returncode
            if status != 0:
                failed.append(name)
                sys.stderr.write(f"bench: {name} failed with status {status}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
