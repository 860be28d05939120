"""``bench.kafka_txn``'s ``--shapes``: the names it takes and the ratio lines it prints."""

from __future__ import annotations

import argparse
import json

import pytest
from bench import kafka_txn


def test_shapes_are_read_from_a_comma_separated_list() -> None:
    assert kafka_txn._shape_list("group, in-log,alongside") == ["group", "in-log", "alongside"]


@pytest.mark.parametrize("text", ["", " , ", "group,offsets-later"])
def test_an_unknown_or_empty_shape_is_refused_naming_the_choices(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="choose from group, alongside, in-log"):
        kafka_txn._shape_list(text)


def test_one_shape_prints_the_engines_metric_names_and_no_ratio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    timings = {phase: [1.0, 2.0, 3.0] for phase in kafka_txn._PHASES}
    kafka_txn._report({"group": timings})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["metric"] for line in lines} == {
        f"{phase}_{q}_ms" for phase in kafka_txn._PHASES for q in ("p50", "p99")
    }
    assert all("shape" not in line for line in lines)


def test_several_shapes_print_each_ones_total_against_the_engines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = {phase: [4.0] * 10 for phase in kafka_txn._PHASES}
    in_log = {phase: [2.0] * 10 for phase in kafka_txn._PHASES}
    kafka_txn._report({"group": group, "in-log": in_log})
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    ratios = {
        (line["shape"], line["metric"]): line["value"]
        for line in lines
        if line["metric"].endswith("_ratio_to_group")
    }
    assert ratios == {
        ("in-log", "total_p50_ratio_to_group"): 0.5,
        ("in-log", "total_p99_ratio_to_group"): 0.5,
    }
    assert "total p50: in-log 2.00 ms, group 4.00 ms, ratio 0.5" in out.err
