"""Alert rules: evaluate, deduplicate, fire and resolve; deliver without blocking the sweep.

An alert is keyed by ``rule:subject`` (a source id or an edge node). While a key is firing it
is not fired again (dedup across restarts: open alerts are loaded from the store); when the
condition clears it is resolved once. Every fire / resolve becomes an :class:`Event`
(``alert.fired`` / ``alert.resolved``) for the event stream, and is queued for NATS
(``<prefix>.<rule>``) and webhooks. Delivery runs in background tasks: a webhook that hangs
or answers 500 is retried with exponential backoff, never on the evaluator's time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from datawave.datasource.config import AlertRule, HealthSettings
from datawave.datasource.models import Event, EventSink
from datawave.datasource.store import AlertRecord, HealthStatus

__all__ = [
    "AlertEngine",
    "AlertInputs",
    "AlertNotifier",
    "AlertStore",
    "NatsPublisher",
    "Notifier",
    "Publisher",
    "SourceInfo",
]

log = logging.getLogger(__name__)


class AlertStore(Protocol):
    def open_alerts(self) -> list[AlertRecord]: ...
    def fire_alert(self, rec: AlertRecord) -> None: ...
    def resolve_alert(self, alert_id: str, *, at: datetime | None = None) -> None: ...


class Notifier(Protocol):
    def submit(self, event: Event, extra_webhooks: Sequence[str] = ()) -> None: ...


class Publisher(Protocol):
    """Where alert events go besides the event sink (NATS: ``publish(subject, bytes)``)."""

    async def publish(self, subject: str, payload: bytes) -> None: ...


@dataclass(frozen=True)
class SourceInfo:
    id: str
    name: str
    labels: Mapping[str, str]


@dataclass
class AlertInputs:
    """A snapshot of everything the rules look at; built by the scheduler each evaluation."""

    now: datetime
    sources: Mapping[str, SourceInfo]
    health: Mapping[str, HealthStatus]
    p95_ms: Mapping[tuple[str, float], float] = field(default_factory=dict)  # (source, window_s)
    discovery_streaks: Mapping[str, int] = field(default_factory=dict)
    breaking_drift: Mapping[tuple[str, float], int] = field(
        default_factory=dict
    )  # (source, window)
    edge_links: Mapping[str, tuple[str, datetime]] = field(
        default_factory=dict
    )  # node: (state, since)


@dataclass(frozen=True)
class _Hit:
    subject: str
    source_id: str | None
    value: float
    message: str


def _matches(rule: AlertRule, info: SourceInfo) -> bool:
    return all(info.labels.get(k) == v for k, v in rule.labels.items())


def _hits(rule: AlertRule, inp: AlertInputs) -> list[_Hit]:
    out: list[_Hit] = []
    m, th = rule.metric, rule.threshold
    if m == "edge_offline":
        for node, (state, since) in inp.edge_links.items():
            mins = (inp.now - since).total_seconds() / 60
            if state != "up" and mins >= th:
                out.append(_Hit(f"edge:{node}", None, round(mins, 2),
                                f"edge node {node} has been {state} for {mins:.1f} min"))  # fmt: skip
        return out
    for sid, info in inp.sources.items():
        if not _matches(rule, info):
            continue
        if m == "source_down":
            st = inp.health.get(sid)
            if st is not None and st.state == "down":
                mins = (inp.now - st.since).total_seconds() / 60
                if mins >= th:
                    out.append(_Hit(sid, sid, round(mins, 2), f"{info.name} has been down for "
                                    f"{mins:.1f} min: {st.last_error or 'no answer'}"))  # fmt: skip
        elif m == "latency_p95":
            p95 = inp.p95_ms.get((sid, rule.window_s))
            if p95 is not None and p95 >= th:
                out.append(_Hit(sid, sid, p95, f"{info.name}: p95 check latency {p95:.0f} ms "
                                f">= {th:g} ms over {rule.window_s:g}s"))  # fmt: skip
        elif m == "discovery_failing":
            n = inp.discovery_streaks.get(sid, 0)
            if n >= th:
                out.append(_Hit(sid, sid, n, f"{info.name}: discovery failed {n} times in a row"))
        elif m == "breaking_drift":
            n = inp.breaking_drift.get((sid, rule.window_s), 0)
            if n >= th:
                out.append(_Hit(sid, sid, n, f"{info.name}: {n} breaking schema changes "
                                f"in the last {rule.window_s:g}s"))  # fmt: skip
    return out


class AlertEngine:
    """Evaluates rules against :class:`AlertInputs`; fires and resolves, deduplicated."""

    def __init__(
        self,
        rules: Sequence[AlertRule],
        store: AlertStore,
        *,
        sink: EventSink | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.rules = list(rules)
        self.store = store
        self.sink = sink
        self.notifier = notifier
        self.active: dict[str, AlertRecord] = {a.key: a for a in store.open_alerts()}

    def evaluate(self, inp: AlertInputs) -> tuple[list[AlertRecord], list[AlertRecord]]:
        """Returns (fired, resolved). Blocking (store writes): call on a worker thread."""
        fired: list[AlertRecord] = []
        resolved: list[AlertRecord] = []
        current: set[str] = set()
        by_rule = {r.name: r for r in self.rules}
        for rule in self.rules:
            for hit in _hits(rule, inp):
                key = f"{rule.name}:{hit.subject}"
                current.add(key)
                if key in self.active:
                    continue  # dedup: still firing
                rec = AlertRecord(
                    id=str(uuid.uuid4()), rule=rule.name, key=key, subject=hit.subject,
                    source_id=hit.source_id, severity=rule.severity, status="firing",
                    value=hit.value, message=hit.message, fired_at=inp.now,
                    data={"metric": rule.metric, "threshold": rule.threshold,
                          "source_name": inp.sources[hit.source_id].name if hit.source_id else None},
                )  # fmt: skip
                self.store.fire_alert(rec)
                self.active[key] = rec
                fired.append(rec)
        for key in list(self.active):
            if key in current:
                continue
            # The condition cleared (or its rule / source is gone): resolve once.
            rec = self.active.pop(key)
            self.store.resolve_alert(rec.id, at=inp.now)
            resolved.append(rec.model_copy(update={"status": "resolved", "resolved_at": inp.now}))
        for rec in fired:
            self._emit("alert.fired", rec, by_rule.get(rec.rule))
        for rec in resolved:
            self._emit("alert.resolved", rec, by_rule.get(rec.rule))
        return fired, resolved

    def _emit(self, kind: str, rec: AlertRecord, rule: AlertRule | None) -> None:
        event = Event(type=kind, source_id=rec.source_id, at=rec.resolved_at or rec.fired_at,
                      data=rec.model_dump(mode="json"))  # fmt: skip
        if self.sink is not None:
            self.sink(event)
        if self.notifier is not None:
            self.notifier.submit(event, rule.webhooks if rule else ())


class AlertNotifier:
    """Delivers alert events to NATS and webhooks from background tasks.

    ``submit`` never waits: events go to a bounded queue (oldest dropped when full, counted);
    one worker publishes to NATS in order and starts a task per webhook delivery, which retries
    with exponential backoff (``webhook_backoff_s * 2**attempt``) up to ``webhook_retries``.

    Args:
        settings: the ``health`` section (webhooks, timeouts, retries, subject prefix).
        publisher: NATS (or any) publisher; None skips NATS.
        post: async ``(url, json_body, timeout_s) -> status``; default: httpx.
        on_result: ``(channel, outcome)`` callback for metrics.
    """

    def __init__(
        self,
        settings: HealthSettings,
        *,
        publisher: Publisher | None = None,
        post: Callable[[str, bytes, float], Awaitable[int]] | None = None,
        on_result: Callable[[str, str], None] | None = None,
        queue_size: int = 10_000,
        max_parallel: int = 32,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self._post = post or self._httpx_post
        self.on_result = on_result or (lambda _c, _o: None)
        self._queue: asyncio.Queue[tuple[Event, tuple[str, ...]]] = asyncio.Queue(queue_size)
        self._parallel = asyncio.Semaphore(max_parallel)
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._client: Any = None
        self.delivered: list[dict[str, Any]] = []  # bounded log of outcomes, newest last
        self.dropped = 0

    def submit(self, event: Event, extra_webhooks: Sequence[str] = ()) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self.on_result("queue", "dropped")
        self._queue.put_nowait((event, tuple(extra_webhooks)))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            event, extra = await self._queue.get()
            body = event.model_dump_json().encode()
            rule = str(event.data.get("rule", "unknown"))
            if self.publisher is not None:
                subject = f"{self.settings.nats_subject_prefix}.{rule}"
                try:
                    await asyncio.wait_for(self.publisher.publish(subject, body), timeout=5)
                    self.on_result("nats", "ok")
                except Exception as exc:
                    log.warning("alert to NATS %s failed: %s", subject, type(exc).__name__)
                    self.on_result("nats", "error")
            for url in dict.fromkeys([*self.settings.webhooks, *extra]):
                task = asyncio.get_running_loop().create_task(self._deliver(url, body, rule))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes, rule: str) -> None:
        s = self.settings
        async with self._parallel:
            for attempt in range(s.webhook_retries + 1):
                outcome = "error"
                try:
                    status = await asyncio.wait_for(
                        self._post(url, body, s.webhook_timeout_s), timeout=s.webhook_timeout_s + 1
                    )
                    outcome = "ok" if 200 <= status < 300 else f"http_{status}"
                except TimeoutError:
                    outcome = "timeout"
                except Exception as exc:  # httpx.ReadTimeout and friends count as timeouts
                    name = type(exc).__name__
                    outcome = "timeout" if "Timeout" in name else name
                self._log(url, rule, attempt, outcome)
                if outcome == "ok":
                    self.on_result("webhook", "ok")
                    return
                if attempt < s.webhook_retries:
                    await asyncio.sleep(s.webhook_backoff_s * (2**attempt))
            self.on_result("webhook", "failed")
            log.warning(
                "alert webhook gave up after %d attempts (rule %s)", s.webhook_retries + 1, rule
            )

    def _log(self, url: str, rule: str, attempt: int, outcome: str) -> None:
        from datawave.datasource.errors import redact

        self.delivered.append({"url": redact(url), "rule": rule, "attempt": attempt,
                               "outcome": outcome, "at": datetime.now(UTC).isoformat()})  # fmt: skip
        del self.delivered[:-1000]

    async def _httpx_post(self, url: str, body: bytes, timeout_s: float) -> int:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=timeout_s)
        resp = await self._client.post(url, content=body,
                                       headers={"content-type": "application/json"})  # fmt: skip
        return int(resp.status_code)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until queued deliveries are done (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (  # noqa: ASYNC110 - polls two conditions, one of them a task set
            not self._queue.empty() or self._tasks
        ) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._worker is not None:
            self._worker.cancel()
        if self._client is not None:
            await self._client.aclose()


class NatsPublisher:
    """Publishes to a NATS server at ``url``, connecting lazily and reconnecting."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._nc: Any = None

    async def publish(self, subject: str, payload: bytes) -> None:
        import nats

        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(self.url, connect_timeout=2, max_reconnect_attempts=-1)
        await self._nc.publish(subject, payload)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
