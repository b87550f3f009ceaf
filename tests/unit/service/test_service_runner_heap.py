"""hulk.service.runner.settle_heap: the start-up heap is frozen and young collections spaced out."""

from __future__ import annotations

import gc

from hulk.service.runner import GC_YOUNG_THRESHOLD, settle_heap


def test_settle_heap_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
