"""The side-by-side table of ``make bench-peers`` (``bench.peers.table``): which peer is best,
and aion's ratio to it per cycle."""

from __future__ import annotations

import json
from pathlib import Path

from bench.peers import table


def _write(results: Path, system: str, cycle: int, **phases: dict[str, object]) -> None:
    lines = [json.dumps({"peer": system, "phase": p, **fields}) for p, fields in phases.items()]
    (results / f"{system}-c{cycle}.jsonl").write_text("\n".join(lines) + "\n")


def _latency(p50: float, p99: float) -> dict[str, object]:
    return {"client_e2e": {"p50_ms": p50, "p99_ms": p99}}


def test_best_peer_and_ratios_come_from_the_same_cycle(tmp_path: Path) -> None:
    for cycle, (ours, dbos, restate) in enumerate([(20, 11, 10), (30, 13, 15), (24, 14, 8)], 1):
        _write(tmp_path, "aion", cycle, latency=_latency(ours - 5, ours),
               **{"latency:result": _latency(ours, ours * 2),
                  "tp:100x10": {"child_wf_per_s": 2000.0 + cycle}})  # fmt: skip
        _write(tmp_path, "dbos", cycle, latency=_latency(dbos, dbos * 3),
               **{"tp:100x10": {"child_wf_per_s": 100.0}})  # fmt: skip
        _write(tmp_path, "restate", cycle, latency=_latency(restate, restate),
               **{"tp:100x10": {"child_wf_per_s": 1000.0}})  # fmt: skip
    rows = {row.figure.name: row for row in table.rows(table.load(tmp_path))}

    # the peers' scripts await each result: aion's figure with a target is the client's too
    assert rows["single-child parent p50 ms, aion done on the log"].figure.target is None
    p50 = rows["single-child parent p50 ms, aion via client.result"]
    assert p50.best == "restate"  # median 10 against DBOS's 13
    assert p50.ratios == [2.0, 2.0, 3.0]  # each cycle's aion over the same cycle's Restate
    assert p50.ratio == 2.0
    assert p50.figure.meets(p50.ratio) is False

    p99 = rows["single-child parent p99 ms, aion via client.result"]
    assert p99.best == "restate"  # 10 against DBOS's 39
    tp = rows["child workflows/s, 100x10"]
    assert tp.best == "restate"
    assert tp.figure.meets(tp.ratio or 0) is True  # 2.002 ≥ 2

    text = table.markdown(list(rows.values()))
    assert "| 24.0 [20.0-30.0] | 13.0 [11.0-14.0] | 10.0 [8.0-15.0] |" in text
    assert "| Restate | 2.00x (2.00-3.00) | ≤ 1x NOT met |" in text


def test_a_missing_or_timed_out_phase_is_a_dash(tmp_path: Path) -> None:
    _write(tmp_path, "aion", 1, **{"tp:500x10": {"child_wf_per_s": 1500.0}})
    _write(tmp_path, "dbos", 1, **{"tp:500x10": {"timed_out": True}})
    rows = {row.figure.name: row for row in table.rows(table.load(tmp_path))}
    row = rows["child workflows/s, 500x10"]
    assert row.best is None
    assert row.ratio is None
    assert "| child workflows/s, 500x10 | 1,500 [1,500-1,500] | — | — | — | — | — |" in (
        table.markdown([row])
    )
