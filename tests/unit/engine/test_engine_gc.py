"""The engine's collector tuning: survivors of a full collection are frozen at a safe point."""

from __future__ import annotations

import gc

from aion_engine.service import _FreezeAfterFullCollection


def test_survivors_of_a_full_collection_are_frozen_when_asked() -> None:
    freezer = _FreezeAfterFullCollection()
    gc.callbacks.append(freezer)
    try:
        gc.collect(1)
        assert not freezer.due  # a young collection asks for nothing
        gc.collect()
        assert freezer.due
        state = [{"workflow": i} for i in range(1000)]  # long-lived state
        freezer.freeze_if_due()
        assert not freezer.due
        assert gc.get_freeze_count() >= len(state)
        freezer.freeze_if_due()  # not due: nothing happens
    finally:
        gc.callbacks.remove(freezer)
        gc.unfreeze()
