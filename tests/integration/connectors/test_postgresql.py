"""The postgresql connector against the real PostgreSQL on this machine (``pg_db`` scratch DBs)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
import pytest

from datawave.datasource.connectors import ConnectorRegistry, split_secrets
from datawave.datasource.connectors.postgresql import (
    APPLICATION_NAME,
    PostgresConfig,
    PostgresConnector,
)
from datawave.datasource.errors import (
    AuthenticationFailed,
    ConnectionRefused,
    ConnectorTimeout,
    ValidationFailed,
)
from datawave.datasource.models import (
    DiscoveryResult,
    HealthState,
    StepStatus,
    TableInfo,
    TableKind,
)
from tests.fixtures.services import PgDatabase, pg_admin

STEPS = [
    "reach_host",
    "authenticate",
    "list_databases",
    "list_schemas",
    "read_table_catalog",
    "read_column_catalog",
    "read_constraints",
    "read_indexes",
    "read_statistics",
]

SHOP = """
CREATE SCHEMA sales;
CREATE SCHEMA "Ünïcødé";
COMMENT ON SCHEMA sales IS 'money in';
CREATE TYPE sales.mood AS ENUM ('sad', 'ok', 'it''s fine');
CREATE TABLE sales.customers (
    region text NOT NULL,
    id integer NOT NULL,
    name varchar(40) DEFAULT 'anon',
    email text,
    mood sales.mood DEFAULT 'ok',
    tags text[],
    moods sales.mood[],
    created timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region, id),
    CONSTRAINT customers_email_uq UNIQUE (email)
);
COMMENT ON TABLE sales.customers IS 'people who buy';
COMMENT ON COLUMN sales.customers.email IS 'login, lower-cased';
CREATE TABLE public."Order Items" (
    "select" integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region text NOT NULL,
    customer_id integer NOT NULL,
    qty integer NOT NULL DEFAULT 1,
    price numeric(10,2) NOT NULL,
    total numeric GENERATED ALWAYS AS (qty * price) STORED,
    "naïve col" text,
    CONSTRAINT "Order Items → customer" FOREIGN KEY (region, customer_id)
        REFERENCES sales.customers (region, id) ON DELETE CASCADE ON UPDATE SET NULL,
    CONSTRAINT qty_price_uq UNIQUE (qty, price)
);
CREATE INDEX "big qty" ON public."Order Items" (qty) WHERE qty > 10;
CREATE INDEX oi_expr ON public."Order Items" (lower("naïve col"), qty);
CREATE TABLE "Ünïcødé"."Tåble" ("Çolumn" int, "order" text);
CREATE VIEW sales.big_orders AS SELECT "select", qty FROM public."Order Items" WHERE qty > 100;
CREATE MATERIALIZED VIEW sales.mv_regions AS
    SELECT region, count(*) AS n FROM sales.customers GROUP BY region;
CREATE TABLE public.events (id bigint NOT NULL, at date NOT NULL, payload jsonb,
    PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.events_2025 PARTITION OF public.events
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO sales.customers (region, id, email)
    SELECT 'eu', g, 'c' || g || '@x.org' FROM generate_series(1, 500) AS g;
REFRESH MATERIALIZED VIEW sales.mv_regions;
ANALYZE;
"""


def _connector(db: PgDatabase, **extra: Any) -> PostgresConnector:
    return PostgresConnector.create(db.config(**{"auth": "none", **extra}))


def _table(result: DiscoveryResult, schema: str, name: str) -> TableInfo:
    return next(t for t in result.tables if (t.schema_name, t.name) == (schema, name))


def _many_tables(db: PgDatabase, start: int, stop: int) -> None:
    db.execute(
        "\n".join(
            f"CREATE TABLE t_{i} (id bigint PRIMARY KEY, ref bigint REFERENCES t_0 (id),"
            f" name text NOT NULL DEFAULT 'x', code varchar(9) UNIQUE);"
            f" CREATE INDEX ON t_{i} (name) WHERE ref IS NOT NULL;"
            f" COMMENT ON TABLE t_{i} IS 'table {i}';"
            for i in range(start, stop)
        )
    )


# --------------------------------------------------------------------------- plugin and config


def test_registry_loads_the_plugin() -> None:
    assert ConnectorRegistry().get("postgresql") is PostgresConnector


def test_plugin_is_disabled_without_psycopg() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from datawave.datasource.connectors import ConnectorRegistry\n"
        "info = {p.name: p for p in ConnectorRegistry().list()}['postgresql']\n"
        "print(info.enabled, info.reason)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("False disabled: psycopg")
    assert "datawave-datasource[postgresql]" in out


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"host": "h", "user": "u", "auth": "none", "bogus": 1}, "config.bogus"),
        ({"host": "h", "user": "u", "auth": "none", "port": "abc"}, "config.port"),
        ({"host": "h", "user": "u", "auth": "none", "port": 70000}, "config.port"),
        ({"host": "h", "user": "u", "auth": "none", "port": 0}, "config.port"),
        ({"host": "h", "user": "u"}, "config.password"),
        ({"host": "h", "user": "u", "auth": "kerberos"}, "config.auth"),
        ({"host": "", "user": "u", "auth": "none"}, "config.host"),
        ({"user": "u", "auth": "none"}, "config.host"),
        ({"host": "h", "user": "u", "auth": "none", "sslmode": "maybe"}, "config.sslmode"),
        ({"host": "h", "user": "u", "auth": "none", "databases": "shop"}, "config.databases"),
        ({"host": "h", "user": "u", "auth": "none", "databases": []}, "config.databases"),
        (
            {"host": "h", "user": "u", "auth": "none", "connect_timeout_s": 0},
            "config.connect_timeout_s",
        ),
        ({"url": "postgresql://u:pw-Zq81@h:notaport/db"}, "config.url"),
        ({"url": "postgresql://u:pw-Zq81@h:99999/db"}, "config.url"),
        ({"url": "mysql://u:pw-Zq81@h/db"}, "config.url"),
        ({"url": "postgresql:///db", "auth": "none"}, "config.url"),
        ({"url": "postgresql://u:pw-Zq81@[::1/db"}, "config.url"),
        ({"url": "postgresql://u:pw-Zq81@h/db?sslmode=require&x=1"}, "config.url"),
        ({"url": 42, "auth": "none"}, "config.url"),
    ],
)
def test_invalid_config_names_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        PostgresConnector.validate_config(config)
    assert field in [e["field"] for e in info.value.errors]
    assert "pw-Zq81" not in f"{info.value} {info.value.to_dict()}"


def test_url_fills_the_fields_and_keeps_the_password_secret() -> None:
    config = PostgresConnector.validate_config(
        {"url": "postgresql://app:s3cr%40t@db.example:6543/shop?sslmode=require"}
    )
    assert isinstance(config, PostgresConfig)
    assert (config.host, config.port, config.user, config.database, config.sslmode) == (
        "db.example",
        6543,
        "app",
        "shop",
        "require",
    )
    assert config.password is not None and config.password.get_secret_value() == "s3cr@t"
    assert config.url is None  # split into the fields, the password lives only in `password`
    public, hidden = split_secrets(config)
    assert "s3cr" not in str(public) and hidden == {"password": "s3cr@t"}
    assert PostgresConnector.validate_config({**public, **hidden}) == config
    # Explicit fields win over the URL's parts.
    config = PostgresConnector.validate_config(
        {"url": "postgres://app:pw@db.example/shop", "port": 5433, "database": "other"}
    )
    assert isinstance(config, PostgresConfig)
    assert (config.port, config.database) == (5433, "other")
    # A URL without a password works with auth="none".
    config = PostgresConnector.validate_config({"url": "postgresql://app@h", "auth": "none"})
    assert isinstance(config, PostgresConfig)
    assert (config.host, config.port, config.database, config.password) == (
        "h",
        5432,
        "postgres",
        None,
    )


# --------------------------------------------------------------------------- test_connection


async def test_test_connection_all_steps_ok(pg_db: PgDatabase) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    report = await _connector(pg_db).test_connection()
    assert report.ok, report.failed_step
    assert [s.name for s in report.steps] == STEPS
    assert all(s.status is StepStatus.OK for s in report.steps)
    steps = {s.name: s for s in report.steps}
    assert steps["authenticate"].detail["database"] == pg_db.dbname
    assert steps["list_databases"].detail["databases"] >= 1
    assert steps["list_schemas"].detail["schemas"] == 1  # public
    assert steps["read_table_catalog"].detail["rows"] == 1


async def test_unknown_role_fails_at_authenticate_without_leaking(pg_db: PgDatabase) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    connector = PostgresConnector.create(
        pg_db.config(user=f"nobody_{uuid.uuid4().hex[:8]}", password=password)
    )
    report = await connector.test_connection()
    assert not report.ok
    steps = {s.name: s for s in report.steps}
    assert steps["reach_host"].status is StepStatus.OK
    auth = steps["authenticate"]
    assert auth.status is StepStatus.FAILED and auth.error_code == "authentication_failed"
    assert "does not exist" in (auth.error or "")
    assert [s.status for s in report.steps[2:]] == [StepStatus.SKIPPED] * (len(STEPS) - 2)

    with pytest.raises(AuthenticationFailed) as info:
        await connector.discover()
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    health = await connector.check_health()
    assert health.state is HealthState.DOWN and health.error
    await connector.close()

    leaked = " ".join(
        [
            report.model_dump_json(),
            str(info.value),
            str(info.value.to_dict()),
            health.model_dump_json(),
            connector.report.model_dump_json(),
        ]
    )
    assert password not in leaked


async def test_closed_port_fails_fast_at_reach_host(closed_port: tuple[str, int]) -> None:
    host, port = closed_port
    connector = PostgresConnector.create({"host": host, "port": port, "user": "u", "auth": "none"})
    t0 = time.monotonic()
    report = await connector.test_connection()
    assert time.monotonic() - t0 < 5
    assert not report.ok
    first = report.steps[0]
    assert (first.name, first.status, first.error_code) == (
        "reach_host",
        StepStatus.FAILED,
        "connection_refused",
    )
    assert [s.status for s in report.steps[1:]] == [StepStatus.SKIPPED] * (len(STEPS) - 1)
    with pytest.raises(ConnectionRefused):
        await connector.discover()
    health = await connector.check_health()
    assert health.state is HealthState.DOWN and "refused" in (health.error or "").lower()


async def test_black_hole_times_out_within_connect_timeout(black_hole: tuple[str, int]) -> None:
    host, port = black_hole
    timeout = 1.0
    slack = 3.0
    connector = PostgresConnector.create(
        {"host": host, "port": port, "user": "u", "auth": "none", "connect_timeout_s": timeout}
    )
    t0 = time.monotonic()
    report = await connector.test_connection()
    assert time.monotonic() - t0 < timeout + slack
    steps = {s.name: s for s in report.steps}
    assert steps["reach_host"].status is StepStatus.OK  # TCP is accepted, nothing is said
    auth = steps["authenticate"]
    assert auth.status is StepStatus.TIMEOUT and auth.error_code == "connector_timeout"
    assert "timed out" in (auth.error or "")
    assert steps["read_statistics"].status is StepStatus.SKIPPED

    t0 = time.monotonic()
    with pytest.raises(ConnectorTimeout) as info:
        await connector.discover()
    assert time.monotonic() - t0 < timeout + slack
    assert "within 1s" in str(info.value)

    t0 = time.monotonic()
    health = await connector.check_health()
    assert time.monotonic() - t0 < timeout + slack
    assert health.state is HealthState.DOWN and "within 1s" in (health.error or "")


# --------------------------------------------------------------------------- discover


async def test_discover_maps_the_catalog(pg_db: PgDatabase) -> None:
    pg_db.execute(SHOP)
    db = pg_db.dbname
    result = await _connector(pg_db).discover()
    assert not result.failures and not result.warnings
    assert result.complete
    assert [d.name for d in result.databases] == [db]
    (database,) = result.databases
    assert database.size_bytes and database.size_bytes > 0
    assert database.properties["encoding"] == "UTF8"
    assert [(s.database, s.name, s.comment) for s in result.schemas] == [
        (db, "public", "standard public schema"),
        (db, "sales", "money in"),
        (db, "Ünïcødé", None),
    ]
    assert result.complete_databases == {db}
    assert result.complete_schemas == {(db, "public"), (db, "sales"), (db, "Ünïcødé")}
    assert [(t.schema_name, t.name, t.kind) for t in result.tables] == [
        ("public", "Order Items", TableKind.TABLE),
        ("public", "events", TableKind.PARTITIONED_TABLE),
        ("public", "events_2024", TableKind.PARTITION),
        ("public", "events_2025", TableKind.PARTITION),
        ("sales", "big_orders", TableKind.VIEW),
        ("sales", "customers", TableKind.TABLE),
        ("sales", "mv_regions", TableKind.MATERIALIZED_VIEW),
        ("Ünïcødé", "Tåble", TableKind.TABLE),
    ]
    assert all(t.database == db for t in result.tables)

    customers = _table(result, "sales", "customers")
    assert customers.comment == "people who buy"
    assert [c.ordinal for c in customers.columns] == list(range(1, 9))
    cols = {c.name: c for c in customers.columns}
    assert cols["region"].data_type == "text" and not cols["region"].nullable
    assert cols["name"].data_type == "character varying(40)" and cols["name"].nullable
    assert cols["name"].default == "'anon'::character varying"
    assert cols["email"].comment == "login, lower-cased" and cols["email"].default is None
    assert cols["mood"].data_type == "sales.mood"
    assert cols["mood"].enum_values == ("sad", "ok", "it's fine")
    assert cols["mood"].default == "'ok'::sales.mood" and not cols["mood"].is_array
    assert cols["tags"].is_array and cols["tags"].data_type == "text[]"
    assert cols["tags"].enum_values is None
    assert cols["moods"].is_array and cols["moods"].enum_values == ("sad", "ok", "it's fine")
    assert cols["created"].default == "now()" and not cols["created"].nullable
    assert customers.primary_key is not None
    assert customers.primary_key.columns == ("region", "id")
    assert customers.primary_key.name == "customers_pkey"
    assert [(k.name, k.columns) for k in customers.unique_constraints] == [
        ("customers_email_uq", ("email",))
    ]
    assert [i.name for i in customers.indexes] == ["customers_email_uq", "customers_pkey"]
    assert customers.row_estimate == 500
    assert customers.size_bytes and customers.size_bytes > 8192

    items = _table(result, "public", "Order Items")
    assert [c.name for c in items.columns] == [
        "select",
        "region",
        "customer_id",
        "qty",
        "price",
        "total",
        "naïve col",
    ]
    icols = {c.name: c for c in items.columns}
    assert icols["select"].identity and icols["select"].default is None
    assert not icols["select"].nullable
    assert icols["qty"].default == "1"
    assert icols["total"].generated == "((qty)::numeric * price)"
    assert icols["total"].default is None and not icols["total"].identity
    assert items.primary_key is not None and items.primary_key.columns == ("select",)
    assert [(k.name, k.columns) for k in items.unique_constraints] == [
        ("qty_price_uq", ("qty", "price"))
    ]
    (fk,) = items.foreign_keys
    assert fk.name == "Order Items → customer"
    assert fk.columns == ("region", "customer_id")
    assert (fk.ref_database, fk.ref_schema, fk.ref_table) == (db, "sales", "customers")
    assert fk.ref_columns == ("region", "id")
    assert (fk.on_update, fk.on_delete) == ("SET NULL", "CASCADE")
    indexes = {i.name: i for i in items.indexes}
    assert sorted(indexes) == ["Order Items_pkey", "big qty", "oi_expr", "qty_price_uq"]
    assert [i.name for i in items.indexes] == sorted(indexes)
    pkey = indexes["Order Items_pkey"]
    assert pkey.primary and pkey.unique and pkey.columns == ("select",)
    assert pkey.method == "btree" and pkey.predicate is None
    partial = indexes["big qty"]
    assert partial.columns == ("qty",) and partial.predicate == "qty > 10"
    assert not partial.unique and not partial.primary
    assert partial.definition is not None and "WHERE (qty > 10)" in partial.definition
    expr = indexes["oi_expr"]
    assert expr.columns == ('lower("naïve col")', "qty")
    assert expr.definition is not None and expr.definition.startswith("CREATE INDEX oi_expr")
    assert indexes["qty_price_uq"].unique and indexes["qty_price_uq"].columns == ("qty", "price")
    assert items.row_estimate == 0  # analyzed, empty

    view = _table(result, "sales", "big_orders")
    assert [c.name for c in view.columns] == ["select", "qty"]
    assert view.definition is not None and view.definition.startswith("SELECT")
    assert '"Order Items"' in view.definition and "> 100" in view.definition
    assert view.row_estimate is None and view.size_bytes is None
    assert view.primary_key is None and not view.indexes

    mv = _table(result, "sales", "mv_regions")
    assert mv.definition is not None and "count(*)" in mv.definition
    assert mv.size_bytes is not None and mv.row_estimate == 1

    events = _table(result, "public", "events")
    assert events.partition_key == "RANGE (at)" and events.parent is None
    assert events.size_bytes is None
    assert events.primary_key is not None and events.primary_key.columns == ("id", "at")
    assert [c.name for c in events.columns] == ["id", "at", "payload"]
    parts = [t for t in result.tables if t.kind is TableKind.PARTITION]
    assert [p.parent for p in parts] == ["public.events", "public.events"]
    assert [p.partition_bound for p in parts] == [
        "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    ]
    assert all(p.primary_key is not None and p.size_bytes is not None for p in parts)

    uni = _table(result, "Ünïcødé", "Tåble")
    assert [(c.name, c.data_type) for c in uni.columns] == [
        ("Çolumn", "integer"),
        ("order", "text"),
    ]
    assert items.qualified_name == f'{db}.public."Order Items"'


async def test_foreign_tables(pg_db: PgDatabase) -> None:
    pg_db.execute(
        "CREATE EXTENSION file_fdw;"
        " CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;"
        " CREATE FOREIGN TABLE ext_data (id int NOT NULL, note text)"
        "  SERVER files OPTIONS (filename '/dev/null', format 'csv');"
        " COMMENT ON FOREIGN TABLE ext_data IS 'from a file'"
    )
    result = await _connector(pg_db).discover()
    (table,) = result.tables
    assert (table.name, table.kind, table.comment) == (
        "ext_data",
        TableKind.FOREIGN_TABLE,
        "from a file",
    )
    assert [(c.name, c.nullable) for c in table.columns] == [("id", False), ("note", True)]
    assert table.size_bytes is None and table.row_estimate is None


async def test_shared_and_odd_column_lists(pg_db: PgDatabase) -> None:
    """Equal column lists are built once and shared; a comment, a default, a dropped column or
    no column at all still gives each table exactly its own columns."""
    pg_db.execute(
        """
        CREATE TYPE tone AS ENUM ('low', 'high');
        CREATE TABLE a (id bigint NOT NULL, note text, t tone, ts tone[]);
        CREATE TABLE b (id bigint NOT NULL, note text, t tone, ts tone[]);
        CREATE TABLE c (id bigint NOT NULL, note text, t tone, ts tone[]);
        COMMENT ON COLUMN c.note IS 'a "quoted" note, ünïcødé';
        CREATE TABLE d (id bigint NOT NULL DEFAULT 7, note text, t tone, ts tone[]);
        CREATE TABLE e (id bigint NOT NULL, gone int, note text, t tone, ts tone[]);
        ALTER TABLE e DROP COLUMN gone;
        CREATE TABLE empty ();
        """
    )
    result = await _connector(pg_db).discover()
    tables = {t.name: t for t in result.tables if t.schema_name == "public"}
    assert set(tables) == {"a", "b", "c", "d", "e", "empty"}
    a, b, c, d, e = (tables[n] for n in "abcde")
    assert tables["empty"].columns == ()
    assert a.columns == b.columns and a.columns[0] is b.columns[0]  # one record, shared
    assert [col.name for col in a.columns] == ["id", "note", "t", "ts"]
    assert a.columns[2].enum_values == ("low", "high") and not a.columns[2].is_array
    assert a.columns[3].enum_values == ("low", "high") and a.columns[3].is_array
    assert c.columns[1].comment == 'a "quoted" note, ünïcødé' and a.columns[1].comment is None
    assert c.columns[0] is a.columns[0]  # equal columns shared across different lists
    assert d.columns[0].default == "7" and a.columns[0].default is None
    assert [(col.name, col.ordinal) for col in e.columns] == [
        ("id", 1),
        ("note", 3),
        ("t", 4),
        ("ts", 5),
    ]  # the dropped column's attnum stays a gap
    signatures = {n: result.signatures[t.qualified_name] for n, t in tables.items()}
    assert len(set(signatures.values())) == len(signatures)  # names differ: every table signs
    again = await _connector(pg_db).discover(known=result.signatures)
    assert again.tables == () and set(again.unchanged) == set(result.signatures)


async def test_discover_is_deterministic(pg_db: PgDatabase) -> None:
    pg_db.execute(SHOP)
    connector = _connector(pg_db)
    first, second = await connector.discover(), await connector.discover()
    assert first.model_dump() == second.model_dump()


async def test_filters_select_schemas_and_tables(pg_db: PgDatabase) -> None:
    pg_db.execute(SHOP)
    db = pg_db.dbname
    result = await _connector(
        pg_db, filters={"exclude_schemas": ["public"], "exclude_tables": ["sales.mv_*"]}
    ).discover()
    assert [s.name for s in result.schemas] == ["sales", "Ünïcødé"]
    assert result.complete_schemas == {(db, "sales"), (db, "Ünïcødé")}
    assert [t.name for t in result.tables] == ["big_orders", "customers", "Tåble"]

    result = await _connector(
        pg_db,
        filters={"include_schemas": ["public", "sales"], "include_tables": ["*Order*", "big_*"]},
    ).discover()
    assert [s.name for s in result.schemas] == ["public", "sales"]
    assert [t.name for t in result.tables] == ["Order Items", "big_orders"]
    # A filtered-out referenced table still resolves: the FK names its columns.
    (fk,) = _table(result, "public", "Order Items").foreign_keys
    assert fk.ref_columns == ("region", "id")

    # So does one in a schema that is not read at all (its columns are looked up server-side).
    result = await _connector(pg_db, filters={"include_schemas": ["public"]}).discover()
    assert [s.name for s in result.schemas] == ["public"]
    (fk,) = _table(result, "public", "Order Items").foreign_keys
    assert (fk.ref_schema, fk.ref_table, fk.ref_columns) == ("sales", "customers", ("region", "id"))

    result = await _connector(pg_db, filters={"exclude_databases": ["dw_*"]}).discover()
    assert result.databases == () and result.tables == ()
    assert result.databases_complete and result.queries == 1

    # Without an explicit list every database of the server is a candidate for the filters.
    result = await _connector(
        pg_db, databases=None, filters={"include_databases": [db, "template*"]}
    ).discover()
    assert [d.name for d in result.databases] == [db]  # templates are never listed
    assert result.complete_databases == {db} and not result.failures


async def test_query_count_does_not_depend_on_table_count(pg_db: PgDatabase) -> None:
    pg_db.execute("CREATE TABLE t_0 (id bigint PRIMARY KEY)")
    _many_tables(pg_db, 1, 5)
    connector = _connector(pg_db)
    small = await connector.discover()
    _many_tables(pg_db, 5, 50)
    large = await connector.discover()
    assert (len(small.tables), len(large.tables)) == (5, 50)
    assert small.queries_per_database == large.queries_per_database
    assert small.queries == large.queries == 1 + small.queries_per_database[pg_db.dbname]
    t = _table(large, "public", "t_49")
    assert t.comment == "table 49" and len(t.indexes) == 3 and t.foreign_keys


async def test_missing_database_gives_a_partial_result(pg_db: PgDatabase) -> None:
    pg_db.execute("CREATE TABLE t (id int)")
    result = await _connector(pg_db, databases=[pg_db.dbname, "does_not_exist"]).discover()
    assert not result.complete
    assert result.databases_complete
    assert result.complete_databases == {pg_db.dbname}
    assert [t.name for t in result.tables] == ["t"]
    assert [d.name for d in result.databases] == [pg_db.dbname]
    (failure,) = result.failures
    assert "does_not_exist" in failure
    assert result.queries_per_database["does_not_exist"] == 0


async def test_database_without_connect_privilege_is_skipped(
    pg_db: PgDatabase, pg_other_db: PgDatabase, pg_role: str
) -> None:
    pg_db.execute("CREATE TABLE visible (id int)")
    pg_other_db.execute("CREATE TABLE hidden (id int)")
    pg_admin(f'REVOKE CONNECT ON DATABASE "{pg_other_db.dbname}" FROM PUBLIC')
    connector = _connector(pg_db, user=pg_role, databases=[pg_db.dbname, pg_other_db.dbname])
    result = await connector.discover()
    assert [d.name for d in result.databases] == sorted([pg_db.dbname, pg_other_db.dbname])
    assert result.complete_databases == {pg_db.dbname}
    assert {d for d, _ in result.complete_schemas} == {pg_db.dbname}
    assert [t.name for t in result.tables] == ["visible"]
    (failure,) = result.failures
    assert pg_other_db.dbname in failure and "permission denied" in failure
    assert connector.report.errors == 1


async def test_locked_table_does_not_stall_discovery(pg_db: PgDatabase) -> None:
    """Sizes come from catalog page counts, not pg_total_relation_size: an ACCESS EXCLUSIVE
    lock held by someone else does not block (or time out) discovery."""
    pg_db.execute(SHOP)
    pg_db.execute("ANALYZE")
    locker = psycopg.connect(pg_db.dsn)
    try:
        locker.execute('LOCK TABLE "Ünïcødé"."Tåble" IN ACCESS EXCLUSIVE MODE')
        result = await _connector(pg_db, step_timeout_s=2).discover()
    finally:
        locker.close()
    assert not result.failures and not result.warnings
    assert len(result.tables) == 8
    assert _table(result, "Ünïcødé", "Tåble").size_bytes is not None
    assert _table(result, "sales", "customers").primary_key is not None
    assert result.complete_schemas == {
        (pg_db.dbname, "public"),
        (pg_db.dbname, "sales"),
        (pg_db.dbname, "Ünïcødé"),
    }


# --------------------------------------------------------------------------- health


async def test_health_reuses_and_reopens_its_connection(pg_db: PgDatabase) -> None:
    connector = _connector(pg_db)
    try:
        first = await connector.check_health()
        assert first.state is HealthState.HEALTHY and first.error is None
        assert first.latency_ms is not None and first.checked_at is not None
        second = await connector.check_health()
        assert second.state is HealthState.HEALTHY
        assert connector.report.connections_opened == 1

        # The server drops the idle connection: the next probe reconnects and stays healthy.
        pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{pg_db.dbname}' AND application_name = '{APPLICATION_NAME}'"
        )
        third = await connector.check_health()
        assert third.state is HealthState.HEALTHY, third.error
        assert connector.report.connections_opened == 2
    finally:
        await connector.close()


async def test_health_degraded_above_the_latency_threshold(pg_db: PgDatabase) -> None:
    async with _connector(pg_db, degraded_latency_ms=0.001) as connector:
        report = await connector.check_health()
    assert report.state is HealthState.DEGRADED and report.error is None
