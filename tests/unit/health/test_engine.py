"""HealthEngine against a real SQLite store: hysteresis, backoff, history, retention."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from datawave.datasource.config import HealthSettings
from datawave.datasource.engines.health import HealthEngine, source_policy
from datawave.datasource.models import Event, HealthReport, HealthState
from datawave.datasource.store import MetadataStore
from datawave.datasource.store.health import percentile


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path):
    s = MetadataStore.open(f"sqlite:///{tmp_path / 'dw.db'}")
    yield s
    s.close()


def _add(store: MetadataStore, name: str, **labels: str):
    return store.create_source(id=f"id-{name}", name=name, type="sqlite", config={"path": "/x"},
                               secrets={}, owner_shard=0, labels=labels)  # fmt: skip


def _engine(store, clock, events=None, **kw):
    settings = HealthSettings(jitter=0, rise=2, fall=3, bucket_s=60, **kw)
    return HealthEngine(store, settings, sink=(events.append if events is not None else None),
                        clock=clock, monotonic=clock, rng=random.Random(1))  # fmt: skip


def _rep(sid, state, ms=1.0, at=None):
    return HealthReport(source_id=sid, state=state, latency_ms=ms, checked_at=at)


def test_hysteresis_down_and_back(store):
    clock = Clock()
    events: list[Event] = []
    rec = _add(store, "a")
    eng = _engine(store, clock, events)
    eng.sync_sources([rec])
    assert [r.id for r, _ in eng.due()] == [rec.id]
    # first result of an unknown source is taken as is
    assert [t.after for t in eng.observe([_rep(rec.id, HealthState.HEALTHY)])] == ["healthy"]
    # fall=3: two downs change nothing, the third does
    assert eng.observe([_rep(rec.id, HealthState.DOWN)]) == []
    assert eng.observe([_rep(rec.id, HealthState.DOWN)]) == []
    change = eng.observe([_rep(rec.id, HealthState.DOWN)])
    assert [(t.before, t.after) for t in change] == [("healthy", "down")]
    # rise=2
    assert eng.observe([_rep(rec.id, HealthState.HEALTHY)]) == []
    assert [t.after for t in eng.observe([_rep(rec.id, HealthState.HEALTHY)])] == ["healthy"]
    assert [e.data["to"] for e in events if e.type == "health.changed"] == [
        "healthy",
        "down",
        "healthy",
    ]
    eng.flush()
    assert store.get_source(rec.id).health == "healthy"
    assert store.get_health(rec.id).state == "healthy"


def test_flapping_never_changes_state(store):
    clock = Clock()
    rec = _add(store, "flappy")
    eng = _engine(store, clock)
    eng.sync_sources([rec])
    eng.observe([_rep(rec.id, HealthState.HEALTHY)])
    changes = []
    for i in range(40):
        changes += eng.observe([_rep(rec.id, HealthState.DOWN if i % 2 else HealthState.HEALTHY)])
    assert changes == []
    assert eng.status(rec.id).state == "healthy"


def test_backoff_when_down_and_labels_override(store):
    clock = Clock()
    rec = _add(store, "b", **{"health.interval_s": "10", "health.timeout_s": "2"})
    eng = _engine(store, clock, backoff_max_s=100)
    assert source_policy(rec, eng.settings).timeout_s == 2
    eng.sync_sources([rec])
    intervals = []
    for _ in range(9):
        eng.observe([_rep(rec.id, HealthState.DOWN)])
        due_at = eng._tracked[rec.id].next_due
        intervals.append(round(due_at - clock.t))
    # down from the first result; backoff starts after `fall` failures, doubles, caps at 100
    assert intervals == [10, 10, 10, 20, 40, 80, 100, 100, 100]
    assert eng.due() == []
    clock.t += 100
    assert eng.due() == [(rec, 2.0)]


def test_history_buckets_min_avg_p95_uptime_and_retention(store):
    clock = Clock()
    rec = _add(store, "c")
    eng = _engine(store, clock, retention_s=3600)
    eng.sync_sources([rec])
    t0 = datetime.fromtimestamp(clock.t, UTC)
    lat = [float(x) for x in range(1, 101)]  # 1..100 ms
    for i, ms in enumerate(lat):
        at = t0 + timedelta(seconds=i)  # spans two 60 s buckets
        eng.observe([_rep(rec.id, HealthState.HEALTHY if i % 10 else HealthState.DOWN, ms, at)])
        if i == 50:
            eng.flush()  # a flush in the middle of a bucket must merge, not overwrite
    eng.flush()
    hist = store.health_history(rec.id)
    assert len(hist) == 2 and sum(h["checks"] for h in hist) == 100
    summary = store.latency_summary([rec.id])[rec.id]
    assert summary.checks == 100 and summary.down == 10
    assert summary.uptime == 0.9
    assert summary.min_ms == 1 and summary.max_ms == 100 and summary.avg_ms == 50.5
    assert 90 <= summary.p95_ms <= 100
    # retention: everything older than retention_s goes at the next prune
    clock.t += 2 * 3600
    eng._last_prune = 0
    eng.flush()
    assert store.health_history(rec.id) == []


def test_state_survives_restart(store):
    clock = Clock()
    rec = _add(store, "d")
    eng = _engine(store, clock)
    eng.sync_sources([rec])
    eng.observe([_rep(rec.id, HealthState.DOWN)])
    eng.flush()
    again = _engine(store, clock)
    again.sync_sources([rec])
    assert again.status(rec.id).state == "down"
    assert again.counts()["down"] == 1


def test_percentile_interpolates_within_bins():
    assert percentile([0] * 29, 0.95) is None
    hist = [0] * 29
    hist[6] = 100  # all in (7.5, 10]
    assert 7.5 <= percentile(hist, 0.95) <= 10
    assert percentile(hist, 0.95, lo=8, hi=8.2) <= 8.2


def test_degraded_by_latency_setting(store):
    clock = Clock()
    rec = _add(store, "e")
    eng = _engine(store, clock, degraded_latency_ms=50)
    eng.sync_sources([rec])
    assert [t.after for t in eng.observe([_rep(rec.id, HealthState.HEALTHY, 80)])] == ["degraded"]
