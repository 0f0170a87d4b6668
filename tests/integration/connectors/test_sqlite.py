"""The sqlite connector against real database files in ``tmp_path``."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.connectors.sqlite import SQLiteConfig, SQLiteConnector
from datawave.datasource.errors import ConnectorError, ValidationFailed
from datawave.datasource.models import HealthState, StepStatus, TableInfo, TableKind

STEPS = ["open_file", "read_schema", "read_column_catalog", "read_constraints", "read_indexes"]

SHOP = """
CREATE TABLE customers (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  email TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'active')),
  nickname VARCHAR(40) DEFAULT 'it''s',
  note TEXT DEFAULT NULL,
  created TEXT DEFAULT CURRENT_TIMESTAMP,
  email_domain TEXT GENERATED ALWAYS AS (substr(email, instr(email, '@') + 1)) VIRTUAL,
  "email len" INTEGER AS (length(email)) STORED
);
CREATE TABLE "Order Items" (
  order_id INTEGER NOT NULL,
  line INTEGER NOT NULL,
  "select" TEXT NOT NULL,
  customer_id INTEGER REFERENCES customers (id) ON DELETE SET NULL ON UPDATE CASCADE,
  PRIMARY KEY (order_id, line),
  UNIQUE ("select", line)
);
CREATE TABLE "ünïcødé" (
  "ключ" INTEGER NOT NULL,
  "line" INTEGER NOT NULL,
  "naïve col" TEXT,
  FOREIGN KEY ("ключ", "line") REFERENCES "Order Items" ON DELETE CASCADE
);
CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
CREATE INDEX ix_lower_email ON customers (lower(email) DESC, status);
CREATE INDEX "ix partial" ON "Order Items" (customer_id) WHERE customer_id IS NOT NULL;
CREATE UNIQUE INDEX ix_email_nocase ON customers (email COLLATE NOCASE);
CREATE VIEW active_customers AS SELECT id, email FROM customers WHERE status = 'active';
INSERT INTO customers (email) VALUES ('a@x.org'), ('b@y.org'), ('c@z.org');
"""


def _make(path: Path, script: str) -> Path:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(script)
        conn.commit()
    finally:
        conn.close()
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return _make(tmp_path / "shop.db", SHOP)


def _table(result: Any, name: str) -> TableInfo:
    return next(t for t in result.tables if t.name == name)


# --------------------------------------------------------------------------- plugin and config


def test_registry_loads_the_plugin() -> None:
    assert ConnectorRegistry().get("sqlite") is SQLiteConnector


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"path": "x.db", "bogus": 1}, "config.bogus"),
        ({"path": "x.db", "read_only": "perhaps"}, "config.read_only"),
        ({"path": 3}, "config.path"),
        ({}, "config.path"),
        ({"path": ""}, "config.path"),
        ({"path": "x.db", "step_timeout_s": 0}, "config.step_timeout_s"),
    ],
)
def test_invalid_config_names_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        SQLiteConnector.validate_config(config)
    assert field in [e["field"] for e in info.value.errors]


def test_missing_file_is_valid_config() -> None:
    config = SQLiteConnector.validate_config({"path": "/nowhere/edge.sqlite"})
    assert isinstance(config, SQLiteConfig) and config.database == "edge"


# --------------------------------------------------------------------------- test_connection


async def test_test_connection_all_steps_ok(shop: Path) -> None:
    report = await SQLiteConnector.create({"path": str(shop)}).test_connection()
    assert report.ok, report.failed_step
    assert [s.name for s in report.steps] == STEPS
    assert report.steps[1].detail == {"schemas": ["main"], "tables": 4, "views": 1, "indexes": 3}
    assert report.steps[2].detail["columns"] > 0


async def test_missing_file_fails_at_open_file(tmp_path: Path) -> None:
    connector = SQLiteConnector.create({"path": str(tmp_path / "nope.db")})
    report = await connector.test_connection()
    assert not report.ok
    assert report.steps[0].name == "open_file"
    assert report.steps[0].status is StepStatus.FAILED
    assert "no such file" in (report.steps[0].error or "")
    assert [s.status for s in report.steps[1:]] == [StepStatus.SKIPPED] * 4
    assert not (tmp_path / "nope.db").exists()  # never created, even read-write
    with pytest.raises(ConnectorError):
        await connector.discover()
    health = await connector.check_health()
    assert health.state is HealthState.DOWN and "no such file" in (health.error or "")


async def test_not_a_database_fails_at_open_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, just text\n" * 200)
    report = await SQLiteConnector.create({"path": str(junk)}).test_connection()
    assert report.steps[0].status is StepStatus.FAILED
    assert "not a database" in (report.steps[0].error or "")


# --------------------------------------------------------------------------- discover


async def test_discover_maps_the_catalog(shop: Path) -> None:
    before = os.stat(shop).st_mtime_ns
    result = await SQLiteConnector.create({"path": str(shop)}).discover()
    assert os.stat(shop).st_mtime_ns == before  # read-only
    assert not result.failures and not result.warnings and result.complete
    assert [d.name for d in result.databases] == ["shop"]
    assert [(s.database, s.name) for s in result.schemas] == [("shop", "main")]
    assert result.complete_databases == {"shop"}
    assert result.complete_schemas == {("shop", "main")}
    assert [t.name for t in result.tables] == [
        "Order Items",
        "active_customers",
        "customers",
        "kv",
        "ünïcødé",
    ]

    customers = _table(result, "customers")
    cols = {c.name: c for c in customers.columns}
    assert [c.ordinal for c in customers.columns] == list(range(1, 9))
    assert cols["id"].identity and not cols["id"].nullable and cols["id"].data_type == "INTEGER"
    assert not cols["email"].nullable and cols["email"].default is None
    assert cols["status"].default == "'new'"
    assert cols["nickname"].data_type == "VARCHAR(40)" and cols["nickname"].default == "'it''s'"
    assert cols["note"].default is None
    assert cols["created"].default == "CURRENT_TIMESTAMP"
    assert cols["email_domain"].generated == "substr(email, instr(email, '@') + 1)"
    assert cols["email len"].generated == "length(email)"
    assert customers.primary_key is not None and customers.primary_key.columns == ("id",)
    assert [k.columns for k in customers.unique_constraints] == [("email",)]
    indexes = {i.name: i for i in customers.indexes}
    expr = indexes["ix_lower_email"]
    assert expr.columns == ("lower(email)", "status") and not expr.unique
    assert expr.definition is not None and expr.definition.startswith("CREATE INDEX")
    assert indexes["ix_email_nocase"].unique and indexes["ix_email_nocase"].columns == ("email",)
    assert customers.size_bytes is not None and customers.size_bytes > 0
    assert customers.row_estimate is None  # no ANALYZE yet

    items = _table(result, "Order Items")
    assert items.primary_key is not None and items.primary_key.columns == ("order_id", "line")
    assert not next(c for c in items.columns if c.name == "order_id").identity
    assert [k.columns for k in items.unique_constraints] == [("select", "line")]
    (fk,) = items.foreign_keys
    assert (fk.columns, fk.ref_table, fk.ref_columns) == (("customer_id",), "customers", ("id",))
    assert (fk.ref_database, fk.ref_schema) == ("shop", "main")
    assert (fk.on_update, fk.on_delete) == ("CASCADE", "SET NULL")
    partial = next(i for i in items.indexes if i.name == "ix partial")
    assert partial.predicate == "customer_id IS NOT NULL"
    assert partial.columns == ("customer_id",)
    pk_index = next(i for i in items.indexes if i.primary)
    assert pk_index.columns == ("order_id", "line") and pk_index.unique

    uni = _table(result, "ünïcødé")
    assert [c.name for c in uni.columns] == ["ключ", "line", "naïve col"]
    (composite,) = uni.foreign_keys
    assert composite.columns == ("ключ", "line")
    assert composite.ref_columns == ("order_id", "line")  # implicit: the referenced primary key
    assert composite.on_delete == "CASCADE"

    kv = _table(result, "kv")
    assert kv.properties == {"without_rowid": "true"}
    assert not kv.columns[0].identity

    view = _table(result, "active_customers")
    assert view.kind is TableKind.VIEW
    assert [c.name for c in view.columns] == ["id", "email"]
    assert view.definition is not None and view.definition.startswith("CREATE VIEW")
    assert view.row_estimate is None and view.size_bytes is None


async def test_row_estimates_come_from_analyze(shop: Path) -> None:
    _make(shop, "ANALYZE")
    result = await SQLiteConnector.create({"path": str(shop)}).discover()
    assert _table(result, "customers").row_estimate == 3


async def test_database_name_and_read_write(shop: Path) -> None:
    config = {"path": str(shop), "database_name": "orders", "read_only": False}
    result = await SQLiteConnector.create(config).discover()
    assert [d.name for d in result.databases] == ["orders"]
    assert {t.database for t in result.tables} == {"orders"}


async def test_broken_view_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    path = _make(
        tmp_path / "broken.sqlite",
        "CREATE TABLE a (x INT); CREATE TABLE gone (y INT);"
        " CREATE VIEW v AS SELECT * FROM gone; DROP TABLE gone;",
    )
    connector = SQLiteConnector.create({"path": str(path)})
    result = await connector.discover()
    assert not result.failures and result.complete_schemas == {("broken", "main")}
    assert any("views" in w and "gone" in w for w in result.warnings)
    assert [c.name for c in _table(result, "a").columns] == ["x"]
    assert _table(result, "v").columns == ()
    report = await connector.test_connection()
    assert report.ok and "warning" in report.steps[2].detail


async def test_filters(shop: Path) -> None:
    def names(result: Any) -> list[str]:
        return [t.name for t in result.tables]

    async def run(**filters: list[str]) -> Any:
        return await SQLiteConnector.create({"path": str(shop), "filters": filters}).discover()

    assert names(await run(include_tables=["c*", "main.kv"])) == ["customers", "kv"]
    assert names(await run(exclude_tables=["*e*"])) == ["kv", "ünïcødé"]
    result = await run(exclude_schemas=["main"])
    assert not result.schemas and not result.tables and not result.complete_schemas
    result = await run(exclude_databases=["shop"])
    assert result.databases_complete and not result.databases and result.queries == 0


async def test_query_count_does_not_grow_with_tables(tmp_path: Path) -> None:
    def script(n: int) -> str:
        return "".join(
            f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, ref INT REFERENCES t{i} (id), v TEXT);"
            f" CREATE INDEX ix{i} ON t{i} (v) WHERE v IS NOT NULL;"
            for i in range(n)
        )

    small = await SQLiteConnector.create(
        {"path": str(_make(tmp_path / "small.db", script(5)))}
    ).discover()
    large = await SQLiteConnector.create(
        {"path": str(_make(tmp_path / "large.db", script(50)))}
    ).discover()
    assert (len(small.tables), len(large.tables)) == (5, 50)
    assert small.queries == large.queries
    assert large.queries_per_database == {"large": large.queries}


async def test_health(shop: Path) -> None:
    connector = SQLiteConnector.create({"path": str(shop)})
    health = await connector.check_health()
    assert health.state is HealthState.HEALTHY and health.latency_ms is not None
    os.remove(shop)
    assert (await connector.check_health()).state is HealthState.DOWN
    await connector.close()
