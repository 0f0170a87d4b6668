"""PostgreSQL discovery on two connections sharing one snapshot, and per-table signatures.

Against the real PostgreSQL on this machine. Failure paths are provoked on the real server: a
role limited to one connection, statements that fail there (the SQL constants swapped for one
test with ``monkeypatch``), a snapshot imported after a concurrent change.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import psycopg
import pytest

from datawave.datasource.connectors import pg_catalog as sql
from datawave.datasource.connectors.postgresql import (
    APPLICATION_NAME,
    PostgresConnector,
    _SnapshotReader,
)
from datawave.datasource.models import DiscoveryResult, TableInfo
from tests.fixtures.services import PgDatabase, pg_admin

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE parent (id bigint PRIMARY KEY, code text UNIQUE, m mood DEFAULT 'ok');
CREATE TABLE child (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent (id), note text);
CREATE INDEX child_note ON child (lower(note)) WHERE note IS NOT NULL;
COMMENT ON TABLE child IS 'children';
CREATE VIEW v_child AS SELECT id, note FROM child;
CREATE TABLE ev (id bigint, at date) PARTITION BY RANGE (at);
CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
"""


def _connector(db: PgDatabase, **extra: Any) -> PostgresConnector:
    return PostgresConnector.create(db.config(**{"auth": "none", **extra}))


def _structure(t: TableInfo) -> dict[str, Any]:
    return t.model_dump(exclude={"row_estimate", "size_bytes"})


def _backends(db: PgDatabase) -> int:
    """Discovery connections still open on ``db`` (a closed one's backend exits shortly after
    its client hangs up, so wait a little for the count to settle)."""
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        for _ in range(50):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND application_name = %s",
                (db.dbname, APPLICATION_NAME),
            ).fetchone()
            assert row is not None
            if row[0] == 0:
                break
            time.sleep(0.1)
    return int(row[0])


@pytest.fixture
def one_connection_role(pg_db: PgDatabase) -> Iterator[str]:
    name = f"dw_one_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE ROLE "{name}" LOGIN CONNECTION LIMIT 1')
    try:
        yield name
    finally:
        pg_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'",
            f'DROP ROLE IF EXISTS "{name}"',
        )


async def test_two_connections_read_one_snapshot(pg_db: PgDatabase) -> None:
    pg_db.execute(SCHEMA)
    connector = _connector(pg_db)
    result = await connector.discover()
    assert result.complete and not result.warnings
    # Both connections' statements are counted: the 8 catalog queries, the snapshot export on
    # the first connection and its import on the second.
    assert result.queries_per_database == {pg_db.dbname: len(sql.DATABASE_QUERIES) + 2}
    assert connector.report.connections_opened == 2
    assert {t.name for t in result.tables} == {"parent", "child", "v_child", "ev", "ev_2025"}
    child = next(t for t in result.tables if t.name == "child")
    assert [c.name for c in child.columns] == ["id", "parent_id", "note"]
    assert child.foreign_keys[0].ref_columns == ("id",)
    assert _backends(pg_db) == 0  # both connections closed


async def test_the_imported_snapshot_does_not_see_later_changes(pg_db: PgDatabase) -> None:
    pg_db.execute("CREATE TABLE before (id int)")
    connector = _connector(pg_db)
    main = connector._open(pg_db.dbname, autocommit=False)
    try:
        snapshot = main.fetch(sql.EXPORT_SNAPSHOT)[0][0]
        pg_db.execute("CREATE TABLE after_export (id int); ALTER TABLE before ADD COLUMN x int")
        reader = _SnapshotReader(
            partial(connector._open, pg_db.dbname, autocommit=False),
            snapshot,
            [
                (
                    "SELECT c.relname, a.attname FROM pg_catalog.pg_attribute a"
                    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
                    " WHERE c.relname IN ('before', 'after_export') AND a.attnum > 0",
                    {},
                ),
                ("SELECT 1 / 0", None),
                ("SELECT 1", None),
            ],
        )
        reader.start()
        assert reader.wait_imported(10)
        rows = reader.result(10)
        # The first failure ends the sequence: the aborted transaction runs nothing more.
        with pytest.raises(psycopg.errors.DivisionByZero):
            reader.result(10, 1)
        with pytest.raises(psycopg.errors.DivisionByZero):
            reader.result(10, 2)
        assert reader.abandon() == 3  # SET TRANSACTION SNAPSHOT + the two queries run
    finally:
        main.close()
    assert sorted(rows) == [("before", "id")]  # as of the export, not as of the import


async def test_second_connection_refused_reads_everything_on_the_first(
    pg_db: PgDatabase, one_connection_role: str
) -> None:
    pg_db.execute(SCHEMA)
    expected = await _connector(pg_db).discover()
    connector = _connector(pg_db, user=one_connection_role)
    result = await connector.discover()
    assert result.complete and not result.failures and not result.warnings
    assert [_structure(t) for t in result.tables] == [_structure(t) for t in expected.tables]
    # The export ran, the import never did: the columns were read on the first connection.
    assert result.queries_per_database == {pg_db.dbname: len(sql.DATABASE_QUERIES) + 1}
    assert result.signatures == expected.signatures


async def test_no_snapshot_export_reads_on_one_connection(
    pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_db.execute(SCHEMA)
    expected = await _connector(pg_db).discover()
    monkeypatch.setattr(sql, "EXPORT_SNAPSHOT", "SELECT pg_catalog.no_such_function()")
    connector = _connector(pg_db)
    result = await connector.discover()
    assert result.complete and not result.failures
    assert [_structure(t) for t in result.tables] == [_structure(t) for t in expected.tables]
    assert connector.report.connections_opened == 1
    assert _backends(pg_db) == 0


async def test_failing_statistics_is_a_warning_not_a_failure(
    pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_db.execute(SCHEMA + "INSERT INTO parent SELECT g, g::text FROM generate_series(1, 50) g;")
    pg_db.execute("ANALYZE")
    monkeypatch.setattr(sql, "STATISTICS", "SELECT 1 / 0, %(schemas)s::text[], 0")
    result = await _connector(pg_db).discover()
    assert not result.failures and result.complete
    (warning,) = result.warnings
    assert "statistics missing" in warning and "division by zero" in warning
    # The columns, read on the second connection before the statistics, are all there; the
    # sizes are not.
    parent = next(t for t in result.tables if t.name == "parent")
    assert [c.name for c in parent.columns] == ["id", "code", "m"]
    assert parent.row_estimate is None and parent.size_bytes is None
    assert result.complete_schemas == {(pg_db.dbname, "public")}
    assert _backends(pg_db) == 0


async def test_failing_column_query_fails_the_database_and_closes_both(
    pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_db.execute(SCHEMA)
    monkeypatch.setattr(sql, "COLUMNS", "SELECT 1 / 0 WHERE %(schemas)s::text[] IS NOT NULL")
    connector = _connector(pg_db)
    result = await connector.discover()
    assert not result.complete
    (failure,) = result.failures
    assert pg_db.dbname in failure and "division by zero" in failure
    assert result.tables == () and result.complete_schemas == frozenset()
    assert result.complete_databases == {pg_db.dbname}  # the schema listing did complete
    assert _backends(pg_db) == 0


async def test_statement_timeout_on_the_second_connection_fails_the_database(
    pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_db.execute("CREATE TABLE t (id int)")
    slow = "SELECT pg_catalog.pg_sleep(5), %(schemas)s::text[]"
    monkeypatch.setattr(sql, "COLUMNS", slow)
    result = await _connector(pg_db, step_timeout_s=1).discover()
    (failure,) = result.failures
    assert "statement timeout" in failure or "canceling statement" in failure
    assert result.tables == ()
    assert _backends(pg_db) == 0


# --------------------------------------------------------------------------- signatures


async def test_signatures_follow_structure_not_statistics_or_oids(pg_db: PgDatabase) -> None:
    pg_db.execute(SCHEMA)
    connector = _connector(pg_db)
    first = await connector.discover()
    assert set(first.signatures) == {t.qualified_name for t in first.tables}
    assert all(len(s) == 32 for s in first.signatures.values())
    # Statistics move, structure does not: same signatures.
    pg_db.execute("INSERT INTO parent SELECT g, g::text FROM generate_series(1, 500) g; ANALYZE")
    second = await connector.discover()
    assert second.signatures == first.signatures
    # Dropped and re-created identically (new oids): same signature.
    pg_db.execute("DROP VIEW v_child; CREATE VIEW v_child AS SELECT id, note FROM child")
    assert (await connector.discover()).signatures == first.signatures

    def changed(after: DiscoveryResult) -> set[str]:
        return {t.name for t in after.tables if after.signatures[t.qualified_name]
                != first.signatures[t.qualified_name]}  # fmt: skip

    for statement, tables in [
        ("ALTER TABLE parent ALTER COLUMN code TYPE varchar(20)", {"parent"}),
        ("ALTER TABLE child ALTER COLUMN note SET NOT NULL", {"child"}),
        ("ALTER TABLE child ALTER COLUMN note SET DEFAULT 'x'", {"child"}),
        ("COMMENT ON COLUMN child.note IS 'a note'", {"child"}),
        ("COMMENT ON TABLE parent IS 'parents'", {"parent"}),
        ("CREATE INDEX parent_m ON parent (m)", {"parent"}),
        ("ALTER INDEX child_note RENAME TO child_note2", {"child"}),
        ("ALTER TYPE mood ADD VALUE 'glad'", {"parent"}),
        ("CREATE OR REPLACE VIEW v_child AS SELECT id, note, 1 AS one FROM child", {"v_child"}),
        ("ALTER TABLE parent RENAME COLUMN id TO pid", {"parent", "child"}),  # child's FK
        ("ALTER TABLE ev DETACH PARTITION ev_2025", {"ev_2025"}),
    ]:
        pg_db.execute(statement)
        after = await connector.discover()
        assert changed(after) == tables, statement
        pg_db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP TYPE IF EXISTS mood")
        pg_db.execute(SCHEMA)


async def test_known_signatures_skip_building(pg_db: PgDatabase) -> None:
    pg_db.execute(SCHEMA)
    connector = _connector(pg_db)
    first = await connector.discover()
    pg_db.execute("ALTER TABLE child ADD COLUMN extra int")
    second = await connector.discover(known=first.signatures)
    assert [t.name for t in second.tables] == ["child"]
    assert set(second.signatures) == {second.tables[0].qualified_name}
    assert set(second.unchanged) == set(first.signatures) - set(second.signatures)
    parent = next(t for t in first.tables if t.name == "parent")
    assert second.unchanged[parent.qualified_name] == (parent.row_estimate, parent.size_bytes)
    assert second.complete and second.complete_schemas == first.complete_schemas
    assert second.queries == first.queries  # the same statements, whatever is skipped
