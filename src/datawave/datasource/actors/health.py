"""HealthScheduler: the one loop that sweeps the fleet, keeps states and raises alerts.

Plain class (no Ray here): :mod:`datawave.datasource.actors.factory` turns it into a detached
singleton actor. Each tick it asks the :class:`~datawave.datasource.engines.health.HealthEngine`
which sources are due, sends them to their owner shards in batches (``check_health`` with many
ids per call; owners bound probes per host and share one probe per target), feeds the reports
back to the engine, writes states and history in one transaction per pass, and every
``evaluate_s`` evaluates the alert rules. Nothing here waits on alert delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from datawave.datasource.actors.jobs import OwnerDirectory
from datawave.datasource.actors.metrics import Metrics
from datawave.datasource.config import DatawaveSettings
from datawave.datasource.engines.alerts import (
    AlertEngine,
    AlertInputs,
    AlertNotifier,
    NatsPublisher,
    Publisher,
    SourceInfo,
)
from datawave.datasource.engines.health import HealthEngine
from datawave.datasource.models import Event, HealthReport, HealthState, SourceRecord
from datawave.datasource.store import MetadataStore

__all__ = ["HealthScheduler"]

log = logging.getLogger(__name__)


class HealthScheduler:
    """Args:
    settings: full settings (``health`` section, ``nats.url``).
    owners: reaches the owner shards (Ray handles, or plain objects in process).
    store: the metadata store (this class is its only writer of health tables).
    metrics: where to record; a private registry by default.
    publisher: alert publisher; default: NATS at ``settings.nats.url`` when set.
    after_pass: called with the summary of every pass that checked something (the hosting
        process uses it to give memory back after a large one).
    """

    def __init__(
        self,
        settings: Mapping[str, Any] | DatawaveSettings,
        owners: OwnerDirectory,
        store: MetadataStore,
        *,
        metrics: Metrics | None = None,
        publisher: Publisher | None = None,
        after_pass: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = (
            settings
            if isinstance(settings, DatawaveSettings)
            else DatawaveSettings.model_validate(settings)
        )
        hs = self.settings.health
        self.owners = owners
        self.store = store
        self.metrics = metrics or Metrics()
        self.events: list[Event] = []
        self.engine = HealthEngine(store, hs, sink=self._emit)
        if publisher is None and self.settings.nats.url:
            publisher = NatsPublisher(self.settings.nats.url)
        self.notifier = AlertNotifier(
            hs, publisher=publisher,
            on_result=lambda ch, out: self.metrics.alert_notifications.labels(ch, out).inc(),
        )  # fmt: skip
        # Rules are evaluated on a worker thread; notifications are handed to this loop after.
        self._outbox: list[tuple[Event, Sequence[str]]] = []
        self.alerts = AlertEngine(hs.rules, store, sink=self._emit, notifier=_Outbox(self._outbox))
        self.edge_links: dict[str, tuple[str, datetime]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one pass at a time
        self._refreshed = 0.0
        self._evaluated = 0.0
        self.last_sweep: dict[str, Any] = {}
        self.ticks = 0
        self.after_pass = after_pass

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        del self.events[:-10_000]  # bounded when nobody drains

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Start the background loop (idempotent)."""
        if self.settings.health.enabled and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return {"running": self._task is not None and not self._task.done()}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        hs = self.settings.health
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # liveness: the loop outlives any one bad pass
                log.exception("health tick failed")
            await asyncio.sleep(hs.tick_s)

    async def tick(self) -> dict[str, Any]:
        """One pass: refresh sources when stale, check what is due, write, maybe evaluate."""
        hs = self.settings.health
        self.ticks += 1
        if time.monotonic() - self._refreshed > hs.refresh_s:
            await self.refresh()
        summary = await self._pass(all_=False)
        if time.monotonic() - self._evaluated > hs.evaluate_s:
            await self.evaluate()
        return summary

    async def refresh(self) -> int:
        recs = await asyncio.to_thread(self.store.list_sources)
        self.engine.sync_sources(recs)
        self._refreshed = time.monotonic()
        return len(recs)

    # -- sweeps ------------------------------------------------------------------------------
    async def sweep(self, evaluate: bool = True) -> dict[str, Any]:
        """Check every enabled core source now (not only the due ones); for the CLI / bench."""
        await self.refresh()
        summary = await self._pass(all_=True)
        if evaluate:
            await self.evaluate()
        return summary

    async def _pass(self, *, all_: bool) -> dict[str, Any]:
        summary = await self._checked_pass(all_=all_)  # its reports are garbage once it returns
        if self.after_pass is not None and summary["checked"]:
            self.after_pass(summary)
        return summary

    async def _checked_pass(self, *, all_: bool) -> dict[str, Any]:
        async with self._lock:
            due = self.engine.due(all_=all_)
            if not due:
                return {"checked": 0}
            t0 = time.perf_counter()
            self.engine.mark_scheduled(r.id for r, _ in due)
            reports = await self.check(due)
            changes = self.engine.observe(reports)
            checked_s = time.perf_counter() - t0
            statuses, buckets, usage = self.engine.pending()
            await asyncio.to_thread(self.store.save_health, statuses, buckets, usage)
            await asyncio.to_thread(self.engine.maybe_prune)
            duration = time.perf_counter() - t0
            self.metrics.observe_sweep(duration)
            for ch in changes:
                self.metrics.state_changes.labels(ch.after).inc()
            self._publish_counts()
            by_state: dict[str, int] = defaultdict(int)
            for r in reports:
                by_state[r.state.value] += 1
            self.last_sweep = {
                "checked": len(reports), "duration_s": round(duration, 3),
                "checks_s": round(checked_s, 3), "results": dict(by_state),
                "changes": len(changes), "at": datetime.now(UTC).isoformat(),
            }  # fmt: skip
            return self.last_sweep

    async def check(self, due: Sequence[tuple[SourceRecord, float]]) -> list[HealthReport]:
        """Send checks to the owner shards in batches; an owner that fails yields ``unknown``."""
        hs = self.settings.health
        by_shard: dict[int, list[tuple[SourceRecord, float]]] = defaultdict(list)
        for rec, timeout in due:
            by_shard[rec.owner_shard].append((rec, timeout))
        calls = []
        for shard, items in by_shard.items():
            for i in range(0, len(items), hs.batch_size):
                calls.append(self._call(shard, items[i : i + hs.batch_size]))
        out: list[HealthReport] = []
        for part in await asyncio.gather(*calls):
            out.extend(part)
        return out

    async def _call(
        self, shard: int, items: list[tuple[SourceRecord, float]]
    ) -> list[HealthReport]:
        ids = [r.id for r, _ in items]
        timeouts = [t for _, t in items]
        hs = self.settings.health
        # Queued probes of one host run per_host at a time: allow for that, then give up.
        waves = -(-len(items) // max(1, hs.per_host_concurrency))
        limit = max(timeouts) * min(waves, 8) + 30
        try:
            return list(await asyncio.wait_for(
                self.owners.call(shard, "check_health", ids, timeouts), timeout=limit
            ))  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("owner %s: health batch failed: %s", shard, type(exc).__name__)
            now = datetime.now(UTC)
            return [HealthReport(source_id=sid, state=HealthState.UNKNOWN, checked_at=now,
                                 error=f"owner {shard} unavailable: {type(exc).__name__}")
                    for sid in ids]  # fmt: skip

    async def ingest(self, reports: list[HealthReport]) -> int:
        """Results checked elsewhere (edge nodes relay theirs); same rules, same history."""
        changes = self.engine.observe(reports)
        statuses, buckets, usage = self.engine.pending()
        await asyncio.to_thread(self.store.save_health, statuses, buckets, usage)
        self._publish_counts()
        return len(changes)

    async def set_edge_links(self, links: Mapping[str, str]) -> None:
        """Link state per edge node (``up`` / ``down`` / ...); the edge agent reports changes."""
        now = datetime.now(UTC)
        for node, state in links.items():
            prev = self.edge_links.get(node)
            if prev is None or prev[0] != state:
                self.edge_links[node] = (state, now)
        counts: dict[str, int] = defaultdict(int)
        for state, _ in self.edge_links.values():
            counts[state] += 1
        for state in {"up", "down", *counts}:
            self.metrics.edge_nodes.labels(state).set(counts.get(state, 0))

    def _publish_counts(self) -> None:
        self.metrics.set_sources({"core": self.engine.counts(edge=False),
                                  "edge": self.engine.counts(edge=True)})  # fmt: skip

    # -- alerts ------------------------------------------------------------------------------
    async def evaluate(self) -> dict[str, int]:
        """Evaluate every alert rule once; returns how many fired and resolved."""
        self._evaluated = time.monotonic()
        inputs = await asyncio.to_thread(self._inputs)
        fired, resolved = await asyncio.to_thread(self.alerts.evaluate, inputs)
        self._deliver_pending()
        self.metrics.set_alerts(
            ((a.rule, a.severity) for a in self.alerts.active.values()),
            ((r.name, r.severity) for r in self.settings.health.rules),
        )
        return {"fired": len(fired), "resolved": len(resolved), "active": len(self.alerts.active)}

    def _deliver_pending(self) -> None:
        pending, self._outbox[:] = list(self._outbox), []
        for event, hooks in pending:
            self.notifier.submit(event, hooks)

    def _inputs(self) -> AlertInputs:
        now = datetime.now(UTC)
        rules = self.settings.health.rules
        recs = self.engine.records()
        sources = {r.id: SourceInfo(r.id, r.name, r.labels) for r in recs}
        p95: dict[tuple[str, float], float] = {}
        drift: dict[tuple[str, float], int] = {}
        metrics = {r.metric for r in rules}
        for window in {r.window_s for r in rules if r.metric == "latency_p95"}:
            for sid, summ in self.store.latency_summary(
                since=now - timedelta(seconds=window)
            ).items():
                if summ.p95_ms is not None:
                    p95[(sid, window)] = summ.p95_ms
        for window in {r.window_s for r in rules if r.metric == "breaking_drift"}:
            for sid, n in self.store.breaking_drift_counts(now - timedelta(seconds=window)).items():
                drift[(sid, window)] = n
        streaks = self.store.discovery_failure_streaks() if "discovery_failing" in metrics else {}
        return AlertInputs(now=now, sources=sources, health=self.engine.statuses(), p95_ms=p95,
                           discovery_streaks=streaks, breaking_drift=drift,
                           edge_links=dict(self.edge_links))  # fmt: skip

    # -- reads -------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        return {
            "running": self._task is not None and not self._task.done(),
            "ticks": self.ticks,
            "states": self.engine.counts(),
            "last_sweep": self.last_sweep,
            "alerts_active": len(self.alerts.active),
            "notifier_dropped": self.notifier.dropped,
        }

    async def deliveries(self) -> list[dict[str, Any]]:
        return list(self.notifier.delivered)

    def drain_events(self) -> list[Event]:
        out, self.events[:] = list(self.events), []
        return out

    async def metrics_text(self) -> bytes:
        return self.metrics.render()

    async def close(self) -> None:
        await self.stop()
        await self.notifier.close()
        self.store.close()


class _Outbox:
    def __init__(self, items: list[tuple[Event, Sequence[str]]]) -> None:
        self.items = items

    def submit(self, event: Event, extra_webhooks: Sequence[str] = ()) -> None:
        self.items.append((event, tuple(extra_webhooks)))
