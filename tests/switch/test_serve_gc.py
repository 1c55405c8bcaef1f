"""`serve`'s collector settings once started (switch/commands.py, tune_gc)."""

from __future__ import annotations

import gc

from payswitch.switch.commands import GC_GEN0, tune_gc


def test_tune_gc_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    before = gc.get_threshold()
    kept = [[i] for i in range(10)]  # start-up state: lives as long as the process
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_GEN0, before[1], before[2])
        assert gc.get_freeze_count() > 0
        assert gc.is_tracked(kept[0]) and gc.get_count()[0] < GC_GEN0
        # cycles made after start-up are still collected
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
