"""aion_common.domain.parse_duration_ms (schedule intervals and timeouts in API bodies, the
ingress config): what no int can hold, or longer than 100 years, is InvalidInput naming the
field; float() reads ``1e400`` and a 309-digit number as inf, and round(inf) raised
OverflowError (an API body: a 500 instead of a 422)."""

from __future__ import annotations

import pytest

from aion_common.domain import InvalidInput, parse_duration_ms

HUGE = "1" + "0" * 400


@pytest.mark.parametrize(
    "value",
    [
        *("1e400", "inf", "Infinity", HUGE, HUGE + "d", HUGE + "ms", "36501d", "1d36500d"),
        *(float("inf"), 1e300, 10**400),
    ],
    ids=lambda v: repr(v)[:12],
)
def test_a_duration_no_int_holds_or_past_a_hundred_years_is_invalid_input(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"every: .* is longer than 36500d \(100 years\)"):
        parse_duration_ms(value, what="every")


def test_the_longest_duration_and_the_usual_ones_still_read() -> None:
    assert parse_duration_ms("36500d") == 36_500 * 86_400_000
    assert parse_duration_ms(36_500 * 86_400) == 36_500 * 86_400_000
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms(2.5) == 2500
