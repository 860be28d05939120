"""Unit-test settings shared by every module here.

Hypothesis's per-example deadline (200 ms) is a timed assertion: on a shared two-core machine a
busy neighbour makes a correct example slow and the test fail. Speed is measured in ``bench/``,
never here, so property tests run without a deadline.
"""

from hypothesis import settings

settings.register_profile("aion", deadline=None)
settings.load_profile("aion")
