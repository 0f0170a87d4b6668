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
    # Moved to the oldest generation on the way out: nothing young is left to traverse, and
    # nothing stays frozen.
    assert gc.get_count()[0] < 1_000
    assert gc.get_freeze_count() == 0
    assert gc.is_tracked(kept[0])


def test_a_small_window_is_left_to_the_collector() -> None:
    gc.collect()
    with gc_paused():
        small = [[i] for i in range(100)]
    assert 100 <= gc.get_count()[0] < 1_000
    assert small


def test_objects_frozen_by_someone_else_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            kept = [[i] for i in range(50_000)]
        assert gc.get_freeze_count() == frozen
        assert kept
    finally:
        gc.unfreeze()
