"""The Ray runtime end to end: owners own sources, bulk jobs, retries after an owner dies."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import ray

from datawave.datasource.errors import Conflict, NotFound, ValidationFailed
from datawave.datasource.models import JobStatus, RunStatus, StepStatus

pytestmark = pytest.mark.ray


def _make_tables(pg_db, n: int, schema: str = "app") -> None:
    stmts = [f'CREATE SCHEMA "{schema}"']
    for i in range(n):
        stmts.append(
            f'CREATE TABLE "{schema}".t{i} (id int PRIMARY KEY, name text NOT NULL, v numeric(10,2))'
        )
    pg_db.execute(";\n".join(stmts))


def _name() -> str:
    return f"src-{uuid.uuid4().hex[:8]}"


def test_register_test_discover_via_owner(client, pg_db):
    _make_tables(pg_db, 5)
    rec = client.register(_name(), "postgresql", pg_db.config(password="pw-never-shown"),
                          labels={"team": "core"})  # fmt: skip
    assert 0 <= rec.owner_shard < client.shards
    assert "password" not in rec.config and rec.secret_fields == ("password",)
    report = client.test(rec.name)
    assert report.ok, report
    assert [s.status for s in report.steps] == [StepStatus.OK] * len(report.steps)
    run = client.discover(rec.name)
    assert run.status is RunStatus.SUCCEEDED
    assert run.counters["tables"] == 5 and run.counters["columns"] == 15
    tables = client.tables(rec.id)
    assert sorted(t.name for t in tables) == [f"t{i}" for i in range(5)]
    rerun = client.discover(rec.id)
    assert rerun.counters["rows_written"] == 0
    assert "pw-never-shown" not in rec.model_dump_json() + report.model_dump_json()


def test_invalid_and_duplicate_registration(client, pg_db):
    name = _name()
    with pytest.raises(ValidationFailed) as e:
        client.register(name, "postgresql", {"host": "127.0.0.1", "port": "x", "user": "u",
                                             "auth": "none"})  # fmt: skip
    assert any(err["field"] == "config.port" for err in e.value.errors)
    with pytest.raises(NotFound):
        client.get(name)  # nothing registered
    client.register(name, "postgresql", pg_db.config(auth="none"))
    with pytest.raises(Conflict):
        client.register(name, "postgresql", pg_db.config(auth="none"))
    assert len([s for s in client.sources() if s.name == name]) == 1


def test_bulk_discover_many_with_failures(client, pg_db, closed_port):
    _make_tables(pg_db, 3)
    label = uuid.uuid4().hex[:6]
    good = [client.register(_name(), "postgresql", pg_db.config(auth="none"),
                            labels={"bulk": label}) for _ in range(6)]  # fmt: skip
    host, port = closed_port
    bad = client.register(_name(), "postgresql",
                          {"host": host, "port": port, "user": "x", "auth": "none",
                           "connect_timeout_s": 2}, labels={"bulk": label})  # fmt: skip
    job = client.discover_many({"labels": {"bulk": label}})
    seen: list[float] = []
    view = job.wait(timeout_s=120, on_progress=lambda v: seen.append(v.progress))
    assert view.status is JobStatus.FAILED  # finished, one item failed
    assert view.total == 7 and view.done == 6 and view.failed == 1
    failed = [i for i in view.items if i.status == "failed"]
    assert [i.source_id for i in failed] == [bad.id]
    assert failed[0].error
    assert all(client.store.asset_counts(g.id)["tables"] == 3 for g in good)
    assert seen and seen[-1] == 1.0


def _wait_running(client, source_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = client.runs(source_id)
        if runs and runs[0].status is RunStatus.RUNNING:
            return
        time.sleep(0.1)
    pytest.fail("discovery never started")


def _in_thread(fn) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["run"] = fn()
        except Exception as exc:  # surfaced by the assertions
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, result


def test_owner_killed_mid_discovery_retries_and_finishes(client, pg_db, proxy_factory):
    """Stall the network path to the source, kill the owner while its discovery waits, then
    let traffic flow: the call is retried on the restarted owner and lands exactly once."""
    _make_tables(pg_db, 40)
    proxy = proxy_factory((pg_db.host, pg_db.port))
    cfg = pg_db.config(auth="none", host="127.0.0.1", port=proxy.port, connect_timeout_s=60)
    rec = client.register(_name(), "postgresql", cfg)
    proxy.pause()
    t, result = _in_thread(lambda: client.discover(rec.id))
    _wait_running(client, rec.id)
    time.sleep(0.5)  # the connector is now blocked on the stalled path
    ray.kill(client.owner_actor(rec.owner_shard), no_restart=False)  # the process hosting it
    time.sleep(1.0)
    proxy.resume()
    t.join(120)
    assert "error" not in result, result.get("error")
    final = result["run"]
    assert final.status is RunStatus.SUCCEEDED
    statuses = [r.status for r in client.runs(rec.id)]
    assert RunStatus.INTERRUPTED in statuses  # the killed attempt is on record
    counts = client.store.asset_counts(rec.id)
    assert counts["tables"] == 40 and counts["columns"] == 120
    names = [t.name for t in client.tables(rec.id, limit=1000, with_columns=False)]
    assert len(names) == len(set(names)) == 40


def test_source_drops_mid_discovery_keeps_metadata(client, pg_db, proxy_factory):
    _make_tables(pg_db, 4)
    proxy = proxy_factory((pg_db.host, pg_db.port))
    cfg = pg_db.config(auth="none", host="127.0.0.1", port=proxy.port, connect_timeout_s=60)
    rec = client.register(_name(), "postgresql", cfg)
    assert client.discover(rec.id).status is RunStatus.SUCCEEDED
    before = client.store.asset_counts(rec.id)
    proxy.pause()
    t, result = _in_thread(lambda: client.discover(rec.id))
    _wait_running(client, rec.id)
    time.sleep(0.5)
    proxy.down()  # the source goes away under the running discovery
    t.join(90)
    assert "error" not in result, result.get("error")
    run = result["run"]
    assert run.status is RunStatus.FAILED and run.errors
    assert client.store.asset_counts(rec.id) == before
