"""HealthEngine: schedules checks, turns raw results into states, keeps history.

Plain class, no Ray: the HealthScheduler actor hosts it and reaches owners through an injected
function; tests drive it with a real store and hand-made reports.

States follow the raw results with hysteresis: a source changes state only after ``fall``
(worse) or ``rise`` (better) consecutive results pointing at the new state, so a flapping source
keeps its state instead of spamming. The first result of an ``unknown`` source is taken as is.
A source that is down is re-checked with exponential backoff (up to ``backoff_max_s``); every
next check is spread by ``jitter`` so a fleet does not fire in lockstep.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from datawave.datasource.config import HealthSettings
from datawave.datasource.models import Event, EventSink, HealthReport, HealthState, SourceRecord
from datawave.datasource.store import BucketDelta, HealthStatus, UsageDelta
from datawave.datasource.store.health import LATENCY_BINS_MS

__all__ = [
    "LATENCY_BINS_MS",
    "HealthEngine",
    "HealthStore",
    "SourcePolicy",
    "Transition",
    "bucket_start",
    "source_policy",
]

log = logging.getLogger(__name__)

_RANK = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.DOWN: 2}


class HealthStore(Protocol):
    def load_health(self) -> dict[str, HealthStatus]: ...
    def save_health(self, statuses: Sequence[HealthStatus], buckets: Sequence[BucketDelta] = (),
                    usage: Sequence[UsageDelta] = ()) -> None: ...  # fmt: skip
    def prune_health(self, before: datetime) -> int: ...


@dataclass(frozen=True)
class SourcePolicy:
    enabled: bool
    interval_s: float
    timeout_s: float


def _label_float(labels: Mapping[str, str], key: str, default: float) -> float:
    raw = labels.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value > 0 else default


def source_policy(rec: SourceRecord, settings: HealthSettings) -> SourcePolicy:
    """Interval and timeout of one source: settings, overridden by ``health.*`` labels."""
    return SourcePolicy(
        enabled=rec.labels.get("health.enabled", "true").lower() not in ("false", "0", "no"),
        interval_s=_label_float(rec.labels, "health.interval_s", settings.interval_s),
        timeout_s=_label_float(rec.labels, "health.timeout_s", settings.timeout_s),
    )


def bucket_start(at: datetime, bucket_s: int) -> datetime:
    epoch = int(at.timestamp()) // bucket_s * bucket_s
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class Transition:
    source_id: str
    name: str
    before: str
    after: str
    at: datetime
    latency_ms: float | None
    error: str | None


@dataclass
class _Tracked:
    rec: SourceRecord
    policy: SourcePolicy
    status: HealthStatus
    next_due: float = 0.0
    dirty: bool = False
    buckets: dict[datetime, BucketDelta] = field(default_factory=dict)
    usage: dict[datetime, UsageDelta] = field(default_factory=dict)


class HealthEngine:
    """Args:
    store: where states and history persist (:class:`HealthStore`).
    settings: the ``health`` settings section.
    sink: receives ``health.changed`` events.
    clock: wall clock (seconds); monotonic scheduling uses ``monotonic``.
    """

    def __init__(
        self,
        store: HealthStore,
        settings: HealthSettings,
        *,
        sink: EventSink | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.sink = sink
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.Random()
        self._known = store.load_health()
        self._tracked: dict[str, _Tracked] = {}
        self._last_prune = 0.0

    # -- fleet -------------------------------------------------------------------------------
    def sync_sources(self, records: Iterable[SourceRecord]) -> None:
        """Track exactly ``records`` (live sources); new ones are due at once, spread a little."""
        now = self.monotonic()
        seen = set()
        for rec in records:
            seen.add(rec.id)
            policy = source_policy(rec, self.settings)
            t = self._tracked.get(rec.id)
            if t is None:
                status = self._known.pop(rec.id, None) or HealthStatus(
                    source_id=rec.id, state=HealthState.UNKNOWN.value, since=self._now()
                )
                spread = self.rng.uniform(0, min(policy.interval_s, 5.0) * self.settings.jitter)
                self._tracked[rec.id] = _Tracked(rec, policy, status, next_due=now + spread)
            else:
                t.rec, t.policy = rec, policy
        for gone in set(self._tracked) - seen:
            del self._tracked[gone]

    def records(self) -> list[SourceRecord]:
        return [t.rec for t in self._tracked.values()]

    def status(self, source_id: str) -> HealthStatus | None:
        t = self._tracked.get(source_id)
        return t.status if t is not None else None

    def statuses(self) -> dict[str, HealthStatus]:
        return {sid: t.status for sid, t in self._tracked.items()}

    def counts(self, *, edge: bool | None = None) -> dict[str, int]:
        out = {s.value: 0 for s in HealthState}
        for t in self._tracked.values():
            if edge is None or (t.rec.edge_site is not None) == edge:
                out[t.status.state] = out.get(t.status.state, 0) + 1
        return out

    def due(self, *, all_: bool = False) -> list[tuple[SourceRecord, float]]:
        """Core sources whose next check is due (or all), with their timeouts.

        Edge sources are checked by their edge node; their results arrive through
        :meth:`observe` like any other.
        """
        now = self.monotonic()
        return [
            (t.rec, t.policy.timeout_s)
            for t in self._tracked.values()
            if t.policy.enabled and t.rec.edge_site is None and (all_ or t.next_due <= now)
        ]

    def mark_scheduled(self, source_ids: Iterable[str], *, in_s: float | None = None) -> None:
        """Push the next check out while a check is in flight (so a tick does not repeat it)."""
        now = self.monotonic()
        for sid in source_ids:
            t = self._tracked.get(sid)
            if t is not None:
                t.next_due = now + (
                    in_s if in_s is not None else t.policy.timeout_s + t.policy.interval_s
                )

    # -- results -----------------------------------------------------------------------------
    def classify(self, rep: HealthReport) -> HealthState:
        state = rep.state
        slow = self.settings.degraded_latency_ms
        if state is HealthState.HEALTHY and slow and rep.latency_ms and rep.latency_ms > slow:
            return HealthState.DEGRADED
        return state

    def observe(self, reports: Iterable[HealthReport]) -> list[Transition]:
        """Apply check results; returns the state changes (and emits ``health.changed``)."""
        out: list[Transition] = []
        mono = self.monotonic()
        for rep in reports:
            t = self._tracked.get(rep.source_id or "")
            if t is None:
                continue
            raw = self.classify(rep)
            at = rep.checked_at or self._now()
            self._record(t, raw, rep, at)
            if raw is HealthState.UNKNOWN:
                t.next_due = mono + t.policy.interval_s
                continue
            change = self._step(t, raw, rep, at)
            if change is not None:
                out.append(change)
            t.next_due = mono + self._next_interval(t)
        for tr in out:
            if self.sink is not None:
                self.sink(Event(type="health.changed", source_id=tr.source_id, at=tr.at, data={
                    "name": tr.name, "from": tr.before, "to": tr.after,
                    "latency_ms": tr.latency_ms, "error": tr.error,
                }))  # fmt: skip
        return out

    def _step(
        self, t: _Tracked, raw: HealthState, rep: HealthReport, at: datetime
    ) -> Transition | None:
        s = t.status
        s.failures = s.failures + 1 if raw is HealthState.DOWN else 0
        current = HealthState(s.state)
        if raw is current:
            s.candidate, s.streak = None, 0
            return None
        if current is HealthState.UNKNOWN:
            need = 1
        else:
            worse = _RANK[raw] > _RANK[current]
            need = self.settings.fall if worse else self.settings.rise
        if s.candidate == raw.value:
            s.streak += 1
        else:
            s.candidate, s.streak = raw.value, 1
        if s.streak < need:
            return None
        before = s.state
        s.state, s.since, s.candidate, s.streak = raw.value, at, None, 0
        return Transition(s.source_id, t.rec.name, before, raw.value, at, rep.latency_ms, rep.error)

    def _next_interval(self, t: _Tracked) -> float:
        base = t.policy.interval_s
        s = t.status
        if s.state == HealthState.DOWN.value and s.failures > self.settings.fall:
            steps = min(s.failures - self.settings.fall, 16)
            base = min(base * (2**steps), max(self.settings.backoff_max_s, base))
        j = self.settings.jitter
        return float(base * (1 + self.rng.uniform(-j, j)))

    def _record(self, t: _Tracked, raw: HealthState, rep: HealthReport, at: datetime) -> None:
        s = t.status
        s.last_checked_at = at
        s.last_latency_ms = rep.latency_ms
        s.last_error = (rep.error or None) and rep.error[:2000]  # type: ignore[index]
        t.dirty = True
        start = bucket_start(at, self.settings.bucket_s)
        b = t.buckets.get(start)
        if b is None:
            b = t.buckets[start] = BucketDelta(t.rec.id, start)
        b.add(raw.value, rep.latency_ms)
        u = t.usage.get(start)
        if u is None:
            u = t.usage[start] = UsageDelta(t.rec.id, start)
        u.checks += 1
        u.check_errors += raw is HealthState.DOWN
        u.query_ms += rep.latency_ms or 0.0

    # -- persistence -------------------------------------------------------------------------
    def pending(self) -> tuple[list[HealthStatus], list[BucketDelta], list[UsageDelta]]:
        """Take what changed since the last call (the caller writes it)."""
        statuses: list[HealthStatus] = []
        buckets: list[BucketDelta] = []
        usage: list[UsageDelta] = []
        for t in self._tracked.values():
            if t.dirty:
                statuses.append(t.status.model_copy())
                t.dirty = False
            if t.buckets:
                buckets.extend(t.buckets.values())
                t.buckets = {}
            if t.usage:
                usage.extend(t.usage.values())
                t.usage = {}
        return statuses, buckets, usage

    def flush(self) -> int:
        """Write pending state and history, prune old history now and then (blocking).

        An async host calls :meth:`pending` on its loop and writes on a worker thread instead.
        """
        statuses, buckets, usage = self.pending()
        if statuses or buckets:
            self.store.save_health(statuses, buckets, usage)
        self.maybe_prune()
        return len(statuses)

    def maybe_prune(self) -> int:
        """Delete history older than ``retention_s`` (at most every retention/4, max 1 h)."""
        now = self.clock()
        if now - self._last_prune <= min(3600.0, self.settings.retention_s / 4):
            return 0
        self._last_prune = now
        cutoff = datetime.fromtimestamp(now, UTC) - timedelta(seconds=self.settings.retention_s)
        return self.store.prune_health(cutoff)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def describe(self) -> dict[str, Any]:
        return {"tracked": len(self._tracked), "states": self.counts()}
