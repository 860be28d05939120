"""The worker's commit watermark: never past a task that is not reported yet."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aion_worker.watermarks import Watermarks


def test_commits_up_to_the_oldest_unfinished_task() -> None:
    marks = Watermarks()
    for offset in (10, 11, 12, 13):
        marks.take(0, offset)
    assert marks.committable(0) == 10
    marks.done(0, 12)
    marks.done(0, 11)
    assert marks.committable(0) == 10, "10 still runs: nothing after it may be committed"
    marks.done(0, 10)
    assert marks.committable(0) == 13
    marks.done(0, 13)
    assert marks.committable(0) == 14
    assert marks.unfinished(0) == 0


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    marks = Watermarks()
    marks.take(0, 5)
    marks.take(1, 7)
    marks.done(1, 7)
    assert (marks.committable(0), marks.committable(1)) == (5, 8)
    assert marks.committable(2) is None
    marks.forget(0)
    assert marks.partitions() == (1,)
    marks.done(0, 5)  # a late report of a revoked partition changes nothing
    assert marks.committable(0) is None


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_the_watermark_never_passes_an_unfinished_offset(order: list[int], finished: int) -> None:
    marks = Watermarks()
    for offset in range(30):
        marks.take(3, offset)
    done = set(order[:finished])
    for offset in order[:finished]:
        marks.done(3, offset)
    committable = marks.committable(3)
    assert committable is not None
    assert set(range(committable)) <= done
    assert committable == 30 or committable not in done
