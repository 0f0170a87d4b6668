"""The deployed HealthScheduler actor on the session core: sweeps through the owner actors."""

from __future__ import annotations

import uuid

import pytest
import ray

from datawave.datasource.actors.factory import CORE_NAME, HEALTH_NAME, JOBS_NAME, owner_name
from datawave.datasource.actors.metrics import merge_expositions

pytestmark = pytest.mark.ray


def test_scheduler_actor_sweeps_and_exposes_metrics(client, pg_db, closed_port):
    ns = client.settings.ray.namespace
    sched = ray.get_actor(HEALTH_NAME, namespace=ns)
    assert ray.get(sched.status.remote())["running"] is True
    seq = ray.get(sched.since.remote(-1, 0))["seq"]  # follow events from now, as the API does
    label = uuid.uuid4().hex[:6]
    good = [client.register(f"h-{label}-{i}", "postgresql", pg_db.config(auth="none"),
                            labels={"hc": label}) for i in range(4)]  # fmt: skip
    host, port = closed_port
    bad = client.register(f"h-{label}-bad", "postgresql",
                          {"host": host, "port": port, "user": "x", "auth": "none"})  # fmt: skip
    summary = ray.get(sched.sweep.remote(), timeout=120)
    assert summary["checked"] >= 5
    assert all(client.store.get_health(g.id).state == "healthy" for g in good)
    assert client.store.get_health(bad.id).state == "down"
    assert client.get(bad.id).health == "down"  # mirrored for list filters
    assert {s.id for s in client.sources(health="down")} >= {bad.id}
    texts = [ray.get(sched.metrics_text.remote())]  # one exposition per process
    texts += [ray.get(ray.get_actor(owner_name(p), namespace=ns).metrics_text.remote())
              for p in range(client.processes)]  # fmt: skip
    merged = merge_expositions(texts).decode()
    assert 'datawave_sources{location="core",state="down"}' in merged
    assert "datawave_health_checks_total" in merged
    assert f'datawave_source_queries_total{{kind="check",source="{bad.name}"}} ' in merged
    events: list[dict[str, object]] = []
    for _ in range(20):
        got = ray.get(sched.since.remote(seq, 2.0), timeout=30)
        events += got["events"]
        seq = got["seq"]
        if any(e["type"] == "health.changed" and e["source_id"] == bad.id for e in events):
            break
    else:
        pytest.fail(f"no health.changed event for {bad.id} in {len(events)} events")


def test_one_core_process_hosts_the_services_and_every_shard(client):
    """The default layout (owners.processes = 0): the job manager and the health scheduler are
    one actor, which also answers for every shard; each shard is still checked as its own."""
    ns = client.settings.ray.namespace
    core = ray.get_actor(CORE_NAME, namespace=ns)
    assert client.processes == 0
    assert ray.get_actor(JOBS_NAME, namespace=ns)._actor_id == core._actor_id
    assert ray.get_actor(HEALTH_NAME, namespace=ns)._actor_id == core._actor_id
    info = ray.get(core.ping.remote())
    assert info["shards"] == list(range(client.shards))
    pings = [ray.get(client.owner_actor(s).call.remote(s, "ping")) for s in range(client.shards)]
    assert [p["shard"] for p in pings] == list(range(client.shards))
    assert {p["pid"] for p in pings} == {info["pid"]}
    with pytest.raises(ValueError):
        ray.get_actor(owner_name(0), namespace=ns)  # no owner process of its own


def _dw(core_env, *args: str) -> str:
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("datawave")
    out = subprocess.run(
        [str(exe), *args], env=core_env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_health_alerts_report(client, core_env, pg_db):
    import csv
    import io
    import json

    rec = client.register(f"cli-{uuid.uuid4().hex[:6]}", "postgresql", pg_db.config(auth="none"))
    fleet = json.loads(_dw(core_env, "health", "--sweep", "--json"))
    assert fleet["states"].get("healthy", 0) >= 1
    one = json.loads(_dw(core_env, "health", rec.name, "--json"))
    assert one["status"]["state"] == "healthy" and one["summary"]["checks"] >= 1
    assert isinstance(
        json.loads(_dw(core_env, "alerts", "list", "--status", "all", "--json")), list
    )
    rows = list(csv.DictReader(io.StringIO(_dw(core_env, "report", "--format", "csv"))))
    mine = [r for r in rows if r["name"] == rec.name]
    assert mine and int(mine[0]["checks"]) >= 1
    assert json.loads(_dw(core_env, "report", "--format", "json", "--top", "3")).__len__() <= 3
