"""The engine's collector tuning: what survives a full collection is frozen."""

from __future__ import annotations

import gc

from aion_engine.service import _FreezeAfterFullCollection


def test_survivors_of_a_full_collection_are_frozen() -> None:
    freezer = _FreezeAfterFullCollection()
    gc.callbacks.append(freezer)
    try:
        gc.unfreeze()
        state = [{"workflow": i} for i in range(1000)]  # long-lived state
        gc.collect(1)
        assert gc.get_freeze_count() == 0  # a young collection freezes nothing
        gc.collect()
        assert gc.get_freeze_count() >= len(state)
        assert gc.collect() == 0  # and the next full collection has nothing to scan for
    finally:
        gc.callbacks.remove(freezer)
        gc.unfreeze()
