"""Discovery engine + store rules, against both store backends (SQLite file and PostgreSQL)."""

from __future__ import annotations

import pytest

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.engines import DiscoveryEngine, SourceService
from datawave.datasource.errors import Conflict, ConnectorError, ValidationFailed
from datawave.datasource.models import DriftKind, RunStatus
from datawave.datasource.store import AesGcmSealer, MetadataStore
from tests.fixtures.static_connector import StaticConnector, result, table


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> MetadataStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_store_url")
    s = MetadataStore.open(url, sealer=AesGcmSealer(b"k" * 32))
    yield s
    s.close()


@pytest.fixture
def service(store: MetadataStore) -> SourceService:
    reg = ConnectorRegistry()
    reg.register(StaticConnector)
    return SourceService(store, reg, shards=4)


def users_v1():
    return table("app", "users", [("id", "integer", False), ("email", "text", True)])


async def test_first_run_then_unchanged_rerun_writes_nothing(store, service):
    rec = service.register({"name": "s1", "type": "static", "config": {}})
    conn = StaticConnector.create({})
    conn.result = result([users_v1(), table("app", "orders", [("id", "integer", False)])])
    engine = DiscoveryEngine(store)
    first = await engine.run(rec.id, conn)
    assert first.status is RunStatus.SUCCEEDED
    assert first.counters["added"] == 2 and first.counters["rows_written"] > 0
    assert store.asset_counts(rec.id) == {"databases": 1, "schemas": 1, "tables": 2, "columns": 3}
    assert store.list_drift(rec.id) == []  # no drift on the very first snapshot

    again = await engine.run(rec.id, conn)
    assert again.counters["rows_written"] == 0
    assert again.counters["unchanged"] == 2
    assert store.asset_counts(rec.id)["columns"] == 3


async def test_get_runs_reads_many_runs_at_once(store, service):
    rec = service.register({"name": "runs", "type": "static", "config": {}})
    conn = StaticConnector.create({})
    conn.result = result([users_v1()])
    engine = DiscoveryEngine(store)
    done = [await engine.run(rec.id, conn) for _ in range(3)]
    store.start_run("still-running", rec.id, origin="edge:site-a")
    wanted = [r.run_id for r in done] + ["still-running", "no-such-run", done[0].run_id]
    found = store.get_runs(wanted * 200)  # repeated ids read once; unknown ones left out
    assert set(found) == {r.run_id for r in done} | {"still-running"}
    assert all(found[r.run_id].status is RunStatus.SUCCEEDED for r in done)
    assert found["still-running"].status is RunStatus.RUNNING
    assert found[done[1].run_id] == store.get_run(done[1].run_id)


async def test_drift_events_typed_and_flagged(store, service):
    rec = service.register({"name": "s2", "type": "static", "config": {}})
    conn = StaticConnector.create({})
    engine = DiscoveryEngine(store)
    conn.result = result([users_v1(), table("app", "old", [("id", "integer", False)])])
    await engine.run(rec.id, conn)
    users_v2 = table(
        "app", "users",
        [("id", "bigint", False), ("email", "text", False), ("name", "text", True)],
        pk=("id", "email"),
    )  # fmt: skip
    conn.result = result([users_v2, table("app", "new", [("id", "integer", False)])])
    run = await engine.run(rec.id, conn)
    events = store.list_drift(rec.id)
    kinds = {(e.kind, e.column): e.breaking for e in events}
    assert kinds[(DriftKind.COLUMN_TYPE_CHANGED, "id")] is True
    assert kinds[(DriftKind.COLUMN_NULLABILITY_CHANGED, "email")] is True
    assert kinds[(DriftKind.COLUMN_ADDED, "name")] is False
    assert kinds[(DriftKind.KEY_CHANGED, None)] is True
    assert kinds[(DriftKind.TABLE_ADDED, None)] is False
    assert kinds[(DriftKind.TABLE_REMOVED, None)] is True
    assert run.drift_events == len(events)
    assert {e.kind for e in store.list_drift(rec.id, breaking=False)} == {
        DriftKind.COLUMN_ADDED, DriftKind.TABLE_ADDED
    }  # fmt: skip
    stored = store.get_table(rec.id, "db", "app", "users")
    assert [c.data_type for c in stored.columns] == ["bigint", "text", "text"]


async def test_failed_run_keeps_everything(store, service):
    rec = service.register({"name": "s3", "type": "static", "config": {}})
    conn = StaticConnector.create({})
    engine = DiscoveryEngine(store)
    conn.result = result([users_v1()])
    await engine.run(rec.id, conn)
    before = store.asset_counts(rec.id)
    conn.error = ConnectorError("server closed the connection unexpectedly")
    run = await engine.run(rec.id, conn)
    assert run.status is RunStatus.FAILED
    assert "closed the connection" in run.errors[0]
    assert store.asset_counts(rec.id) == before


async def test_partial_listing_never_deletes(store, service):
    rec = service.register({"name": "s4", "type": "static", "config": {}})
    conn = StaticConnector.create({})
    engine = DiscoveryEngine(store)
    conn.result = result([users_v1(), table("billing", "invoices", [("id", "integer", False)])])
    await engine.run(rec.id, conn)
    # billing's table listing failed this time: it is absent but NOT confirmed gone.
    conn.result = result(
        [users_v1()],
        complete_schemas={("db", "app")},
        extra_schemas=("billing",),
        failures=("billing: permission denied",),
    )
    run = await engine.run(rec.id, conn)
    assert run.status is RunStatus.PARTIAL
    assert store.asset_counts(rec.id)["tables"] == 2
    assert store.list_drift(rec.id) == []
    # Now a complete listing of billing without the table: removed, with a breaking event.
    conn.result = result([users_v1()], complete_schemas={("db", "app"), ("db", "billing")})
    await engine.run(rec.id, conn)
    assert store.asset_counts(rec.id)["tables"] == 1
    (ev,) = store.list_drift(rec.id)
    assert ev.kind is DriftKind.TABLE_REMOVED and ev.breaking


async def test_registration_validation_conflict_and_secrets(store, service):
    with pytest.raises(ValidationFailed) as e:
        service.register({"name": "bad", "type": "static", "config": {"nope": 1}})
    assert e.value.errors[0]["field"] == "config.nope"
    with pytest.raises(ValidationFailed) as e:
        service.register({"name": "bad name!", "type": "static"})
    assert e.value.errors[0]["field"] == "name"
    assert store.count_sources() == 0  # nothing registered
    service.register({"name": "dup", "type": "static"})
    with pytest.raises(Conflict):
        service.register({"name": "dup", "type": "static"})
    assert store.count_sources() == 1


async def test_update_with_version_and_soft_delete(store, service):
    rec = service.register({"name": "u1", "type": "static", "labels": {"env": "dev"}})
    upd = service.update(rec.id, {"labels": {"env": "prod"}}, expected_version=rec.version)
    assert upd.version == rec.version + 1 and upd.labels == {"env": "prod"}
    with pytest.raises(Conflict):
        service.update(rec.id, {"description": "x"}, expected_version=rec.version)
    store.delete_source(rec.id)
    assert store.find_source("u1") is None
    service.register({"name": "u1", "type": "static"})  # the name is free again
    store.delete_source(rec.id, purge=True)
    assert store.find_source(rec.id, include_deleted=True) is None
