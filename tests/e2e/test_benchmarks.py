"""Every benchmark `make bench` runs still runs: each at a tiny size on the session broker.

Figures are not checked (speed is measured by `make bench`, never asserted); what is checked is
that each script completes, exits 0, and prints the metrics its readers (README, issue notes)
quote, as JSON lines with numbers in them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.peers import table

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "kafka_txn": (
        ["-m", "bench.kafka_txn", "--cycles", "30", "--warm-up", "5"],
        {"records_acked_p50_ms", "visible_p99_ms", "total_p50_ms", "total_p99_ms"},
    ),
    "kafka_txn_versions": (  # Kafka's Java client under transaction.version 1 and 2
        ["-m", "bench.kafka_txn_versions", "--cycles", "20", "--warm-up", "5", "--rounds", "1"],
        {
            "java_v1_visible_p50_ms",
            "java_v2_visible_p50_ms",
            "aiokafka_visible_p50_ms",
            "ratio_java_v2_to_java_v1_visible_p50",
            "ratio_aiokafka_to_java_v1_visible_p50",
        },
    ),
    "engine": (
        [
            "-m", "bench.engine", "--partitions", "3", "--parents", "300",
            "--latency-seconds", "1", "--rebuild-events", "2000",
        ],
        {"commands_per_s", "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "rebuild_s"},
    ),
    "fanout": (
        ["-m", "bench.fanout", "--parents", "4", "--children", "3", "--singles", "5"],
        {
            "child_workflows_per_s",
            "fanout_parent_p99_ms",
            "single_parent_p50_ms",
            "single_parent_p99_ms",
            "single_parent_max_ms",
            "single_parent_appended_p99_ms",
            "cpu_s_per_1000_workflows",
        },
    ),
    "activities": (
        [
            "-m", "bench.activities", "--partitions", "3", "--workflows", "4",
            "--activities", "3", "--singles", "5",
        ],
        {
            "activities_per_s",
            "activity_round_trip_p50_ms",
            "single_activity_workflow_p50_ms",
            "ratio_activities_to_child_workflows_per_s",
            "ratio_activity_round_trip_to_single_child_parent_p50",
        },
    ),
    "versions": (
        [
            "-m", "bench.versions", "--partitions", "3", "--loads", "2", "--parents", "4",
            "--children", "3", "--rounds", "1", "--replays", "20",
        ],
        {
            "version_load_p50_ms",
            "ratio_new_version_first_run_to_loaded_version_run_p50",
            "ratio_two_versions_to_one_child_workflows_per_s",
            "replay_check_runs_per_s",
            "ratio_replay_check_to_engine_rebuild_s",
        },
    ),
    "queries": (
        [
            "-m", "bench.queries", "--partitions", "2", "--queries", "8", "--events", "10",
            "--runs", "2", "--concurrency", "4",
        ],
        {
            "query_open_p50_ms",
            "query_open_p99_ms",
            "waiting_p50_ms",
            "query_closed_p50_ms",
            "queries_per_s",
        },
    ),
    "ingress": (
        [
            "-m", "bench.ingress", "--partitions", "3", "--records", "50", "--paced", "10",
            "--rate", "50", "--publishers", "10", "--per-workflow", "3",
        ],
        {
            "published_records_per_s",
            "ratio_publishing_to_plain_workflows_per_s",
            "ingress_starts_per_s",
            "direct_starts_per_s",
            "ratio_ingress_to_direct",
            "record_to_started_p50_ms",
            "record_to_started_p99_ms",
        },
    ),
    "watcher": (
        [
            "-m", "aion_watcher.bench", "--partitions", "3", "--rate", "20", "--seconds", "2",
            "--terminals", "200",
        ],
        {
            "terminal_to_recorded_p50",
            "terminal_to_recorded_p99",
            "terminal_to_recorded_max",
            "terminals_per_second",
        },
    ),
    "projection": (
        [
            "-m", "aion_projector.bench", "--database", "sqlite+aiosqlite:///{tmp}/bench.db",
            "--events", "500", "--lag-seconds", "1", "--lag-rate", "200",
            "--catch-up-events", "500",
        ],
        {"events_per_s", "lag_seconds_p95", "kafka_to_sql_events_per_s"},
    ),
    "ui_list": (
        [
            "-m", "bench.ui_list", "--database", "sqlite", "--small", "20", "--large", "100",
            "--samples", "5",
        ],
        {
            "fill_s",
            "p95_ratio_unfiltered_first",
            "p95_ratio_unfiltered_deep",
            "p95_ratio_status_deep",
            "p95_ratio_id_prefix_deep",
            "p95_ratio_time_range_first",
        },
    ),
    "recovery": (
        [
            "-m", "bench.recovery", "--sizes", "600,1800", "--open", "50", "--parents", "60",
            "--rounds", "1", "--failover-closed", "600", "--failover-open", "30",
            "--failover-settle", "1",
        ],
        {
            "engine_acquire_s_cold",
            "engine_closed_complete_s_cold",
            "engine_acquire_s_warm",
            "engine_acquire_s_replay",
            "engine_acquire_ratio_warm",
            "engine_rss_ratio_warm",
            "watcher_acquire_s_warm",
            "watcher_acquire_ratio_warm",
            "changelog_bytes_per_event_byte",
            "commands_per_s_changelog_on_over_off",
            "engine_cpu_per_command_changelog_on_over_off",
            "engine_failover_s_standbys_on",
            "engine_failover_s_standbys_off",
        },
    ),
    "results": (
        ["-m", "bench.results", "--partitions", "3", "--n", "3", "--at-once", "5"],
        {"steps_result_over_log_p50", "single_result_over_log_p50", "at_once_wall_ms"},
    ),
    "replication": (  # a single node and a three-node cluster of its own
        [
            "-m", "bench.replication", "--parents", "3", "--children", "2", "--singles", "3",
            "--warm-up", "0", "--partitions", "3", "--kafka", "{kafka}", "--short-warm-up", "1",
        ],
        {"child_workflows_per_s_ratio", "single_parent_p99_ms_ratio"},
    ),
    "outage": (  # on a broker of its own (it stops it); the first figures may be -0.0x s
        ["-m", "bench.outage", "--partitions", "3", "--commands", "2", "--outage", "1"],
        {"broker_start_s", "return_to_views_caught_up_s"},
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_benchmark_runs_and_prints_its_metrics(
    name: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    argv, expected = CASES[name]
    argv = [arg.format(tmp=tmp_path, kafka=kafka_bootstrap) for arg in argv]
    env = {**os.environ, "AION_BENCH_KAFKA": kafka_bootstrap}
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    metrics = {line["metric"]: line["value"] for line in lines}
    assert expected <= metrics.keys(), (sorted(metrics), done.stderr[-2000:])
    for metric in expected:
        assert isinstance(metrics[metric], int | float), (metric, metrics[metric])
        assert metrics[metric] >= 0, (metric, metrics[metric])


@pytest.mark.slow
def test_peers_aion_side_writes_the_peers_phases(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``make bench-peers``'s aion side, tiny: every phase the table reads, in the peers' shape."""
    out = tmp_path / "aion-c1.jsonl"
    argv = [
        "-m", "bench.peers.aion_side", "--partitions", "3", "--latency-n", "3", "--steps-n", "2",
        "--steps-k", "3", "--steps-tp", "2x3", "--tp", "3x2", "--engines-beside", "2",
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "AION_BENCH_KAFKA": kafka_bootstrap}
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    phases = [json.loads(line)["phase"] for line in out.read_text().splitlines()]
    assert phases == [
        "latency", "latency:result", "steps", "steps:local", "steps:local:result",
        "steps_tp:2x3", "steps_tp:2x3:local", "tp:3x2", "latency:2 engines",
    ]  # fmt: skip
    (cycle,) = table.load(tmp_path)["aion"]
    assert cycle["latency"]["client_e2e"]["p99_ms"] > 0
    assert set(cycle["latency"]["hops"]) == {
        "request_to_parent_appended", "parent_to_child_appended", "child_to_parent_appended",
        "parent_appended_to_visible",
    }  # fmt: skip
    assert cycle["steps"]["per_step_ms"]["p50_ms"] > 0
    assert set(cycle["steps"]["step_legs"]) == {
        "scheduled_appended_to_reported", "reported_to_next_appended",
    }  # fmt: skip
    assert cycle["steps:local"]["workflow_e2e"]["p50_ms"] > 0
    assert cycle["latency:result"]["client_e2e"]["p50_ms"] > 0
    assert cycle["steps:local:result"]["workflow_e2e"]["p50_ms"] > 0
    assert cycle["steps_tp:2x3:local"]["steps_per_s"] > 0
    assert cycle["steps_tp:2x3"]["steps_per_s"] > 0
    assert cycle["tp:3x2"]["child_wf_per_s"] > 0
    assert {"engine-1", "engine-2"} <= cycle["latency:2 engines"]["resources"].keys()
