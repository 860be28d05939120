"""The side-by-side table of a ``python -m bench.peers`` run, from its JSON lines.

Each figure: every system's median [min-max] over the cycles, the best peer (by median), and
aion's ratio to it — per cycle, aion's value over that peer's value in the same cycle, so both
sides of a ratio come from the same minutes of the machine — as median (min-max). A ratio above
1 is faster for throughputs, slower for latencies; the target column says which way it must go.
``python -m bench.peers.table RESULTS_DIR`` prints it again from a run's ``results/``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEERS = ("dbos", "restate")
SYSTEMS = ("aion", *PEERS)
_NAMES = {"aion": "aion", "dbos": "DBOS (PostgreSQL)", "restate": "Restate"}


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One row: where each system's value is, and the target on aion's ratio to the best."""

    name: str
    phase: str
    key: tuple[str, ...]
    higher_is_better: bool
    aion_phase: str | None = None  # when aion's equivalent phase has another name
    target: float | None = None  # aion / best: at least (throughput) or at most (latency)

    def value(self, system: str, phases: dict[str, dict[str, Any]]) -> float | None:
        """This figure's value in one cycle's phases of ``system``."""
        record: Any = phases.get(self.aion_phase or self.phase if system == "aion" else self.phase)
        if record is None or record.get("timed_out"):
            return None
        for part in self.key:
            record = record.get(part) if isinstance(record, dict) else None
        return float(record) if isinstance(record, int | float) else None

    def meets(self, ratio: float) -> bool | None:
        """Whether a ratio meets the target (None without one)."""
        if self.target is None:
            return None
        return ratio >= self.target if self.higher_is_better else ratio <= self.target


_P50, _P99 = ("client_e2e", "p50_ms"), ("client_e2e", "p99_ms")
FIGURES = (
    Figure(name="child workflows/s, 100x10", phase="tp:100x10", key=("child_wf_per_s",),
           higher_is_better=True, target=2.0),
    Figure(name="child workflows/s, 500x10", phase="tp:500x10", key=("child_wf_per_s",),
           higher_is_better=True, target=2.0),
    Figure(name="single-child parent p50 ms, aion done on the log", phase="latency", key=_P50,
           higher_is_better=False),
    Figure(name="single-child parent p99 ms, aion done on the log", phase="latency", key=_P99,
           higher_is_better=False),
    Figure(name="single-child parent p50 ms, aion via client.result", phase="latency",
           key=_P50, higher_is_better=False, aion_phase="latency:result", target=1.0),
    Figure(name="single-child parent p99 ms, aion via client.result", phase="latency",
           key=_P99, higher_is_better=False, aion_phase="latency:result", target=1.5),
    Figure(name="single-child parent p50 ms, aion with 3 engines", phase="latency", key=_P50,
           higher_is_better=False, aion_phase="latency:3 engines"),
    Figure(name="single-child parent p99 ms, aion with 3 engines", phase="latency", key=_P99,
           higher_is_better=False, aion_phase="latency:3 engines"),
    Figure(name="10-step workflow p50 ms, aion's steps local (ctx.run)", phase="steps",
           key=("workflow_e2e", "p50_ms"), higher_is_better=False, aion_phase="steps:local"),
    Figure(name="10-step workflow p50 ms, local steps, aion via client.result", phase="steps",
           key=("workflow_e2e", "p50_ms"), higher_is_better=False,
           aion_phase="steps:local:result", target=1.0),
    Figure(name="10-step workflow p99 ms, local steps, aion via client.result", phase="steps",
           key=("workflow_e2e", "p99_ms"), higher_is_better=False,
           aion_phase="steps:local:result"),
    Figure(name="10-step workflow p99 ms, aion's steps local (ctx.run)", phase="steps",
           key=("workflow_e2e", "p99_ms"), higher_is_better=False, aion_phase="steps:local"),
    Figure(name="per step p50 ms, aion's steps local (ctx.run)", phase="steps",
           key=("per_step_ms", "p50_ms"), higher_is_better=False, aion_phase="steps:local"),
    Figure(name="steps/s, 100 workflows x 10 steps at once, aion's local steps",
           phase="steps_tp:100x10", key=("steps_per_s",), higher_is_better=True,
           aion_phase="steps_tp:100x10:local", target=2.0),
    Figure(name="10-step workflow p50 ms, aion's steps activities", phase="steps",
           key=("workflow_e2e", "p50_ms"), higher_is_better=False, target=2.0),
    Figure(name="10-step workflow p99 ms, aion's steps activities", phase="steps",
           key=("workflow_e2e", "p99_ms"), higher_is_better=False),
    Figure(name="per step p50 ms, aion's steps activities", phase="steps",
           key=("per_step_ms", "p50_ms"), higher_is_better=False),
    Figure(name="steps/s, 100 workflows x 10 steps at once, aion's activities",
           phase="steps_tp:100x10", key=("steps_per_s",), higher_is_better=True, target=1.0),
)  # fmt: skip


def load(results: Path) -> dict[str, list[dict[str, dict[str, Any]]]]:
    """Per system, per cycle (in cycle order), the phases by name: ``<system>-c<N>.jsonl``."""
    cycles: dict[str, list[tuple[int, dict[str, dict[str, Any]]]]] = {s: [] for s in SYSTEMS}
    for path in sorted(results.glob("*-c*.jsonl")):
        system, _, cycle = path.stem.rpartition("-c")
        if system not in cycles or not cycle.isdigit():
            continue
        phases = {}
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                phases[record["phase"]] = record
        cycles[system].append((int(cycle), phases))
    by_cycle = {system: dict(sorted(rows)) for system, rows in cycles.items()}
    numbers = sorted({n for rows in by_cycle.values() for n in rows})
    return {system: [rows.get(n, {}) for n in numbers] for system, rows in by_cycle.items()}


def _spread(values: Sequence[float], digits: int) -> str:
    if not values:
        return "—"
    middle, low, high = statistics.median(values), min(values), max(values)
    return f"{middle:,.{digits}f} [{low:,.{digits}f}-{high:,.{digits}f}]"


@dataclass(frozen=True)
class Row:
    """One figure's numbers: each system's per-cycle values, the best peer, aion's ratios."""

    figure: Figure
    values: dict[str, list[float | None]]
    best: str | None
    ratios: list[float]

    @property
    def ratio(self) -> float | None:
        """The median of aion's per-cycle ratios to the best peer."""
        return statistics.median(self.ratios) if self.ratios else None


def rows(data: dict[str, list[dict[str, dict[str, Any]]]]) -> list[Row]:
    """Every figure's row."""
    out = []
    for figure in FIGURES:
        values = {s: [figure.value(s, phases) for phases in data[s]] for s in SYSTEMS}
        medians = {
            peer: statistics.median(xs)
            for peer in PEERS
            if (xs := [x for x in values[peer] if x is not None])
        }
        best = None
        if medians:
            pick = max if figure.higher_is_better else min
            best = pick(medians, key=lambda peer: medians[peer])
        ratios = []
        if best is not None:
            for ours, theirs in zip(values["aion"], values[best], strict=False):
                if ours is not None and theirs:
                    ratios.append(ours / theirs)
        out.append(Row(figure, values, best, ratios))
    return out


def markdown(table: list[Row]) -> str:
    """The table as Markdown: one line per figure."""
    head = "| figure | " + " | ".join(_NAMES[s] for s in SYSTEMS) + " | best peer | aion ÷ best"
    lines = [head + " | target |", "|---" * (len(SYSTEMS) + 4) + "|"]
    for row in table:
        figure = row.figure
        digits = 0 if figure.higher_is_better else 1
        cells = [_spread([x for x in row.values[s] if x is not None], digits) for s in SYSTEMS]
        ratio = "—"
        if row.ratio is not None:
            ratio = f"{row.ratio:.2f}x ({min(row.ratios):.2f}-{max(row.ratios):.2f})"
        target = "—"
        if figure.target is not None and row.ratio is not None:
            sign = "≥" if figure.higher_is_better else "≤"
            target = f"{sign} {figure.target:g}x " + (
                "met" if figure.meets(row.ratio) else "NOT met"
            )
        best = _NAMES[row.best] if row.best else "—"
        lines.append(
            f"| {figure.name} | " + " | ".join(cells) + f" | {best} | {ratio} | {target} |"
        )
    return "\n".join(lines)


def aion_detail(data: dict[str, list[dict[str, dict[str, Any]]]]) -> str:
    """aion's CPU seconds per process in each phase, and the single-child parents' legs
    (medians over cycles): where its time goes."""
    phases: list[str] = []
    for cycle in data["aion"]:
        phases += [p for p in cycle if p not in phases]
    lines = []
    for phase in phases:
        records = [c[phase] for c in data["aion"] if phase in c]
        processes: list[str] = []
        for record in records:
            processes += [p for p in record.get("resources", {}) if p not in processes]
        cpu = []
        for process in processes:
            shares = [
                r["resources"][process]["cpu_s"] for r in records if process in r["resources"]
            ]
            cpu.append(f"{process} {statistics.median(shares):.2f}")
        lines.append(f"- `{phase}` CPU s per process (median): " + ", ".join(cpu))
        for key, what in (("hops", "a parent"), ("step_legs", "a step")):
            legs = [r[key] for r in records if r.get(key)]
            if legs:
                parts = [
                    f"{leg} {statistics.median(h[leg]['p50_ms'] for h in legs if leg in h):.1f}"
                    for leg in legs[0]
                ]
                lines.append(f"  - legs of {what}, p50 ms (median): " + ", ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table of a run's ``results/`` directory."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.peers.table RUN_DIR/results", file=sys.stderr)
        return 2
    data = load(Path(args[0]))
    print(markdown(rows(data)))
    print()
    print(aion_detail(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
