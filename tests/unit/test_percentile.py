"""The nearest-rank quantile every benchmark reports (``aion_common.testing.percentile``)."""

from __future__ import annotations

import random

import pytest

from aion_common.testing import percentile


def test_p99_of_a_hundred_samples_is_the_99th_not_the_largest() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(7).shuffle(values)
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 1.0) == 100.0


@pytest.mark.parametrize(
    ("count", "q", "rank"),
    [(1, 0.5, 1), (1, 0.99, 1), (2, 0.5, 1), (3, 0.5, 2), (1000, 0.99, 990), (1001, 0.99, 991)],
)
def test_the_value_at_rank_ceil_q_times_n(count: int, q: float, rank: int) -> None:
    assert percentile([float(v) for v in range(1, count + 1)], q) == float(rank)


@pytest.mark.parametrize("q", [0.0, -0.5, 1.01])
def test_a_quantile_outside_zero_to_one_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0], q)


def test_no_values_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
