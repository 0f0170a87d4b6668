"""The mysql connector against the real MariaDB on this machine (``my_db`` scratch databases)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from datawave.datasource.connectors import ConnectorRegistry, split_secrets
from datawave.datasource.connectors.mysql import CATALOG, MySQLConfig, MySQLConnector
from datawave.datasource.errors import (
    AuthenticationFailed,
    ConnectionRefused,
    ConnectorTimeout,
    ValidationFailed,
)
from datawave.datasource.models import HealthState, StepStatus, TableInfo, TableKind
from tests.fixtures.services import MY_HOST, MY_PORT, MY_USER, MyDatabase

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
CREATE TABLE customers (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  email VARCHAR(200) NOT NULL COMMENT 'login, lower-cased',
  status ENUM('new','active','it''s gone') NOT NULL DEFAULT 'new',
  nickname VARCHAR(40) DEFAULT 'N/A',
  literal_null VARCHAR(10) DEFAULT 'NULL',
  note VARCHAR(40) DEFAULT NULL,
  score DECIMAL(5,2) DEFAULT 1.50,
  created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  email_domain VARCHAR(200) AS (SUBSTRING_INDEX(email, '@', -1)) VIRTUAL,
  email_len INT AS (CHAR_LENGTH(email)) STORED,
  UNIQUE KEY uq_email (email),
  KEY ix_domain_created (email_domain(20), created DESC)
) COMMENT='people who buy';
CREATE TABLE `Order Items` (
  order_id INT NOT NULL,
  line INT NOT NULL,
  `select` VARCHAR(20) NOT NULL DEFAULT 'it''s',
  customer_id INT UNSIGNED,
  PRIMARY KEY (order_id, line),
  UNIQUE KEY uq_select_line (`select`, line),
  CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
    ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE TABLE `ünïcødé` (
  `ключ` INT NOT NULL,
  `line` INT NOT NULL,
  `naïve col` TEXT,
  PRIMARY KEY (`ключ`),
  CONSTRAINT `fk composite` FOREIGN KEY (`ключ`, `line`) REFERENCES `Order Items` (order_id, line)
    ON DELETE CASCADE
);
CREATE TABLE events (
  id INT NOT NULL,
  year INT NOT NULL,
  PRIMARY KEY (id, year)
) PARTITION BY RANGE (year) (
  PARTITION p2023 VALUES LESS THAN (2024),
  PARTITION p2024 VALUES LESS THAN (2025),
  PARTITION pmax VALUES LESS THAN MAXVALUE
);
CREATE VIEW active_customers AS SELECT id, email FROM customers WHERE status = 'active';
INSERT INTO customers (email) VALUES ('a@x.org'), ('b@y.org'), ('c@z.org');
ANALYZE TABLE customers
"""


def _admin(*statements: str) -> None:
    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, autocommit=True)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


def _connector(db: MyDatabase, **extra: Any) -> MySQLConnector:
    config = db.config(**{"auth": "none", "schemas": [db.dbname], **extra})
    return MySQLConnector.create(config)


def _table(result: Any, name: str) -> TableInfo:
    return next(t for t in result.tables if t.name == name)


@pytest.fixture
def other_db() -> Iterator[str]:
    """A second scratch MySQL database (schema), for cross-schema keys."""
    name = f"dw_x_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE `{name}`")
    try:
        yield name
    finally:
        # Tables of ``my_db`` may still reference this one.
        _admin("SET FOREIGN_KEY_CHECKS = 0", f"DROP DATABASE IF EXISTS `{name}`")


# --------------------------------------------------------------------------- plugin and config


def test_registry_loads_the_plugin() -> None:
    assert ConnectorRegistry().get("mysql") is MySQLConnector


def test_plugin_is_disabled_without_pymysql() -> None:
    code = (
        "import sys; sys.modules['pymysql'] = None\n"
        "from datawave.datasource.connectors import ConnectorRegistry\n"
        "info = {p.name: p for p in ConnectorRegistry().list()}['mysql']\n"
        "print(info.enabled, info.reason)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("False disabled: pymysql")
    assert "datawave-datasource[mysql]" in out


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"host": "h", "user": "u", "auth": "none", "bogus": 1}, "config.bogus"),
        ({"host": "h", "user": "u", "auth": "none", "port": "abc"}, "config.port"),
        ({"host": "h", "user": "u", "auth": "none", "port": 70000}, "config.port"),
        ({"host": "h", "user": "u", "auth": "none", "port": 0}, "config.port"),
        ({"host": "h", "user": "u"}, "config.password"),
        ({"host": "h", "user": "u", "password": ""}, "config.password"),
        ({"host": "h", "user": "u", "auth": "kerberos"}, "config.auth"),
        ({"user": "u", "auth": "none"}, "config.host"),
        ({"host": "h", "user": "u", "auth": "none", "schemas": "shop"}, "config.schemas"),
        ({"url": "mysql://u:pw@h:notaport/db", "auth": "none"}, "config.url"),
        ({"url": "http://u@h/db", "auth": "none"}, "config.url"),
        ({"url": "mysql:///db", "auth": "none"}, "config.url"),
        ({"url": "mysql://u@h/a/b", "auth": "none"}, "config.url"),
    ],
)
def test_invalid_config_names_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        MySQLConnector.validate_config(config)
    assert field in [e["field"] for e in info.value.errors]
    if "url" in config:
        assert "pw" not in str(info.value.to_dict())


def test_url_fills_the_fields_and_keeps_the_password_secret() -> None:
    config = MySQLConnector.validate_config({"url": "mysql://app:s3cr%40t@db.example:3307/shop"})
    assert isinstance(config, MySQLConfig)
    assert (config.host, config.port, config.user, config.schemas) == (
        "db.example",
        3307,
        "app",
        ["shop"],
    )
    assert config.password is not None and config.password.get_secret_value() == "s3cr@t"
    public, hidden = split_secrets(config)
    assert "s3cr" not in str(public) and hidden == {"password": "s3cr@t"}
    # Explicit fields win over the URL's.
    config = MySQLConnector.validate_config(
        {"url": "mysql://app:pw@db.example/shop", "port": 3310, "schemas": ["a", "b"]}
    )
    assert isinstance(config, MySQLConfig)
    assert (config.port, config.schemas) == (3310, ["a", "b"])


# --------------------------------------------------------------------------- test_connection


async def test_test_connection_all_steps_ok(my_db: MyDatabase) -> None:
    my_db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    report = await _connector(my_db).test_connection()
    assert report.ok, report.failed_step
    assert [s.name for s in report.steps] == STEPS
    assert all(s.status is StepStatus.OK for s in report.steps)
    assert report.steps[2].detail["databases"] == [CATALOG]
    assert report.steps[3].detail["selected"] == [my_db.dbname]
    assert report.steps[4].detail["tables"] == 1


async def test_closed_port_fails_fast_at_reach_host(closed_port: tuple[str, int]) -> None:
    host, port = closed_port
    connector = MySQLConnector.create({"host": host, "port": port, "user": "u", "auth": "none"})
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


async def test_black_hole_times_out_within_connect_timeout(black_hole: tuple[str, int]) -> None:
    host, port = black_hole
    connector = MySQLConnector.create(
        {"host": host, "port": port, "user": "u", "auth": "none", "connect_timeout_s": 1}
    )
    t0 = time.monotonic()
    report = await connector.test_connection()
    assert time.monotonic() - t0 < 1 * 2 + 5
    steps = {s.name: s for s in report.steps}
    assert steps["reach_host"].status is StepStatus.OK  # TCP is accepted, nothing is said
    auth = steps["authenticate"]
    assert auth.status is StepStatus.TIMEOUT and auth.error_code == "connector_timeout"
    assert "timed out" in (auth.error or "")
    assert steps["read_statistics"].status is StepStatus.SKIPPED

    t0 = time.monotonic()
    with pytest.raises(ConnectorTimeout):
        await connector.discover()
    health = await connector.check_health()
    assert time.monotonic() - t0 < 2 * (1 * 2 + 5)
    assert health.state is HealthState.DOWN and "timed out" in (health.error or "")


async def test_wrong_password_fails_at_authenticate_without_leaking(my_db: MyDatabase) -> None:
    user = f"dw_pw_{uuid.uuid4().hex[:8]}"
    right, wrong = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    _admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{right}'")
    _admin(f"GRANT SELECT ON `{my_db.dbname}`.* TO '{user}'@'%'")
    try:
        bad = MySQLConnector.create(my_db.config(user=user, password=wrong))
        report = await bad.test_connection()
        steps = {s.name: s for s in report.steps}
        assert not report.ok
        assert steps["reach_host"].status is StepStatus.OK
        assert steps["authenticate"].status is StepStatus.FAILED
        assert steps["authenticate"].error_code == "authentication_failed"
        assert all(s.status is StepStatus.SKIPPED for s in report.steps[2:])
        with pytest.raises(AuthenticationFailed) as info:
            await bad.discover()
        health = await bad.check_health()
        assert health.state is HealthState.DOWN

        good = MySQLConnector.create(my_db.config(user=user, password=right))
        ok_report = await good.test_connection()
        assert ok_report.ok, ok_report.failed_step
        assert ok_report.steps[3].detail["selected"] == [my_db.dbname]

        leaked = " ".join(
            [
                report.model_dump_json(),
                ok_report.model_dump_json(),
                str(info.value),
                str(info.value.to_dict()),
                health.model_dump_json(),
                bad.report.model_dump_json(),
            ]
        )
        assert right not in leaked and wrong not in leaked
    finally:
        _admin(f"DROP USER IF EXISTS '{user}'@'%'")


# --------------------------------------------------------------------------- discover


async def test_discover_maps_the_catalog(my_db: MyDatabase) -> None:
    my_db.execute(SHOP)
    result = await _connector(my_db).discover()
    assert not result.failures and not result.warnings
    assert result.complete
    assert [d.name for d in result.databases] == [CATALOG]
    assert [(s.database, s.name) for s in result.schemas] == [(CATALOG, my_db.dbname)]
    assert result.complete_databases == {CATALOG}
    assert result.complete_schemas == {(CATALOG, my_db.dbname)}
    assert [t.name for t in result.tables] == [
        "Order Items",
        "active_customers",
        "customers",
        "events",
        "events#P#p2023",
        "events#P#p2024",
        "events#P#pmax",
        "ünïcødé",
    ]
    assert all(t.database == CATALOG and t.schema_name == my_db.dbname for t in result.tables)

    customers = _table(result, "customers")
    assert customers.kind is TableKind.TABLE and customers.comment == "people who buy"
    cols = {c.name: c for c in customers.columns}
    assert [c.name for c in customers.columns][:3] == ["id", "email", "status"]
    assert [c.ordinal for c in customers.columns] == list(range(1, 11))
    assert cols["id"].data_type == "int(10) unsigned"
    assert cols["id"].identity and not cols["id"].nullable
    assert cols["email"].comment == "login, lower-cased" and not cols["email"].nullable
    assert cols["status"].enum_values == ("new", "active", "it's gone")
    assert cols["status"].default == "new"
    assert cols["nickname"].default == "N/A" and cols["nickname"].nullable
    assert cols["literal_null"].default == "NULL"  # the string, not SQL NULL
    assert cols["note"].default is None
    assert cols["score"].default == "1.50"
    assert (cols["created"].default or "").lower().startswith("current_timestamp")
    assert cols["email_domain"].generated and "substring_index" in cols["email_domain"].generated
    assert cols["email_len"].generated and "email" in cols["email_len"].generated
    assert cols["email_len"].default is None and cols["email"].generated is None
    assert customers.primary_key is not None and customers.primary_key.columns == ("id",)
    assert [(k.name, k.columns) for k in customers.unique_constraints] == [("uq_email", ("email",))]
    indexes = {i.name: i for i in customers.indexes}
    assert sorted(indexes) == ["PRIMARY", "ix_domain_created", "uq_email"]
    assert indexes["PRIMARY"].primary and indexes["PRIMARY"].unique
    assert indexes["uq_email"].unique and not indexes["uq_email"].primary
    ix = indexes["ix_domain_created"]
    assert ix.columns == ("email_domain", "created") and not ix.unique
    assert ix.method == "btree"
    assert ix.definition is not None and "`email_domain`(20)" in ix.definition
    assert "`created` DESC" in ix.definition
    assert customers.row_estimate == 3
    assert customers.size_bytes is not None and customers.size_bytes > 0
    assert customers.properties["engine"] == "InnoDB"

    items = _table(result, "Order Items")
    assert items.primary_key is not None and items.primary_key.columns == ("order_id", "line")
    assert [(k.name, k.columns) for k in items.unique_constraints] == [
        ("uq_select_line", ("select", "line"))
    ]
    select = next(c for c in items.columns if c.name == "select")
    assert select.default == "it's" and not select.nullable
    (fk,) = items.foreign_keys
    assert (fk.name, fk.columns, fk.ref_table, fk.ref_columns) == (
        "fk_customer",
        ("customer_id",),
        "customers",
        ("id",),
    )
    assert (fk.ref_database, fk.ref_schema) == (CATALOG, my_db.dbname)
    assert (fk.on_update, fk.on_delete) == ("CASCADE", "SET NULL")

    uni = _table(result, "ünïcødé")
    assert [c.name for c in uni.columns] == ["ключ", "line", "naïve col"]
    assert uni.primary_key is not None and uni.primary_key.columns == ("ключ",)
    (composite,) = uni.foreign_keys
    assert composite.name == "fk composite"
    assert composite.columns == ("ключ", "line")
    assert composite.ref_columns == ("order_id", "line")
    assert composite.ref_table == "Order Items" and composite.on_delete == "CASCADE"

    view = _table(result, "active_customers")
    assert view.kind is TableKind.VIEW and view.comment is None
    assert [c.name for c in view.columns] == ["id", "email"]
    assert view.definition is not None and "active" in view.definition
    assert view.row_estimate is None and view.size_bytes is None

    events = _table(result, "events")
    assert events.kind is TableKind.PARTITIONED_TABLE
    assert events.partition_key == "RANGE (`year`)"
    assert [c.name for c in events.columns] == ["id", "year"]
    parts = [t for t in result.tables if t.kind is TableKind.PARTITION]
    assert [p.parent for p in parts] == [f"{my_db.dbname}.events"] * 3
    assert [p.properties["partition"] for p in parts] == ["p2023", "p2024", "pmax"]
    assert [p.partition_bound for p in parts] == [
        "VALUES LESS THAN (2024)",
        "VALUES LESS THAN (2025)",
        "VALUES LESS THAN MAXVALUE",
    ]
    assert all(p.partition_key == events.partition_key and not p.columns for p in parts)


async def test_discover_is_deterministic(my_db: MyDatabase) -> None:
    my_db.execute(SHOP)
    connector = _connector(my_db)
    first, second = await connector.discover(), await connector.discover()
    strip = {"tables": {"__all__": {"row_estimate", "size_bytes"}}}
    assert first.model_dump(exclude=strip) == second.model_dump(exclude=strip)


async def test_cross_schema_foreign_keys(my_db: MyDatabase, other_db: str) -> None:
    _admin(
        f"CREATE TABLE `{other_db}`.accounts (region CHAR(2) NOT NULL, num INT NOT NULL,"
        " PRIMARY KEY (region, num))"
    )
    my_db.execute(
        "CREATE TABLE invoices (id INT PRIMARY KEY, region CHAR(2), num INT,"
        " CONSTRAINT fk_account FOREIGN KEY (region, num)"
        f" REFERENCES `{other_db}`.accounts (region, num) ON DELETE RESTRICT)"
    )
    result = await _connector(my_db, schemas=[my_db.dbname, other_db]).discover()
    assert [s.name for s in result.schemas] == sorted([my_db.dbname, other_db])
    (fk,) = _table(result, "invoices").foreign_keys
    assert (fk.ref_database, fk.ref_schema, fk.ref_table) == (CATALOG, other_db, "accounts")
    assert (fk.columns, fk.ref_columns) == (("region", "num"), ("region", "num"))
    assert fk.on_delete == "RESTRICT"
    accounts = _table(result, "accounts")
    assert accounts.schema_name == other_db
    assert result.complete_schemas == {(CATALOG, my_db.dbname), (CATALOG, other_db)}
    # Reading only one side still reports the key into the other schema.
    alone = await _connector(my_db).discover()
    (fk,) = _table(alone, "invoices").foreign_keys
    assert fk.ref_schema == other_db


async def test_filters(my_db: MyDatabase, other_db: str) -> None:
    my_db.execute(
        "CREATE TABLE keep_a (id INT);\nCREATE TABLE keep_b (id INT);\nCREATE TABLE tmp_x (id INT)"
    )
    _admin(f"CREATE TABLE `{other_db}`.keep_c (id INT)")
    both = [my_db.dbname, other_db]

    def names(result: Any) -> list[str]:
        return [t.name for t in result.tables]

    result = await _connector(
        my_db, schemas=both, filters={"include_tables": ["keep_*"], "exclude_tables": ["*_b"]}
    ).discover()
    assert names(result) == ["keep_a", "keep_c"]
    result = await _connector(
        my_db, schemas=both, filters={"exclude_tables": [f"{my_db.dbname}.keep_*"]}
    ).discover()
    assert names(result) == ["tmp_x", "keep_c"]
    result = await _connector(
        my_db, schemas=both, filters={"exclude_schemas": [other_db]}
    ).discover()
    assert [s.name for s in result.schemas] == [my_db.dbname]
    assert result.complete_schemas == {(CATALOG, my_db.dbname)}
    result = await _connector(my_db, filters={"exclude_databases": [CATALOG]}).discover()
    assert result.databases_complete and not result.databases and not result.tables
    assert result.queries == 1

    # Without ``schemas``: every user schema, system schemas never.
    config = my_db.config(auth="none", filters={"include_schemas": both})
    result = await MySQLConnector.create(config).discover()
    assert [s.name for s in result.schemas] == sorted(both)
    config = my_db.config(auth="none")
    result = await MySQLConnector.create(config).discover()
    seen = {s.name for s in result.schemas}
    assert set(both) <= seen and not seen & {"mysql", "information_schema", "sys"}


async def test_query_count_does_not_grow_with_tables(my_db: MyDatabase, other_db: str) -> None:
    my_db.execute(";\n".join(f"CREATE TABLE t{i} (id INT PRIMARY KEY, v INT)" for i in range(5)))
    _admin(
        *(
            f"CREATE TABLE `{other_db}`.t{i} (id INT PRIMARY KEY, ref INT,"
            f" FOREIGN KEY (ref) REFERENCES `{other_db}`.t{i} (id))"
            for i in range(50)
        )
    )
    small = await _connector(my_db).discover()
    large = await _connector(my_db, schemas=[other_db]).discover()
    both = await _connector(my_db, schemas=[my_db.dbname, other_db]).discover()
    assert (len(small.tables), len(large.tables), len(both.tables)) == (5, 50, 55)
    assert small.queries == large.queries == both.queries
    assert small.queries_per_database == {CATALOG: small.queries}


async def test_missing_schema_is_a_warning(my_db: MyDatabase) -> None:
    result = await _connector(my_db, schemas=[my_db.dbname, "dw_no_such_db"]).discover()
    assert any("dw_no_such_db" in w for w in result.warnings)
    assert result.complete_schemas == {(CATALOG, my_db.dbname)}
    report = await _connector(my_db, schemas=["dw_no_such_db"]).test_connection()
    assert report.ok and report.steps[3].detail["missing"] == ["dw_no_such_db"]


# --------------------------------------------------------------------------- health


async def test_health_reuses_and_reconnects(my_db: MyDatabase) -> None:
    connector = _connector(my_db)
    try:
        first = await connector.check_health()
        assert first.state is HealthState.HEALTHY and first.latency_ms is not None
        opened = connector.report.connections_opened
        assert (await connector.check_health()).state is HealthState.HEALTHY
        assert connector.report.connections_opened == opened  # kept, not reopened
        _admin(f"KILL {connector._health_conn.thread_id()}")
        assert (await connector.check_health()).state is HealthState.HEALTHY
        assert connector.report.connections_opened == opened + 1
        slow = _connector(my_db, degraded_latency_ms=0.000001)
        assert (await slow.check_health()).state is HealthState.DEGRADED
        await slow.close()
    finally:
        await connector.close()
    assert connector._health_conn is None


async def test_health_down_on_closed_port(closed_port: tuple[str, int]) -> None:
    host, port = closed_port
    connector = MySQLConnector.create({"host": host, "port": port, "user": "u", "auth": "none"})
    health = await connector.check_health()
    assert health.state is HealthState.DOWN and health.error
    await connector.close()
