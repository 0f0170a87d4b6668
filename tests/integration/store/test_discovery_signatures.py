"""Rediscovery builds nothing unchanged: signatures through the engine, on both store backends.

A real PostgreSQL source (``pg_db``) is discovered into a SQLite file store and a PostgreSQL
store. After every change the stored records must equal those of a fresh full discovery (the
skipped tables were truly unchanged), only the changed tables may have been rebuilt, and the
drift must be what a full rebuild reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.connectors.postgresql import PostgresConnector
from datawave.datasource.engines import DiscoveryEngine, SourceService
from datawave.datasource.engines.fingerprint import fingerprint
from datawave.datasource.models import DriftKind, RunStatus, TableInfo
from datawave.datasource.store import AesGcmSealer, MetadataStore
from tests.fixtures.services import PgDatabase, pg_admin, scratch_pg_database
from tests.fixtures.static_connector import StaticConnector, result, table

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE parent (id bigint PRIMARY KEY, code text UNIQUE, m mood DEFAULT 'ok');
CREATE TABLE child (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent (id), note text);
CREATE TABLE other (id int, label text);
CREATE VIEW v_child AS SELECT id, note FROM child;
CREATE TABLE ev (id bigint, at date) PARTITION BY RANGE (at);
CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
"""
TABLES = 6


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_store_url")
    s = MetadataStore.open(url, sealer=AesGcmSealer(b"k" * 32))
    yield s
    s.close()


def _register(store: MetadataStore, db: PgDatabase, **config: Any) -> tuple[str, Any]:
    svc = SourceService(store, ConnectorRegistry(), shards=1)
    rec = svc.register(
        {"name": f"src-{db.dbname}", "type": "postgresql",
         "config": db.config(auth="none", **config)}
    )  # fmt: skip
    return rec.id, svc.connector_for(rec)


async def _discovered_once(
    store: MetadataStore, db: PgDatabase
) -> tuple[str, Any, DiscoveryEngine]:
    """:data:`SCHEMA` in ``db``, registered and discovered once into ``store``."""
    db.execute(SCHEMA)
    source_id, conn = _register(store, db)
    engine = DiscoveryEngine(store)
    await engine.run(source_id, conn)
    return source_id, conn, engine


def _structure(t: TableInfo) -> dict[str, Any]:
    return t.model_dump(exclude={"row_estimate", "size_bytes"})


async def _assert_store_matches_a_full_discovery(
    store: MetadataStore, source_id: str, db: PgDatabase
) -> None:
    fresh = await PostgresConnector.create(db.config(auth="none")).discover()
    stored = store.list_tables(source_id, limit=1000)
    assert [_structure(t) for t in stored] == [_structure(t) for t in fresh.tables]
    state = store.load_table_state(source_id)
    for t in fresh.tables:
        kept = state[t.key]
        assert kept.fingerprint == fingerprint(t)
        assert kept.signature == fresh.signatures[t.qualified_name]


async def test_rediscovery_skips_unchanged_and_rebuilds_changed(
    store: MetadataStore, pg_db: PgDatabase
) -> None:
    pg_db.execute(SCHEMA)
    source_id, conn = _register(store, pg_db)
    engine = DiscoveryEngine(store)

    first = await engine.run(source_id, conn)
    assert first.status is RunStatus.SUCCEEDED
    assert (first.counters["added"], first.counters["skipped"]) == (TABLES, 0)
    await _assert_store_matches_a_full_discovery(store, source_id, pg_db)

    again = await engine.run(source_id, conn)
    assert again.counters["rows_written"] == 0
    assert (again.counters["skipped"], again.counters["unchanged"]) == (TABLES, TABLES)
    assert again.counters["tables"] == TABLES
    assert again.counters["columns"] == first.counters["columns"]
    assert again.counters["views"] == first.counters["views"] == 1
    assert again.counters["partitions"] == first.counters["partitions"] == 1

    for statement, rebuilt, drift in [
        ("ALTER TABLE parent ALTER COLUMN code TYPE varchar(20)", {"parent"},
         {(DriftKind.COLUMN_TYPE_CHANGED, "code")}),
        ("ALTER TABLE child ALTER COLUMN note SET NOT NULL", {"child"},
         {(DriftKind.COLUMN_NULLABILITY_CHANGED, "note")}),
        ("ALTER TABLE other ALTER COLUMN label SET DEFAULT 'x'", {"other"},
         {(DriftKind.TABLE_CHANGED, None)}),
        ("COMMENT ON COLUMN other.label IS 'a label'", {"other"},
         {(DriftKind.TABLE_CHANGED, None)}),
        ("ALTER TABLE other ADD PRIMARY KEY (id)", {"other"},
         {(DriftKind.KEY_CHANGED, None), (DriftKind.COLUMN_NULLABILITY_CHANGED, "id"),
          (DriftKind.TABLE_CHANGED, None)}),
        ("CREATE INDEX other_label ON other (label) WHERE label <> ''", {"other"},
         {(DriftKind.TABLE_CHANGED, None)}),
        ("ALTER TYPE mood ADD VALUE 'glad'", {"parent"},
         {(DriftKind.COLUMN_TYPE_CHANGED, "m")}),
        ("CREATE OR REPLACE VIEW v_child AS SELECT id, note, 1 AS one FROM child", {"v_child"},
         {(DriftKind.COLUMN_ADDED, "one"), (DriftKind.TABLE_CHANGED, None)}),
        ("ALTER TABLE ev DETACH PARTITION ev_2025", {"ev_2025"},
         {(DriftKind.TABLE_CHANGED, None)}),
    ]:  # fmt: skip
        pg_db.execute(statement)
        run = await engine.run(source_id, conn)
        assert run.status is RunStatus.SUCCEEDED, statement
        assert run.counters["changed"] == len(rebuilt), statement
        assert run.counters["skipped"] == TABLES - len(rebuilt), statement
        assert run.counters["tables"] == TABLES, statement
        events = store.list_drift(source_id, run_id=run.run_id)
        assert {e.table.rsplit(".", 1)[-1] for e in events} == rebuilt, statement
        assert {(e.kind, e.column) for e in events} == drift, statement
        await _assert_store_matches_a_full_discovery(store, source_id, pg_db)

    # Unchanged again: nothing built, nothing written.
    quiet = await engine.run(source_id, conn)
    assert (quiet.counters["rows_written"], quiet.counters["skipped"]) == (0, TABLES)


async def test_new_and_dropped_tables_next_to_skipped_ones(
    store: MetadataStore, pg_db: PgDatabase
) -> None:
    source_id, conn, engine = await _discovered_once(store, pg_db)
    pg_db.execute("CREATE TABLE fresh (id int); DROP TABLE other")
    run = await engine.run(source_id, conn)
    assert (run.counters["added"], run.counters["removed"]) == (1, 1)
    assert run.counters["skipped"] == TABLES - 1
    kinds = {(e.kind, e.table.rsplit(".", 1)[-1]) for e in store.list_drift(source_id)}
    assert kinds == {(DriftKind.TABLE_ADDED, "fresh"), (DriftKind.TABLE_REMOVED, "other")}
    await _assert_store_matches_a_full_discovery(store, source_id, pg_db)


async def test_statistics_of_skipped_tables_are_updated(
    store: MetadataStore, pg_db: PgDatabase
) -> None:
    pg_db.execute(SCHEMA)
    pg_db.execute("ANALYZE")
    source_id, conn = _register(store, pg_db)
    engine = DiscoveryEngine(store)
    await engine.run(source_id, conn)
    pg_db.execute("INSERT INTO other SELECT g, 'x' FROM generate_series(1, 5000) g; ANALYZE")
    run = await engine.run(source_id, conn)
    assert run.counters["skipped"] == TABLES and run.counters["changed"] == 0
    assert run.counters["rows_written"] >= 1  # the statistics update of `other`
    assert store.list_drift(source_id) == []
    (other,) = [t for t in store.list_tables(source_id) if t.name == "other"]
    assert other.row_estimate == 5000
    assert other.size_bytes is not None and other.size_bytes > 8192


async def test_partial_and_failed_runs_never_delete(
    store: MetadataStore, pg_db: PgDatabase
) -> None:
    pg_db.execute(SCHEMA)
    with scratch_pg_database("dw_t2") as other_db:
        other_db.execute("CREATE TABLE hidden (id int PRIMARY KEY)")
        role = f"dw_sig_{pg_db.dbname[-8:]}"
        pg_admin(f'CREATE ROLE "{role}" LOGIN')
        try:
            source_id, conn = _register(
                store, pg_db, user=role, databases=[pg_db.dbname, other_db.dbname]
            )
            engine = DiscoveryEngine(store)
            first = await engine.run(source_id, conn)
            assert first.status is RunStatus.SUCCEEDED
            before = store.asset_counts(source_id)
            assert before["tables"] == TABLES + 1

            # The second database cannot be read any more: partial, nothing of it deleted,
            # the first one's tables skipped and kept.
            pg_admin(
                f'REVOKE CONNECT ON DATABASE "{other_db.dbname}" FROM PUBLIC',
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
            )
            partial = await engine.run(source_id, conn)
            assert partial.status is RunStatus.PARTIAL
            assert partial.counters["skipped"] == TABLES
            assert partial.counters["removed"] == 0 and partial.counters["changed"] == 0
            assert store.asset_counts(source_id) == before
            assert store.list_drift(source_id) == []

            # The source cannot be reached at all: failed, everything kept.
            closed = PostgresConnector.create(pg_db.config(auth="none", user=role, port=1))
            failed = await engine.run(source_id, closed)
            assert failed.status is RunStatus.FAILED
            assert store.asset_counts(source_id) == before
            assert store.list_drift(source_id) == []
        finally:
            pg_admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
                f'DROP ROLE IF EXISTS "{role}"',
            )


# --------------------------------------------------------------------------- engine rules


@pytest.fixture
def service(store: MetadataStore) -> SourceService:
    reg = ConnectorRegistry()
    reg.register(StaticConnector)
    return SourceService(store, reg, shards=1)


async def test_signatures_are_stored_updated_and_cleared(
    store: MetadataStore, service: SourceService
) -> None:
    rec = service.register({"name": "sig", "type": "static", "config": {}})
    conn = StaticConnector.create({})
    engine = DiscoveryEngine(store)
    users = table("app", "users", [("id", "integer", False)])
    orders = table("app", "orders", [("id", "integer", False)])
    qn = {t.name: t.qualified_name for t in (users, orders)}

    def signed(tables: list[TableInfo], signatures: dict[str, str], **kw: Any) -> Any:
        listing = result(tables, extra_schemas=("app",))
        return listing.model_copy(update={"signatures": signatures, **kw})

    conn.result = signed([users, orders], {qn["users"]: "a" * 32, qn["orders"]: "b" * 32})
    await engine.run(rec.id, conn)
    state = store.load_table_state(rec.id)
    assert {k[2]: s.signature for k, s in state.items()} == {"users": "a" * 32, "orders": "b" * 32}

    # Same records from rows that sign differently: only the signature is written.
    conn.result = signed([users, orders], {qn["users"]: "c" * 32, qn["orders"]: "b" * 32})
    run = await engine.run(rec.id, conn)
    assert run.counters["rows_written"] == 1 and run.counters["changed"] == 0
    assert store.load_table_state(rec.id)[users.key].signature == "c" * 32

    # Unchanged (by signature) tables are kept with fresh statistics, never deleted.
    conn.result = signed(
        [], {}, unchanged={qn["users"]: (10_000, 65536), qn["orders"]: (None, None)}
    )
    run = await engine.run(rec.id, conn)
    assert (run.counters["skipped"], run.counters["removed"]) == (2, 0)
    assert run.counters["rows_written"] == 1  # users' statistics moved; orders' did not
    kept = {t.name: t for t in store.list_tables(rec.id)}
    assert set(kept) == {"users", "orders"} and kept["users"].row_estimate == 10_000
    assert kept["users"].columns == users.columns

    # A record replaced without a signature (a connector that does not sign) clears it.
    users_v2 = table("app", "users", [("id", "bigint", False)])
    conn.result = result([users_v2, orders])
    await engine.run(rec.id, conn)
    state = store.load_table_state(rec.id)
    assert state[users.key].signature is None
    assert state[orders.key].signature == "b" * 32  # same record: its signature still holds


async def test_renaming_a_referenced_column_rebuilds_the_referencing_table(
    store: MetadataStore, pg_db: PgDatabase
) -> None:
    # Referenced column names are part of the referencing table's record (and of its
    # signature): it must change when only the referenced table was altered.
    source_id, conn, engine = await _discovered_once(store, pg_db)
    pg_db.execute("ALTER TABLE parent RENAME COLUMN id TO pid")
    run = await engine.run(source_id, conn)
    assert run.status is RunStatus.SUCCEEDED
    assert run.counters["changed"] == 2
    events = store.list_drift(source_id, run_id=run.run_id)
    assert {e.table.rsplit(".", 1)[-1] for e in events} == {"parent", "child"}
    (child,) = [t for t in store.list_tables(source_id, limit=100) if t.name == "child"]
    assert child.foreign_keys[0].ref_columns == ("pid",)
    await _assert_store_matches_a_full_discovery(store, source_id, pg_db)
