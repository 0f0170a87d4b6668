"""Metrics: one definition, two exports.

Every process that does work (owner shards, the health scheduler, the API) holds a
:class:`Metrics` on its own prometheus-client registry; actors also mirror into Ray custom
metrics (``ray.util.metrics``, exported by Ray's metrics agent as ``ray_datawave_*``). The API
serves one ``/metrics`` page by merging its own registry with the actors' expositions
(:func:`merge_expositions`; same-named series are summed, which is right for counters,
histograms and the per-process gauges we define). Names are documented in ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from datawave.datasource.models import HealthReport, RunSummary, SourceRecord

__all__ = ["CONTENT_TYPE", "Metrics", "SourceUsage", "merge_expositions"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
_API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """The datawave metric families on ``registry`` (a fresh one by default).

    Args:
        registry: where the families live; the API passes its own.
        ray_metrics: also record into Ray custom metrics (only inside a Ray worker).
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, ray_metrics: bool = False
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sources = Gauge("datawave_sources", "Registered sources by health state",
                             ["state", "location"], registry=r)  # fmt: skip
        self.checks = Counter("datawave_health_checks", "Health checks by connector type and result",
                              ["type", "state"], registry=r)  # fmt: skip
        self.check_seconds = Histogram("datawave_health_check_duration_seconds",
                                       "Health check latency", ["type"], buckets=_CHECK_BUCKETS,
                                       registry=r)  # fmt: skip
        self.sweep_seconds = Histogram("datawave_health_sweep_duration_seconds",
                                       "Duration of one scheduler pass over the due sources",
                                       buckets=_RUN_BUCKETS, registry=r)  # fmt: skip
        self.state_changes = Counter("datawave_health_state_changes", "Health state transitions",
                                     ["to"], registry=r)  # fmt: skip
        self.discovery_runs = Counter("datawave_discovery_runs", "Discovery runs by type and status",
                                      ["type", "status"], registry=r)  # fmt: skip
        self.discovery_seconds = Histogram("datawave_discovery_duration_seconds",
                                           "Discovery run duration", ["type"], buckets=_RUN_BUCKETS,
                                           registry=r)  # fmt: skip
        self.discovery_errors = Counter("datawave_discovery_errors", "Failed discovery runs",
                                        ["type"], registry=r)  # fmt: skip
        self.source_usage = SourceUsage(r)
        self.edge_nodes = Gauge("datawave_edge_nodes", "Edge nodes by link state", ["link_state"],
                                registry=r)  # fmt: skip
        self.api_requests = Counter("datawave_api_requests", "API requests",
                                    ["route", "method", "status"], registry=r)  # fmt: skip
        self.api_seconds = Histogram("datawave_api_request_duration_seconds", "API request latency",
                                     ["route", "method"], buckets=_API_BUCKETS, registry=r)  # fmt: skip
        self.api_errors = Counter("datawave_api_errors", "API errors by stable error code",
                                  ["route", "code"], registry=r)  # fmt: skip
        self.alerts_firing = Gauge("datawave_alerts_firing", "Alerts currently firing",
                                   ["rule", "severity"], registry=r)  # fmt: skip
        self.alert_notifications = Counter("datawave_alert_notifications",
                                           "Alert deliveries by channel and outcome",
                                           ["channel", "outcome"], registry=r)  # fmt: skip
        self._ray: dict[str, Any] = _ray_metrics() if ray_metrics else {}

    # -- recorders (each also feeds Ray when enabled) -------------------------------------------
    def record_checks(
        self, records: Sequence[SourceRecord], reports: Sequence[HealthReport]
    ) -> None:
        ray_m = self._ray
        for rec, rep in zip(records, reports, strict=True):
            state = rep.state.value
            self.checks.labels(rec.type, state).inc()
            sec = None if rep.latency_ms is None else rep.latency_ms / 1000
            self.source_usage.add(rec.name, "check", sec)
            if sec is not None:
                self.check_seconds.labels(rec.type).observe(sec)
                if ray_m:
                    ray_m["check_seconds"].observe(sec, tags={"type": rec.type})
            if ray_m:
                ray_m["checks"].inc(1, tags={"type": rec.type, "state": state})

    def record_discovery(self, rec: SourceRecord, run: RunSummary) -> None:
        status = run.status.value
        self.discovery_runs.labels(rec.type, status).inc()
        sec = (run.duration_ms or 0) / 1000
        self.source_usage.add(rec.name, "discovery", sec)
        self.discovery_seconds.labels(rec.type).observe(sec)
        if status == "failed":
            self.discovery_errors.labels(rec.type).inc()
        if self._ray:
            self._ray["discovery_runs"].inc(1, tags={"type": rec.type, "status": status})
            self._ray["discovery_seconds"].observe(sec, tags={"type": rec.type})

    def set_sources(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """``{"core": {"healthy": n, ...}, "edge": {...}}``."""
        for location, by_state in counts.items():
            for state, n in by_state.items():
                self.sources.labels(state, location).set(n)
                if self._ray:
                    self._ray["sources"].set(n, tags={"state": state, "location": location})

    def set_alerts(
        self, firing: Iterable[tuple[str, str]], rules: Iterable[tuple[str, str]]
    ) -> None:
        """``firing``: (rule, severity) of each open alert; ``rules``: all configured rules."""
        counts: dict[tuple[str, str], int] = {k: 0 for k in rules}
        for key in firing:
            counts[key] = counts.get(key, 0) + 1
        for (rule, severity), n in counts.items():
            self.alerts_firing.labels(rule, severity).set(n)
            if self._ray:
                self._ray["alerts_firing"].set(n, tags={"rule": rule, "severity": severity})

    def observe_sweep(self, seconds: float) -> None:
        self.sweep_seconds.observe(seconds)
        if self._ray:
            self._ray["sweep_seconds"].observe(seconds)

    def observe_api(self, route: str, method: str, status: int, seconds: float,
                    code: str | None = None) -> None:  # fmt: skip
        """For the API middleware: one call per request (``route`` is the template, not the path)."""
        self.api_requests.labels(route, method, str(status)).inc()
        self.api_seconds.labels(route, method).observe(seconds)
        if status >= 400:
            self.api_errors.labels(route, code or str(status)).inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def _ray_metrics() -> dict[str, Any]:
    try:
        from ray.util import metrics as rm
    except ImportError:  # pragma: no cover - ray is a dependency
        return {}
    return {
        "checks": rm.Counter("datawave_health_checks", "Health checks", tag_keys=("type", "state")),
        "check_seconds": rm.Histogram("datawave_health_check_duration_seconds", "Check latency",
                                      boundaries=list(_CHECK_BUCKETS), tag_keys=("type",)),
        "sweep_seconds": rm.Histogram("datawave_health_sweep_duration_seconds", "Sweep duration",
                                      boundaries=list(_RUN_BUCKETS)),
        "discovery_runs": rm.Counter("datawave_discovery_runs", "Discovery runs",
                                     tag_keys=("type", "status")),
        "discovery_seconds": rm.Histogram("datawave_discovery_duration_seconds", "Run duration",
                                          boundaries=list(_RUN_BUCKETS), tag_keys=("type",)),
        "sources": rm.Gauge("datawave_sources", "Sources by state", tag_keys=("state", "location")),
        "alerts_firing": rm.Gauge("datawave_alerts_firing", "Open alerts",
                                  tag_keys=("rule", "severity")),
    }  # fmt: skip


class SourceUsage:
    """``datawave_source_queries_total`` and ``datawave_source_query_seconds_total``: operations
    against each source and the time they took, by kind (check, discovery, api).

    One series per source and kind is the point of these families, so they are kept as plain
    numbers and rendered at scrape time: prometheus-client's labelled children (a lock, value
    objects, the label tuple each) cost ~12 MB per process at 10,000 sources; this ~2 MB.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        # (source, kind) -> [operations, seconds, created (unix time)]
        self._series: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()
        registry.register(self)  # type: ignore[arg-type]

    def add(self, source: str, kind: str, seconds: float | None = None) -> None:
        """One operation of ``kind`` on ``source``; ``seconds`` adds to its cost when known."""
        with self._lock:
            row = self._series.get((source, kind))
            if row is None:
                row = self._series[(source, kind)] = [0.0, 0.0, time.time()]
            row[0] += 1
            if seconds is not None:
                row[1] += seconds

    def describe(self) -> list[Metric]:
        return self._families(())

    def collect(self) -> list[Metric]:
        with self._lock:
            rows = [(key, list(row)) for key, row in self._series.items()]
        return self._families(rows)

    @staticmethod
    def _families(rows: Iterable[tuple[tuple[str, str], list[float]]]) -> list[Metric]:
        labels = ["source", "kind"]
        queries = CounterMetricFamily("datawave_source_queries",
                                      "Operations against a source (check, discovery, api read)",
                                      labels=labels)  # fmt: skip
        cost = CounterMetricFamily("datawave_source_query_seconds",
                                   "Time spent on a source (cost), by kind", labels=labels)  # fmt: skip
        for (source, kind), (n, sec, created) in rows:
            queries.add_metric([source, kind], n, created=created)
            cost.add_metric([source, kind], sec, created=created)
        return [queries, cost]


class _Static:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def merge_expositions(texts: Iterable[bytes | str]) -> bytes:
    """One exposition from many processes' expositions: series with the same name and labels
    are summed (``*_created`` keeps the earliest)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        raw = text.decode() if isinstance(text, bytes) else text
        for fam in text_string_to_metric_families(raw):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            acc = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if s.name.endswith("_created"):
                    acc[key] = min(acc.get(key, s.value), s.value)
                else:
                    acc[key] = acc.get(key, 0.0) + s.value
    out = []
    for name, fam in families.items():
        for (sname, labels), v in values[name].items():
            fam.add_sample(sname, dict(labels), v)
        out.append(fam)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Static(out))  # type: ignore[arg-type]
    return bytes(generate_latest(reg))
