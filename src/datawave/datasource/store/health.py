"""Health state, latency history, alerts and per-source usage.

History is kept as time buckets (one row per source and ``bucket_s``), each with counts per
state and a fixed log-spaced latency histogram, so min / avg / p95 and uptime over any window
are exact for counts and within one histogram bin for p95, and the table stays bounded:
``sources x retention / bucket`` rows. The writer is the health engine (one per cluster); a
flush merges its in-memory deltas into existing rows in one transaction.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, bindparam, case, delete, func, insert, or_, select, update

from datawave.datasource.store.base import StoreBase, aware, chunked, utcnow
from datawave.datasource.store.tables import (
    alerts,
    discovery_runs,
    drift_events,
    health_buckets,
    health_status,
    source_usage,
    sources,
)

__all__ = [
    "LATENCY_BINS_MS",
    "AlertRecord",
    "BucketDelta",
    "HealthMixin",
    "HealthStatus",
    "LatencySummary",
    "UsageDelta",
    "bin_index",
    "percentile",
]

#: Upper bounds (ms) of the latency histogram bins; the last bin is open-ended.
LATENCY_BINS_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 7500, 10000, 20000, 30000, 60000,
)  # fmt: skip
_NBINS = len(LATENCY_BINS_MS) + 1


def bin_index(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BINS_MS, latency_ms)


def percentile(hist: Sequence[int], q: float, *, lo: float | None = None,
               hi: float | None = None) -> float | None:  # fmt: skip
    """The ``q`` quantile (0..1) of a binned histogram, interpolated inside its bin and clamped
    to the observed ``lo`` / ``hi``."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0.0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            left = LATENCY_BINS_MS[i - 1] if i > 0 else 0.0
            right = LATENCY_BINS_MS[i] if i < len(LATENCY_BINS_MS) else (hi or left * 2)
            value = left + (right - left) * ((rank - seen) / n)
            if lo is not None:
                value = max(value, lo)
            if hi is not None:
                value = min(value, hi)
            return round(value, 3)
        seen += n
    return hi


class HealthStatus(BaseModel):
    """The current, hysteresis-filtered state of one source."""

    model_config = ConfigDict(extra="forbid")

    source_id: str
    state: str
    since: datetime
    candidate: str | None = None
    streak: int = 0
    failures: int = 0
    last_checked_at: datetime | None = None
    last_latency_ms: float | None = None
    last_error: str | None = None


class LatencySummary(BaseModel):
    source_id: str
    checks: int
    healthy: int
    degraded: int
    down: int
    uptime: float | None
    min_ms: float | None
    avg_ms: float | None
    p95_ms: float | None
    max_ms: float | None


class AlertRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    rule: str
    key: str
    subject: str
    source_id: str | None = None
    severity: str
    status: str
    value: float | None = None
    message: str
    fired_at: datetime
    resolved_at: datetime | None = None
    data: dict[str, Any] = {}


@dataclass
class BucketDelta:
    """Checks of one source within one bucket, not yet written."""

    source_id: str
    bucket_start: datetime
    checks: int = 0
    healthy: int = 0
    degraded: int = 0
    down: int = 0
    lat_count: int = 0
    lat_sum: float = 0.0
    lat_min: float | None = None
    lat_max: float | None = None
    lat_hist: list[int] = field(default_factory=lambda: [0] * _NBINS)

    def add(self, state: str, latency_ms: float | None) -> None:
        self.checks += 1
        if state == "healthy":
            self.healthy += 1
        elif state == "degraded":
            self.degraded += 1
        elif state == "down":
            self.down += 1
        if latency_ms is not None:
            self.lat_count += 1
            self.lat_sum += latency_ms
            self.lat_min = latency_ms if self.lat_min is None else min(self.lat_min, latency_ms)
            self.lat_max = latency_ms if self.lat_max is None else max(self.lat_max, latency_ms)
            self.lat_hist[bin_index(latency_ms)] += 1

    def merge_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """This delta added onto a stored row, as column values."""
        hist = list(row["lat_hist"] or [0] * _NBINS)
        hist += [0] * (_NBINS - len(hist))
        mins = [v for v in (row["lat_min"], self.lat_min) if v is not None]
        maxs = [v for v in (row["lat_max"], self.lat_max) if v is not None]
        return {
            "checks": row["checks"] + self.checks,
            "healthy": row["healthy"] + self.healthy,
            "degraded": row["degraded"] + self.degraded,
            "down": row["down"] + self.down,
            "lat_count": row["lat_count"] + self.lat_count,
            "lat_sum": row["lat_sum"] + self.lat_sum,
            "lat_min": min(mins) if mins else None,
            "lat_max": max(maxs) if maxs else None,
            "lat_hist": [a + b for a, b in zip(hist, self.lat_hist, strict=True)],
        }

    def values(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id, "bucket_start": self.bucket_start,
            "checks": self.checks, "healthy": self.healthy, "degraded": self.degraded,
            "down": self.down, "lat_count": self.lat_count, "lat_sum": self.lat_sum,
            "lat_min": self.lat_min, "lat_max": self.lat_max, "lat_hist": list(self.lat_hist),
        }  # fmt: skip


_USAGE_FIELDS = ("api_reads", "api_errors", "discoveries", "discovery_errors", "checks",
                 "check_errors", "query_ms")  # fmt: skip


@dataclass
class UsageDelta:
    source_id: str
    bucket_start: datetime
    api_reads: int = 0
    api_errors: int = 0
    discoveries: int = 0
    discovery_errors: int = 0
    checks: int = 0
    check_errors: int = 0
    query_ms: float = 0.0


def _status(r: Any) -> HealthStatus:
    return HealthStatus(
        source_id=r.source_id, state=r.state, since=aware(r.since), candidate=r.candidate,
        streak=r.streak, failures=r.failures, last_checked_at=aware(r.last_checked_at),
        last_latency_ms=r.last_latency_ms, last_error=r.last_error,
    )  # fmt: skip


def _alert(r: Any) -> AlertRecord:
    return AlertRecord(
        id=r.id, rule=r.rule, key=r.key, subject=r.subject, source_id=r.source_id,
        severity=r.severity, status=r.status, value=r.value, message=r.message,
        fired_at=aware(r.fired_at), resolved_at=aware(r.resolved_at), data=r.data or {},
    )  # fmt: skip


class HealthMixin(StoreBase):
    # -- state -------------------------------------------------------------------------------
    def load_health(self) -> dict[str, HealthStatus]:
        with self.read() as conn:
            return {r.source_id: _status(r) for r in conn.execute(select(health_status))}

    def get_health(self, source_id: str) -> HealthStatus | None:
        with self.read() as conn:
            r = conn.execute(
                select(health_status).where(health_status.c.source_id == source_id)
            ).first()
        return _status(r) if r is not None else None

    def save_health(
        self,
        statuses: Sequence[HealthStatus],
        buckets: Sequence[BucketDelta] = (),
        usage: Sequence[UsageDelta] = (),
    ) -> None:
        """Upsert states (and the ``sources.health`` column list filters use), merge buckets."""
        live = self._live_ids([s.source_id for s in statuses] + [b.source_id for b in buckets]
                              + [u.source_id for u in usage])  # fmt: skip
        statuses = [s for s in statuses if s.source_id in live]
        with self.begin() as conn:
            if statuses:
                ids = [s.source_id for s in statuses]
                have: set[str] = set()
                for part in chunked(ids):
                    q = select(health_status.c.source_id).where(health_status.c.source_id.in_(part))
                    have.update(conn.execute(q).scalars())
                rows = [s.model_dump() for s in statuses]
                new = [r for r in rows if r["source_id"] not in have]
                old = [r for r in rows if r["source_id"] in have]
                if new:
                    conn.execute(insert(health_status), new)
                if old:
                    cols = [c for c in rows[0] if c != "source_id"]
                    upd = (
                        update(health_status)
                        .where(health_status.c.source_id == bindparam("_sid"))
                        .values({c: bindparam(f"v_{c}") for c in cols})
                    )
                    conn.execute(upd, [{"_sid": r["source_id"], **{f"v_{c}": r[c] for c in cols}}
                                     for r in old])  # fmt: skip
                # Mirror the state on the source row so `sources list --health down` stays one query.
                by_state: dict[str, list[str]] = {}
                for s in statuses:
                    by_state.setdefault(s.state, []).append(s.source_id)
                for state, sids in by_state.items():
                    for part in chunked(sids):
                        conn.execute(
                            update(sources)
                            .where(sources.c.id.in_(part), sources.c.health != state)
                            .values(health=state)
                        )
            self._merge_buckets(conn, [b for b in buckets if b.source_id in live])
            self._merge_usage(conn, [u for u in usage if u.source_id in live])

    def _live_ids(self, ids: Sequence[str]) -> set[str]:
        uniq = sorted(set(ids))
        out: set[str] = set()
        with self.read() as conn:
            for part in chunked(uniq):
                out.update(
                    conn.execute(select(sources.c.id).where(sources.c.id.in_(part))).scalars()
                )
        return out

    def _merge_buckets(self, conn: Any, deltas: Sequence[BucketDelta]) -> None:
        by_start: dict[datetime, list[BucketDelta]] = {}
        for d in deltas:
            by_start.setdefault(d.bucket_start, []).append(d)
        for start, group in by_start.items():
            existing: dict[str, Any] = {}
            for part in chunked([d.source_id for d in group]):
                q = select(health_buckets).where(
                    health_buckets.c.bucket_start == start, health_buckets.c.source_id.in_(part)
                )
                existing.update({r.source_id: r._mapping for r in conn.execute(q)})
            new = [d.values() for d in group if d.source_id not in existing]
            old = [{**d.merge_row(existing[d.source_id]), "_sid": d.source_id, "_start": start}
                   for d in group if d.source_id in existing]  # fmt: skip
            if new:
                conn.execute(insert(health_buckets), new)
            if old:
                cols = [c for c in old[0] if not c.startswith("_")]
                upd = (
                    update(health_buckets)
                    .where(
                        health_buckets.c.source_id == bindparam("_sid"),
                        health_buckets.c.bucket_start == bindparam("_start"),
                    )
                    .values({c: bindparam(f"v_{c}") for c in cols})
                )
                conn.execute(upd, [{"_sid": o["_sid"], "_start": o["_start"],
                                  **{f"v_{c}": o[c] for c in cols}} for o in old])  # fmt: skip

    def _merge_usage(self, conn: Any, deltas: Sequence[UsageDelta]) -> None:
        by_start: dict[datetime, list[UsageDelta]] = {}
        for d in deltas:
            by_start.setdefault(d.bucket_start, []).append(d)
        for start, group in by_start.items():
            have: set[str] = set()
            for part in chunked([d.source_id for d in group]):
                q = select(source_usage.c.source_id).where(
                    source_usage.c.bucket_start == start, source_usage.c.source_id.in_(part)
                )
                have.update(conn.execute(q).scalars())
            new = [{"source_id": d.source_id, "bucket_start": start,
                    **{f: getattr(d, f) for f in _USAGE_FIELDS}}
                   for d in group if d.source_id not in have]  # fmt: skip
            if new:
                conn.execute(insert(source_usage), new)
            old = [{"_sid": d.source_id, "_start": start,
                    **{f"v_{f}": getattr(d, f) for f in _USAGE_FIELDS}}
                   for d in group if d.source_id in have]  # fmt: skip
            if old:
                conn.execute(
                    update(source_usage)
                    .where(
                        source_usage.c.source_id == bindparam("_sid"),
                        source_usage.c.bucket_start == bindparam("_start"),
                    )
                    .values({f: source_usage.c[f] + bindparam(f"v_{f}") for f in _USAGE_FIELDS}),
                    old,
                )

    def add_usage(self, deltas: Sequence[UsageDelta]) -> None:
        """Add usage counters (API reads, discoveries, cost); unknown sources are skipped."""
        live = self._live_ids([d.source_id for d in deltas])
        with self.begin() as conn:
            self._merge_usage(conn, [d for d in deltas if d.source_id in live])

    def health_counts(self) -> dict[str, int]:
        """Live sources by health state (the ``sources.health`` column)."""
        q = (
            select(sources.c.health, func.count())
            .where(sources.c.deleted_at.is_(None))
            .group_by(sources.c.health)
        )
        with self.read() as conn:
            return {state: int(n) for state, n in conn.execute(q)}

    # -- history -----------------------------------------------------------------------------
    def health_history(
        self, source_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        q = select(health_buckets).where(health_buckets.c.source_id == source_id)
        if since is not None:
            q = q.where(health_buckets.c.bucket_start >= since)
        if until is not None:
            q = q.where(health_buckets.c.bucket_start < until)
        with self.read() as conn:
            rows = conn.execute(q.order_by(health_buckets.c.bucket_start)).all()
        out = []
        for r in rows:
            m = dict(r._mapping)
            m["bucket_start"] = aware(m["bucket_start"])
            m["avg_ms"] = round(m["lat_sum"] / m["lat_count"], 3) if m["lat_count"] else None
            m["p95_ms"] = percentile(m["lat_hist"] or [], 0.95, lo=m["lat_min"], hi=m["lat_max"])
            out.append(m)
        return out

    def latency_summary(
        self, source_ids: Sequence[str] | None = None, *, since: datetime | None = None
    ) -> dict[str, LatencySummary]:
        """min / avg / p95 / max latency and uptime per source over the buckets since ``since``."""
        q = select(health_buckets)
        if since is not None:
            q = q.where(health_buckets.c.bucket_start >= since)
        acc: dict[str, BucketDelta] = {}
        parts = list(chunked(list(source_ids))) if source_ids is not None else [None]
        with self.read() as conn:
            for part in parts:
                qq = q if part is None else q.where(health_buckets.c.source_id.in_(part))
                for r in conn.execute(qq):
                    d = acc.setdefault(r.source_id, BucketDelta(r.source_id, aware(r.bucket_start)))  # type: ignore[arg-type]
                    merged = d.merge_row(dict(r._mapping))
                    for k, v in merged.items():
                        setattr(d, k, v)
        out = {}
        for sid, d in acc.items():
            up = d.healthy + d.degraded
            out[sid] = LatencySummary(
                source_id=sid, checks=d.checks, healthy=d.healthy, degraded=d.degraded,
                down=d.down, uptime=round(up / d.checks, 5) if d.checks else None,
                min_ms=d.lat_min, max_ms=d.lat_max,
                avg_ms=round(d.lat_sum / d.lat_count, 3) if d.lat_count else None,
                p95_ms=percentile(d.lat_hist, 0.95, lo=d.lat_min, hi=d.lat_max),
            )  # fmt: skip
        return out

    def prune_health(self, before: datetime) -> int:
        """Delete history buckets, usage buckets and resolved alerts older than ``before``."""
        with self.begin() as conn:
            n = conn.execute(
                delete(health_buckets).where(health_buckets.c.bucket_start < before)
            ).rowcount
            n += conn.execute(
                delete(source_usage).where(source_usage.c.bucket_start < before)
            ).rowcount
            n += conn.execute(
                delete(alerts).where(alerts.c.status == "resolved", alerts.c.resolved_at < before)
            ).rowcount
        return int(n)

    # -- alerts ------------------------------------------------------------------------------
    def open_alerts(self) -> list[AlertRecord]:
        with self.read() as conn:
            q = select(alerts).where(alerts.c.status == "firing").order_by(alerts.c.fired_at)
            return [_alert(r) for r in conn.execute(q)]

    def fire_alert(self, rec: AlertRecord) -> None:
        with self.begin() as conn:
            conn.execute(insert(alerts).values(**rec.model_dump()))

    def resolve_alert(self, alert_id: str, *, at: datetime | None = None) -> None:
        with self.begin() as conn:
            conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.status == "firing")
                .values(status="resolved", resolved_at=at or utcnow())
            )

    def list_alerts(
        self, *, status: str | None = None, rule: str | None = None,
        source_id: str | None = None, since: datetime | None = None, limit: int = 100,
    ) -> list[AlertRecord]:  # fmt: skip
        q = select(alerts)
        if status:
            q = q.where(alerts.c.status == status)
        if rule:
            q = q.where(alerts.c.rule == rule)
        if source_id:
            q = q.where(alerts.c.source_id == source_id)
        if since is not None:
            q = q.where(or_(alerts.c.fired_at >= since, alerts.c.resolved_at >= since))
        with self.read() as conn:
            return [
                _alert(r) for r in conn.execute(q.order_by(alerts.c.fired_at.desc()).limit(limit))
            ]

    # -- inputs of other alert rules -----------------------------------------------------------
    def discovery_failure_streaks(self, *, depth: int = 20) -> dict[str, int]:
        """Consecutive failed runs (newest first) per source, for sources whose last run failed."""
        rn = (
            func.row_number()
            .over(
                partition_by=discovery_runs.c.source_id, order_by=discovery_runs.c.started_at.desc()
            )
            .label("rn")
        )
        inner = (
            select(discovery_runs.c.source_id, discovery_runs.c.status, rn)
            .where(discovery_runs.c.status != "running")
            .subquery()
        )
        q = (
            select(inner.c.source_id, inner.c.status)
            .where(inner.c.rn <= depth)
            .order_by(inner.c.source_id, inner.c.rn)
        )
        out: dict[str, int] = {}
        broken: set[str] = set()
        with self.read() as conn:
            for sid, status in conn.execute(q):
                if sid in broken:
                    continue
                if status == "failed":
                    out[sid] = out.get(sid, 0) + 1
                else:
                    broken.add(sid)
        return out

    def breaking_drift_counts(self, since: datetime) -> dict[str, int]:
        q = (
            select(drift_events.c.source_id, func.count())
            .where(and_(drift_events.c.breaking.is_(True), drift_events.c.detected_at >= since))
            .group_by(drift_events.c.source_id)
        )
        with self.read() as conn:
            return {sid: int(n) for sid, n in conn.execute(q)}

    # -- analytics -----------------------------------------------------------------------------
    def usage_totals(
        self, *, since: datetime, until: datetime | None = None, bucket_s: int | None = None
    ) -> list[dict[str, Any]]:
        """Usage rows summed per source (and per ``bucket_s`` time slot when given)."""
        q = select(source_usage).where(source_usage.c.bucket_start >= since)
        if until is not None:
            q = q.where(source_usage.c.bucket_start < until)
        acc: dict[tuple[str, datetime | None], dict[str, Any]] = {}
        with self.read() as conn:
            for r in conn.execute(q):
                start = aware(r.bucket_start)
                slot = None
                if bucket_s and start is not None:
                    epoch = int(start.timestamp()) // bucket_s * bucket_s
                    slot = start - timedelta(seconds=int(start.timestamp()) - epoch)
                row = acc.setdefault((r.source_id, slot), {f: 0 for f in _USAGE_FIELDS})
                for f in _USAGE_FIELDS:
                    row[f] += getattr(r, f)
        return [
            {"source_id": sid, "bucket_start": slot, **vals} for (sid, slot), vals in acc.items()
        ]

    def run_totals(self, *, since: datetime) -> dict[str, dict[str, float]]:
        """Discovery runs, failures and run time per source since ``since``."""
        q = (
            select(
                discovery_runs.c.source_id,
                func.count(),
                func.sum(case((discovery_runs.c.status == "failed", 1), else_=0)),
                func.coalesce(func.sum(discovery_runs.c.duration_ms), 0.0),
            )
            .where(discovery_runs.c.started_at >= since)
            .group_by(discovery_runs.c.source_id)
        )
        with self.read() as conn:
            return {
                sid: {"runs": int(n), "failed": int(f or 0), "run_ms": float(ms or 0)}
                for sid, n, f, ms in conn.execute(q)
            }
