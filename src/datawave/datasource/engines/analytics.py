"""Per-source usage, error rates and cost over a time window, for ``datawave report`` and the API.

Inputs are what the store already keeps: health buckets (checks, uptime, latency), discovery
runs (count, failures, run time) and ``source_usage`` (API reads and errors, recorded by the API
through :class:`UsageRecorder`). Cost is the time datawave spent talking to a source: health
check latency plus discovery run time.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel

from datawave.datasource.store import MetadataStore, UsageDelta

__all__ = ["ReportRow", "UsageRecorder", "UsageSink", "report_csv", "usage_report"]


class ReportRow(BaseModel):
    source_id: str
    name: str
    type: str
    health: str
    checks: int = 0
    check_errors: int = 0
    check_error_rate: float | None = None
    uptime: float | None = None
    avg_ms: float | None = None
    p95_ms: float | None = None
    discoveries: int = 0
    discovery_errors: int = 0
    discovery_error_rate: float | None = None
    api_reads: int = 0
    api_errors: int = 0
    cost_s: float = 0.0


def _rate(bad: int, total: int) -> float | None:
    return round(bad / total, 5) if total else None


def usage_report(
    store: MetadataStore, *, since: datetime | None = None, hours: float = 24.0,
    top: int | None = None,
) -> list[ReportRow]:  # fmt: skip
    """One row per live source over ``[since, now)`` (default: the last ``hours``), costliest first.

    Blocking: async callers run it on a worker thread.
    """
    since = since or datetime.now(UTC) - timedelta(hours=hours)
    lat = store.latency_summary(since=since)
    runs = store.run_totals(since=since)
    usage = {u["source_id"]: u for u in store.usage_totals(since=since)}
    rows = []
    for rec in store.list_sources():
        row = ReportRow(source_id=rec.id, name=rec.name, type=rec.type, health=rec.health)
        cost_ms = 0.0
        if (s := lat.get(rec.id)) is not None:
            row.checks, row.check_errors = s.checks, s.down
            row.check_error_rate = _rate(s.down, s.checks)
            row.uptime, row.avg_ms, row.p95_ms = s.uptime, s.avg_ms, s.p95_ms
        if (u := usage.get(rec.id)) is not None:
            row.api_reads, row.api_errors = int(u["api_reads"]), int(u["api_errors"])
            cost_ms += float(u["query_ms"])
        if (r := runs.get(rec.id)) is not None:
            row.discoveries, row.discovery_errors = int(r["runs"]), int(r["failed"])
            row.discovery_error_rate = _rate(row.discovery_errors, row.discoveries)
            cost_ms += r["run_ms"]
        row.cost_s = round(cost_ms / 1000, 3)
        rows.append(row)
    rows.sort(key=lambda r: (-r.cost_s, r.name))
    return rows[:top] if top else rows


def report_csv(rows: Sequence[ReportRow]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ReportRow.model_fields))
    w.writeheader()
    for r in rows:
        w.writerow(r.model_dump())
    return buf.getvalue()


class UsageSink(Protocol):
    def add_usage(self, deltas: Sequence[UsageDelta]) -> None: ...


class UsageRecorder:
    """Counts API reads per source in memory and writes them in one batch (``flush``).

    The API calls :meth:`read` per request that touched a source, and :meth:`flush` from a
    periodic task on a worker thread; a request never waits on the store.
    """

    def __init__(self, store: UsageSink, *, bucket_s: int = 300) -> None:
        self.store = store
        self.bucket_s = bucket_s
        self._pending: dict[tuple[str, int], UsageDelta] = {}

    def read(self, source_id: str, *, error: bool = False, elapsed_ms: float = 0.0) -> None:
        slot = int(time.time()) // self.bucket_s * self.bucket_s
        d = self._pending.get((source_id, slot))
        if d is None:
            start = datetime.fromtimestamp(slot, UTC)
            d = self._pending[(source_id, slot)] = UsageDelta(source_id, start)
        d.api_reads += 1
        d.api_errors += int(error)
        d.query_ms += elapsed_ms

    def flush(self) -> int:
        batch, self._pending = list(self._pending.values()), {}
        if batch:
            self.store.add_usage(batch)
        return len(batch)
