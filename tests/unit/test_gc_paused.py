"""``gc_paused``: the collector is off inside, back on after, and a big window is promoted."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from datawave.datasource.connectors import gc_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_nested_windows_reenable_only_at_the_outermost() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_a_big_window_is_promoted_not_traversed_later() -> None:
    with gc_paused():
        kept = [[i] for i in range(50_000)]
        assert gc.get_count()[0] > 50_000
    # Spliced into the oldest generation on the way out. Re-enabled as they were, the next
    # allocation would have run a young collection over all of them instead, leaving the
    # survivors in the middle generation.
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(kept[0]) in oldest and id(kept[-1]) in oldest
    assert gc.get_freeze_count() == 0


def test_objects_frozen_by_someone_else_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            kept = [[i] for i in range(50_000)]
        # Still frozen (unfreezing would have emptied the permanent generation); a few frozen
        # objects may have been freed meanwhile, which lowers the count a little.
        assert gc.get_freeze_count() > frozen // 2
        assert kept
    finally:
        gc.unfreeze()
