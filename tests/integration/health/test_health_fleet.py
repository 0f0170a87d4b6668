"""Health engine end to end with real sources behind loopback proxies (no Ray: owners in process)."""

from __future__ import annotations

import asyncio
import json
import time

from datawave.datasource.models import HealthState
from tests.fixtures.services import PG_HOST, PG_PORT, require_service

DOWN_NOW = {"name": "down-now", "metric": "source_down", "threshold": 0, "severity": "critical"}


def _pg(pg_db, port: int, **extra):
    return {**pg_db.config(auth="none", port=port, connect_timeout_s=2), **extra}


async def test_source_down_alert_fires_once_and_resolves(fleet_factory, proxy_factory, pg_db, hook):
    proxy = proxy_factory((PG_HOST, PG_PORT))
    fleet = fleet_factory(rise=2, fall=2, rules=[DOWN_NOW], webhooks=[hook.url])
    rec = await fleet.register("via-proxy", "postgresql", _pg(pg_db, proxy.port))
    sch = fleet.scheduler
    await sch.sweep()
    assert sch.engine.status(rec.id).state == "healthy"
    proxy.down()
    await sch.sweep()
    assert sch.engine.status(rec.id).state == "healthy"  # one bad result: hysteresis holds
    for _ in range(3):
        await sch.sweep()
    assert sch.engine.status(rec.id).state == "down"
    assert fleet.store.get_source(rec.id).health == "down"
    firing = fleet.store.list_alerts(status="firing")
    assert [(a.rule, a.source_id) for a in firing] == [("down-now", rec.id)]  # once, deduplicated
    proxy.up()
    for _ in range(2):
        await sch.sweep()
    assert sch.engine.status(rec.id).state == "healthy"
    assert fleet.store.list_alerts(status="firing") == []
    [resolved] = fleet.store.list_alerts(status="resolved")
    assert resolved.resolved_at is not None
    kinds = [e.type for e in sch.drain_events()]
    assert kinds.count("alert.fired") == 1 and kinds.count("alert.resolved") == 1
    assert [k for k in kinds if k == "health.changed"] == ["health.changed"] * 3
    await sch.notifier.drain(10)
    bodies = [json.loads(b) for _, b in hook.hits]
    assert [b["type"] for b in bodies] == ["alert.fired", "alert.resolved"]
    assert bodies[0]["data"]["rule"] == "down-now"
    hist = fleet.store.latency_summary([rec.id])[rec.id]
    assert hist.checks == 7 and hist.down == 4 and hist.uptime == round(3 / 7, 5)


async def test_slow_source_is_degraded(fleet_factory, proxy_factory, pg_db):
    proxy = proxy_factory((PG_HOST, PG_PORT))
    fleet = fleet_factory(rise=1, fall=1, rules=[])
    rec = await fleet.register(
        "slow", "postgresql", _pg(pg_db, proxy.port, degraded_latency_ms=150)
    )
    await fleet.scheduler.sweep()
    assert fleet.scheduler.engine.status(rec.id).state == "healthy"
    proxy.delay_s = 0.2  # each direction: SELECT 1 now takes >= 400 ms
    await fleet.scheduler.sweep()
    st = fleet.scheduler.engine.status(rec.id)
    assert st.state == "degraded" and st.last_latency_ms >= 150


async def test_flapping_source_does_not_spam(fleet_factory, proxy_factory, pg_db):
    proxy = proxy_factory((PG_HOST, PG_PORT))
    fleet = fleet_factory(rise=3, fall=3, rules=[DOWN_NOW])
    rec = await fleet.register("flappy", "postgresql", _pg(pg_db, proxy.port))
    await fleet.scheduler.sweep()
    for i in range(8):
        (proxy.down if i % 2 == 0 else proxy.up)()
        await fleet.scheduler.sweep()
    events = fleet.scheduler.drain_events()
    assert fleet.scheduler.engine.status(rec.id).state == "healthy"
    assert [e.type for e in events if e.type.startswith("alert.")] == []
    assert len([e for e in events if e.type == "health.changed"]) == 1  # unknown -> healthy only
    assert fleet.store.list_alerts() == []


async def test_hanging_check_times_out_and_sweep_finishes(fleet_factory, black_hole, pg_db):
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    host, port = black_hole
    fleet = fleet_factory(rise=1, fall=1, rules=[])
    hung = await fleet.register("hung", "postgresql",
                                {"host": host, "port": port, "user": "x", "auth": "none",
                                 "connect_timeout_s": 30},
                                **{"health.timeout_s": "1"})  # fmt: skip
    ok = await fleet.register("fine", "postgresql", pg_db.config(auth="none"))
    t0 = time.monotonic()
    summary = await fleet.scheduler.sweep()
    assert time.monotonic() - t0 < 10
    assert summary["checked"] == 2
    st = fleet.scheduler.engine.status(hung.id)
    assert st.state == "down" and "timed out after 1s" in (st.last_error or "")
    assert fleet.scheduler.engine.status(ok.id).state == "healthy"


async def test_webhook_500_and_hang_are_retried_without_blocking(fleet_factory, closed_port, hook):
    host, port = closed_port
    fleet = fleet_factory(rise=1, fall=1, rules=[DOWN_NOW], webhooks=[hook.url],
                          webhook_timeout_s=0.5, webhook_retries=4, webhook_backoff_s=0.1)  # fmt: skip
    hook.statuses = [500, 500]
    hook.hang_s = 0.0
    await fleet.register("refused", "postgresql",
                         {"host": host, "port": port, "user": "x", "auth": "none"})  # fmt: skip
    await fleet.scheduler.sweep()
    await fleet.scheduler.notifier.drain(10)
    outcomes = [d["outcome"] for d in fleet.scheduler.notifier.delivered]
    assert outcomes == ["http_500", "http_500", "ok"]
    gaps = [b - a for (a, _), (b, _) in zip(hook.hits, hook.hits[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # exponential backoff
    # A hanging receiver: the sweep that fires must not wait for it.
    hook.hang_s = 3.0
    await fleet.register("refused-2", "postgresql",
                         {"host": host, "port": port, "user": "y", "auth": "none"})  # fmt: skip
    t0 = time.monotonic()
    await fleet.scheduler.sweep()
    assert time.monotonic() - t0 < 2.5
    await asyncio.sleep(2.0)
    timeouts = [d for d in fleet.scheduler.notifier.delivered[3:] if d["outcome"] == "timeout"]
    assert len(timeouts) >= 2  # retried


async def test_many_sources_one_target_share_one_probe(fleet_factory, pg_db):
    fleet = fleet_factory(rise=1, fall=1, rules=[], per_host_concurrency=4)
    recs = [await fleet.register(f"same-{i}", "postgresql", pg_db.config(auth="none"))
            for i in range(60)]  # fmt: skip
    summary = await fleet.scheduler.sweep()
    assert summary["results"] == {"healthy": 60}
    probes = [o.probes for o in fleet.owners]
    assert sum(len(p) for p in probes) <= 2  # one kept probe per owner for the shared target
    assert sum(p.stats.probes for p in probes) < 60
    with __import__("psycopg").connect(pg_db.dsn) as conn:
        n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                         "AND application_name LIKE 'datawave%%'", (pg_db.dbname,)).fetchone()[0]  # fmt: skip
    assert n <= 2
    assert all(fleet.scheduler.engine.status(r.id).state == HealthState.HEALTHY.value for r in recs)


async def test_metrics_are_exposed_and_correct(fleet_factory, pg_db, closed_port):
    from prometheus_client.parser import text_string_to_metric_families

    host, port = closed_port
    fleet = fleet_factory(rise=1, fall=1, rules=[DOWN_NOW])
    for o in fleet.owners:
        o.on_checks = fleet.scheduler.metrics.record_checks  # one registry for the whole fleet
    for i in range(3):
        await fleet.register(f"up-{i}", "postgresql", pg_db.config(auth="none"))
    await fleet.register(
        "dead", "postgresql", {"host": host, "port": port, "user": "x", "auth": "none"}
    )
    await fleet.scheduler.sweep()
    text = (await fleet.scheduler.metrics_text()).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    assert samples[("datawave_sources", (("location", "core"), ("state", "healthy")))] == 3
    assert samples[("datawave_sources", (("location", "core"), ("state", "down")))] == 1
    assert (
        samples[("datawave_health_checks_total", (("state", "healthy"), ("type", "postgresql")))]
        == 3
    )
    assert (
        samples[("datawave_health_checks_total", (("state", "down"), ("type", "postgresql")))] == 1
    )
    assert samples[("datawave_health_check_duration_seconds_count", (("type", "postgresql"),))] >= 3
    assert (
        samples[("datawave_alerts_firing", (("rule", "down-now"), ("severity", "critical")))] == 1
    )
    assert samples[("datawave_health_sweep_duration_seconds_count", ())] == 1
