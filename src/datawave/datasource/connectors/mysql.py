"""MySQL 8 and MariaDB 10.x, read from ``information_schema`` with PyMySQL.

Mapping::

    database   the information_schema catalog, always "def"
    schema     a MySQL database ("shop"); mysql, information_schema, performance_schema and
               sys are skipped unless named in ``schemas``
    table      a base table, view, partitioned table, or one of its partitions, reported as
               "<table>#P#<partition>" (InnoDB's own spelling: partition names are only unique
               within their table). Partitions share their parent's columns and list none.

A foreign key into another MySQL database is therefore a cross-schema key
(``ForeignKeyInfo.ref_schema``).

Discovery runs the fixed list of queries built by :func:`catalog_queries`, each filtered with
``TABLE_SCHEMA IN (...)`` for every selected schema at once, and joins the rows in Python: the
number of queries never depends on the number of tables. Tables are all or nothing: when one
catalog query fails the run reports the database and schema listings but no tables (and no
complete schema), since a table without its columns or keys would look like drift.

MariaDB and MySQL 8 differ in how ``COLUMN_DEFAULT`` is spelled (MariaDB writes SQL literals,
``'a''b'`` and ``NULL``; MySQL 8 the bare value) and only MySQL 8 has functional indexes
(``STATISTICS.EXPRESSION``). Defaults are given as MySQL 8 spells them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, unquote

import pymysql
from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
)

from datawave.datasource.connectors.base import Connector, ConnectorConfig, run_blocking
from datawave.datasource.connectors.network import NetworkConfig
from datawave.datasource.connectors.steps import StepRunner
from datawave.datasource.errors import (
    AuthenticationFailed,
    ConnectionRefused,
    ConnectorError,
    ConnectorTimeout,
    PermissionDenied,
)
from datawave.datasource.models import (
    ColumnInfo,
    DatabaseInfo,
    DiscoveryResult,
    ForeignKeyInfo,
    HealthReport,
    HealthState,
    IndexInfo,
    KeyInfo,
    SchemaInfo,
    TableInfo,
    TableKind,
    TestReport,
)

__all__ = ["CATALOG", "SYSTEM_SCHEMAS", "MySQLConfig", "MySQLConnector", "catalog_queries"]

logger = logging.getLogger(__name__)

CATALOG = "def"
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})

_URL_SCHEMES = frozenset({"mysql", "mariadb", "mysql+pymysql", "mariadb+pymysql"})
_AUTH_ERRORS = frozenset({1045, 1698})  # access denied; MariaDB "no password" / unix_socket user
_PERMISSION_ERRORS = frozenset({1044, 1142, 1143, 1227})
_REFUSED_ERRORS = frozenset({2002, 2003, 2005})
_TIMEOUT_ERRORS = frozenset({1969, 3024})  # MariaDB max_statement_time, MySQL max_execution_time
_SAMPLE_ROWS = 5


# --------------------------------------------------------------------------- config


class MySQLConfig(NetworkConfig):
    """Where the server is and what to read.

    ``url`` (``mysql://user:pass@host:port/db``) is an alternative spelling: it is split into the
    fields while validating (fields given explicitly win) and not kept, so the password it holds
    ends up in ``password`` (a secret) and nowhere else.
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    url: SecretStr | None = Field(
        default=None, exclude=True, description="mysql://user:password@host:port/database"
    )
    host: str = Field(min_length=1)
    port: int = Field(default=3306, ge=1, le=65535)
    user: str = Field(min_length=1)
    auth: Literal["password", "none"] = "password"
    # Declared after ``auth`` so its validator can see it.
    password: SecretStr | None = Field(default=None, validate_default=True)
    schemas: list[str] | None = Field(
        default=None, description="MySQL databases to read; default: all but the system ones"
    )
    degraded_latency_ms: float = Field(default=1000.0, gt=0)

    url_schemes: ClassVar[frozenset[str]] = _URL_SCHEMES

    @classmethod
    def url_fields(cls, parts: SplitResult) -> dict[str, Any]:
        if parts.query:
            raise ValueError("url options (?...) are not supported, use the config fields")
        db = unquote(parts.path.lstrip("/"))
        if "/" in db:
            raise ValueError("url path must be a single database name")
        return {"schemas": [db]} if db else {}


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class _Server:
    """What the handshake tells us about the server; decides dialect details without a query."""

    version_text: str
    version: tuple[int, ...]
    mariadb: bool

    @classmethod
    def of(cls, conn: Any) -> _Server:
        text = str(conn.get_server_info())
        # MariaDB prefixes "5.5.5-" for old clients.
        bare = text[6:] if text.startswith("5.5.5-") else text
        m = re.match(r"(\d+)\.(\d+)\.(\d+)", bare)
        version = tuple(int(g) for g in m.groups()) if m else (0, 0, 0)
        return cls(bare, version, "mariadb" in text.lower())

    @property
    def flavor(self) -> str:
        return "mariadb" if self.mariadb else "mysql"

    @property
    def quoted_defaults(self) -> bool:
        return self.mariadb and self.version >= (10, 2, 7)

    @property
    def expression_indexes(self) -> bool:
        return not self.mariadb and self.version >= (8, 0, 13)

    @property
    def schema_comments(self) -> bool:
        return self.mariadb and self.version >= (10, 5, 0)


def _schemata_sql(server: _Server) -> str:
    comment = "SCHEMA_COMMENT" if server.schema_comments else "NULL"
    return f"SELECT CATALOG_NAME, SCHEMA_NAME, {comment} FROM information_schema.SCHEMATA"


def catalog_queries(*, expression_indexes: bool = False) -> dict[str, str]:
    """The batched catalog queries, in run order; ``{in}`` stands for the schema list.

    Args:
        expression_indexes: the server has ``STATISTICS.EXPRESSION`` (MySQL >= 8.0.13).
    """
    expression = ", EXPRESSION" if expression_indexes else ", NULL"
    return {
        "tables": (
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_ROWS, DATA_LENGTH,"
            " INDEX_LENGTH, TABLE_COLLATION, TABLE_COMMENT"
            " FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({in})"
        ),
        "views": (
            "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE"
            " FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ({in})"
        ),
        "columns": (
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_DEFAULT,"
            " IS_NULLABLE, COLUMN_TYPE, EXTRA, COLUMN_COMMENT, GENERATION_EXPRESSION"
            " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({in})"
        ),
        # Two queries joined in Python: MariaDB answers the same JOIN 20x slower.
        "constraints": (
            "SELECT TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE"
            " FROM information_schema.TABLE_CONSTRAINTS WHERE TABLE_SCHEMA IN ({in})"
            " AND CONSTRAINT_TYPE IN ('PRIMARY KEY', 'UNIQUE', 'FOREIGN KEY')"
        ),
        "key_columns": (
            "SELECT TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, ORDINAL_POSITION,"
            " REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME"
            " FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA IN ({in})"
        ),
        "referential": (
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, UPDATE_RULE, DELETE_RULE"
            " FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA IN ({in})"
        ),
        "indexes": (
            "SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME,"
            f" SUB_PART, COLLATION, INDEX_TYPE{expression}"
            " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({in})"
        ),
        "partitions": (
            "SELECT TABLE_SCHEMA, TABLE_NAME, PARTITION_NAME, SUBPARTITION_NAME,"
            " PARTITION_ORDINAL_POSITION, PARTITION_METHOD, SUBPARTITION_METHOD,"
            " PARTITION_EXPRESSION, SUBPARTITION_EXPRESSION, PARTITION_DESCRIPTION, TABLE_ROWS,"
            " DATA_LENGTH, INDEX_LENGTH, PARTITION_COMMENT"
            " FROM information_schema.PARTITIONS"
            " WHERE TABLE_SCHEMA IN ({in}) AND PARTITION_NAME IS NOT NULL"
        ),
    }


_COUNT_TABLES = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({in})"


def _bind(sql: str, schemas: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """Expand every ``{in}`` to placeholders; the schema list is repeated for each one."""
    marks = ", ".join(["%s"] * len(schemas))
    return sql.replace("{in}", marks), tuple(schemas) * sql.count("{in}")


# --------------------------------------------------------------------------- connector


@dataclass
class _Selection:
    all_schemas: list[str]
    selected: list[str]
    missing: list[str]
    catalog_included: bool


@dataclass
class _Run:
    """Book-keeping of one discovery: queries sent, and what went wrong."""

    conn: Any
    queries: int = 0
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class MySQLConnector(Connector):
    """Blocking PyMySQL calls run in worker threads; driver errors are translated in
    :meth:`_translate` only.
    """

    type_name: ClassVar[str] = "mysql"
    config_model: ClassVar[type[ConnectorConfig]] = MySQLConfig
    extra: ClassVar[str | None] = "mysql"
    description: ClassVar[str] = "MySQL 8 / MariaDB 10.x via PyMySQL (information_schema)"

    config: MySQLConfig

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        self._health_lock = threading.Lock()
        self._health_conn: Any = None

    # -- connections and errors ----------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"mysql {self.config.host}:{self.config.port}"

    def _open(self, *, query_timeout_s: float | None = None) -> Any:
        """Connect and log in; the handshake is bounded by ``connect_timeout_s``."""
        cfg = self.config
        password = (
            cfg.password.get_secret_value() if cfg.password and cfg.auth == "password" else ""
        )
        try:
            conn = pymysql.connect(
                host=cfg.host,
                port=cfg.port,
                user=cfg.user,
                password=password,
                connect_timeout=cfg.connect_timeout_s,
                # PyMySQL reads the server greeting and the auth reply with read_timeout, so a
                # server that accepts TCP and never answers fails after connect_timeout_s too.
                read_timeout=cfg.connect_timeout_s,
                write_timeout=cfg.connect_timeout_s,
                charset="utf8mb4",
                autocommit=True,
                local_infile=False,
            )
        except Exception as exc:
            raise self._translate(exc) from exc
        self.report.connections_opened += 1
        # Catalog queries may take longer than a handshake; PyMySQL has no public setter.
        conn._read_timeout = conn._write_timeout = query_timeout_s or cfg.step_timeout_s
        return conn

    def _translate(self, exc: BaseException) -> ConnectorError:
        """The one boundary where driver and socket errors become datawave errors."""
        if isinstance(exc, ConnectorError):
            return exc
        code: int | None = None
        text = str(exc) or type(exc).__name__
        if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2:
            code = exc.args[0] if isinstance(exc.args[0], int) else None
            text = str(exc.args[1])
        cls: type[ConnectorError]
        if code in _TIMEOUT_ERRORS or _caused_by(exc, TimeoutError):
            cls = ConnectorTimeout
        elif code in _AUTH_ERRORS:
            cls = AuthenticationFailed
        elif code in _PERMISSION_ERRORS:
            cls = PermissionDenied
        elif code in _REFUSED_ERRORS or _caused_by(exc, ConnectionRefusedError):
            cls = ConnectionRefused
        else:
            cls = ConnectorError
        message = self.redact(f"{self._where}: {text}")
        self.report.record_error(message)
        return cls(message, host=self.config.host, port=self.config.port, driver_code=code)

    def _reach_host(self) -> dict[str, Any]:
        """A plain TCP connect: tells a closed port or a dead host from a login problem."""
        cfg = self.config
        try:
            with socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout_s):
                return {"host": cfg.host, "port": cfg.port}
        except OSError as exc:
            cls: type[ConnectorError] = ConnectionRefused
            if isinstance(exc, TimeoutError):
                cls, why = (
                    ConnectorTimeout,
                    f"TCP connect timed out after {cfg.connect_timeout_s:g}s",
                )
            elif isinstance(exc, socket.gaierror):
                why = f"cannot resolve host ({exc.strerror})"
            else:
                why = str(exc.strerror or exc)
            message = self.redact(f"{self._where}: {why}")
            self.report.record_error(message)
            raise cls(message, host=cfg.host, port=cfg.port) from exc

    def _fetch(self, conn: Any, sql: str, schemas: Sequence[str] = ()) -> list[tuple[Any, ...]]:
        query, params = _bind(sql, schemas)
        self.report.queries += 1
        try:
            with conn.cursor() as cur:
                cur.execute(query, params or None)
                return list(cur.fetchall())
        except Exception as exc:
            raise self._translate(exc) from exc

    def _select_schemas(self, conn: Any, server: _Server) -> tuple[_Selection, list[Any]]:
        rows = self._fetch(conn, _schemata_sql(server))
        return self._selection(rows), rows

    def _selection(self, rows: list[tuple[Any, ...]]) -> _Selection:
        cfg = self.config
        catalogs = {_text(r[0]) or CATALOG for r in rows} or {CATALOG}
        names = sorted({_text(r[1]) or "" for r in rows} - {""})
        wanted = set(cfg.schemas) if cfg.schemas is not None else None
        included = cfg.filters.database(CATALOG) and CATALOG in catalogs
        selected = [
            n
            for n in names
            if included
            and (n in wanted if wanted is not None else n not in SYSTEM_SCHEMAS)
            and cfg.filters.schema(n)
        ]
        missing = sorted(wanted - set(names)) if wanted is not None else []
        return _Selection(names, selected, missing, included)

    # -- test_connection -------------------------------------------------------------------

    async def test_connection(self) -> TestReport:
        cfg = self.config
        runner = StepRunner(
            timeout_s=cfg.step_timeout_s, secrets=cfg.secret_values(), translate=self._translate
        )
        # TCP connect and handshake are each bounded by the driver; the slack lets its own,
        # more precise error win over the runner's.
        await runner.run(
            "reach_host", self._reach_host, timeout_s=cfg.connect_timeout_s + 1, detail=_same
        )
        conn = await runner.run(
            "authenticate", self._open, timeout_s=2 * cfg.connect_timeout_s + 1, detail=_conn_detail
        )
        try:
            await self._catalog_steps(runner, conn)
        finally:
            if conn is not None:
                await run_blocking(_close_quietly, conn)
        return runner.report()

    async def _catalog_steps(self, runner: StepRunner, conn: Any) -> None:
        server = _Server.of(conn) if conn is not None else None

        def list_databases() -> dict[str, Any]:
            rows = self._fetch(
                conn, "SELECT DISTINCT CATALOG_NAME FROM information_schema.SCHEMATA"
            )
            return {"databases": sorted(_text(r[0]) or "" for r in rows)}

        def list_schemas() -> _Selection:
            assert server is not None
            return self._select_schemas(conn, server)[0]

        await runner.run("list_databases", list_databases, detail=lambda d: d)
        selection = await runner.run("list_schemas", list_schemas, detail=_selection_detail)
        schemas = selection.selected if selection else []
        queries = catalog_queries(expression_indexes=bool(server and server.expression_indexes))

        def probe(*names: str) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                out: dict[str, Any] = {"schemas": len(schemas)}
                for name in names:
                    if name == "count_tables":
                        rows = self._fetch(conn, _COUNT_TABLES, schemas) if schemas else [(0,)]
                        out["tables"] = int(rows[0][0] or 0)
                    else:  # the discovery query itself, on a few rows: privileges, not volume
                        sql = f"SELECT * FROM ({queries[name]}) AS q LIMIT {_SAMPLE_ROWS}"
                        out[f"{name}_sample"] = (
                            len(self._fetch(conn, sql, schemas)) if schemas else 0
                        )
                return out

            return run

        await runner.run("read_table_catalog", probe("count_tables", "views"), detail=_same)
        await runner.run("read_column_catalog", probe("columns"), detail=_same)
        await runner.run(
            "read_constraints", probe("constraints", "key_columns", "referential"), detail=_same
        )
        await runner.run("read_indexes", probe("indexes"), detail=_same)
        await runner.run("read_statistics", probe("tables", "partitions"), detail=_same)

    # -- discover --------------------------------------------------------------------------

    async def discover(self, *, known: Mapping[str, str] | None = None) -> DiscoveryResult:
        """Read every selected schema in a fixed number of queries.

        Raises:
            ConnectorError: the server could not be reached, logged into, or listed.
        """
        return await run_blocking(self._discover)

    def _discover(self) -> DiscoveryResult:
        conn = self._open()
        try:
            return self._read_catalog(_Run(conn))
        finally:
            _close_quietly(conn)

    def _query(self, run: _Run, name: str, sql: str, schemas: Sequence[str]) -> list[Any] | None:
        """One catalog query; a failure is recorded, not raised (the listings above it stand)."""
        run.queries += 1
        try:
            return self._fetch(run.conn, sql, schemas)
        except ConnectorError as exc:
            run.failures.append(f"{name}: {exc.message}")
            logger.warning("mysql discovery query %s failed: %s", name, exc.message)
            return None

    def _read_catalog(self, run: _Run) -> DiscoveryResult:
        server = _Server.of(run.conn)
        run.queries += 1
        selection, schemata = self._select_schemas(run.conn, server)  # raises: nothing to show
        run.warnings.extend(
            f"schema {s!r} does not exist or is not visible to {self.config.user!r}"
            for s in selection.missing
        )
        schemas = selection.selected
        rows: dict[str, list[Any]] = {}
        if schemas:
            for name, sql in catalog_queries(expression_indexes=server.expression_indexes).items():
                found = self._query(run, name, sql, schemas)
                if found is None:
                    break
                rows[name] = found
        # Tables are all or nothing: one read without its columns or keys would look like drift.
        tables: tuple[TableInfo, ...] = ()
        if schemas and not run.failures:
            builder = _CatalogBuilder(self.config, server)
            builder.add_tables(rows["tables"])
            builder.add_views(rows["views"])
            builder.add_columns(rows["columns"])
            builder.add_keys(rows["constraints"], rows["key_columns"], rows["referential"])
            builder.add_indexes(rows["indexes"])
            builder.add_partitions(rows["partitions"])
            tables = builder.build()

        comments = {_text(r[1]): _text(r[2]) or None for r in schemata}
        databases: tuple[DatabaseInfo, ...] = ()
        if selection.catalog_included:
            props = {"flavor": server.flavor, "server_version": server.version_text}
            databases = (DatabaseInfo(name=CATALOG, properties=props),)
        return DiscoveryResult(
            databases=databases,
            schemas=tuple(
                SchemaInfo(database=CATALOG, name=s, comment=comments.get(s)) for s in schemas
            ),
            tables=tables,
            databases_complete=True,
            complete_databases=frozenset({CATALOG} if selection.catalog_included else ()),
            complete_schemas=frozenset((CATALOG, s) for s in schemas if not run.failures),
            queries=run.queries,
            queries_per_database={CATALOG: run.queries},
            warnings=tuple(run.warnings),
            failures=tuple(run.failures),
        )

    # -- health ----------------------------------------------------------------------------

    async def check_health(self) -> HealthReport:
        limit = 2 * self.config.connect_timeout_s + 1
        now = datetime.now(UTC)
        try:
            latency_ms = await asyncio.wait_for(run_blocking(self._probe, limit), timeout=limit)
        except TimeoutError:
            error = f"{self._where}: health check timed out after {limit:g}s"
            return HealthReport(state=HealthState.DOWN, error=error, checked_at=now)
        except ConnectorError as exc:
            return HealthReport(
                state=HealthState.DOWN, error=self.redact(exc.message), checked_at=now
            )
        slow = latency_ms > self.config.degraded_latency_ms
        return HealthReport(
            state=HealthState.DEGRADED if slow else HealthState.HEALTHY,
            latency_ms=round(latency_ms, 3),
            checked_at=now,
        )

    def _probe(self, limit: float) -> float:
        """``SELECT 1`` on the kept connection, reconnecting once if it broke."""
        if not self._health_lock.acquire(timeout=min(limit, self.config.connect_timeout_s)):
            raise ConnectorTimeout(f"{self._where}: the previous health check is still running")
        try:
            conn = self._health_conn
            if conn is not None and conn.open:
                t0 = time.perf_counter()
                try:
                    self._fetch(conn, "SELECT 1")
                    return (time.perf_counter() - t0) * 1000
                except ConnectorError:
                    logger.info("%s: health connection broken, reconnecting", self._where)
            _close_quietly(conn)
            self._health_conn = None
            t0 = time.perf_counter()
            conn = self._open(query_timeout_s=self.config.connect_timeout_s)
            try:
                self._fetch(conn, "SELECT 1")
            except ConnectorError:
                _close_quietly(conn)
                raise
            self._health_conn = conn
            return (time.perf_counter() - t0) * 1000
        finally:
            self._health_lock.release()

    async def close(self) -> None:
        await run_blocking(self._close_health)

    def _close_health(self) -> None:
        if not self._health_lock.acquire(timeout=2 * self.config.connect_timeout_s + 1):
            return  # a stuck probe owns it; its socket timeouts end it
        try:
            _close_quietly(self._health_conn)
            self._health_conn = None
        finally:
            self._health_lock.release()


# --------------------------------------------------------------------------- mapping


@dataclass
class _Draft:
    """A table while its rows from the different queries are joined."""

    schema: str
    name: str
    kind: TableKind
    comment: str | None = None
    row_estimate: int | None = None
    size_bytes: int | None = None
    properties: dict[str, str] = field(default_factory=dict)
    definition: str | None = None
    columns: list[ColumnInfo] = field(default_factory=list)
    primary_key: KeyInfo | None = None
    uniques: list[KeyInfo] = field(default_factory=list)
    foreign_keys: list[ForeignKeyInfo] = field(default_factory=list)
    indexes: list[IndexInfo] = field(default_factory=list)
    partition_key: str | None = None


_TABLE_KINDS = {"BASE TABLE": TableKind.TABLE, "VIEW": TableKind.VIEW}
_GENERATED = re.compile(r"\b(VIRTUAL|STORED|PERSISTENT) GENERATED\b", re.IGNORECASE)


class _CatalogBuilder:
    """Joins the rows of :func:`catalog_queries` into sorted :class:`TableInfo` records."""

    def __init__(self, config: MySQLConfig, server: _Server) -> None:
        self._filters = config.filters
        self._server = server
        self._tables: dict[tuple[str, str], _Draft] = {}
        self._partitions: list[TableInfo] = []

    def _draft(self, schema: Any, table: Any) -> _Draft | None:
        return self._tables.get((_text(schema) or "", _text(table) or ""))

    def add_tables(self, rows: list[Any]) -> None:
        for schema_, name_, type_, engine, rows_, data, index, collation, comment in rows:
            schema, name, table_type = _text(schema_) or "", _text(name_) or "", _text(type_) or ""
            if not self._filters.table(schema, name):
                continue
            kind = _TABLE_KINDS.get(table_type, TableKind.TABLE)
            props = {"engine": _text(engine), "collation": _text(collation)}
            if table_type not in _TABLE_KINDS:  # MariaDB: SEQUENCE, SYSTEM VERSIONED
                props["table_type"] = table_type
            is_view = kind is TableKind.VIEW
            self._tables[(schema, name)] = _Draft(
                schema=schema,
                name=name,
                kind=kind,
                # Views carry the literal comment "VIEW".
                comment=None if is_view else (_text(comment) or None),
                row_estimate=None if is_view or rows_ is None else int(rows_),
                size_bytes=None if is_view or data is None else int(data) + int(index or 0),
                properties={k: v for k, v in props.items() if v},
            )

    def add_views(self, rows: list[Any]) -> None:
        for schema, name, definition, check_option, security in rows:
            draft = self._draft(schema, name)
            if draft is None:
                continue
            draft.definition = _text(definition) or None  # empty without SHOW VIEW privilege
            draft.properties["security_type"] = _text(security) or ""
            if (_text(check_option) or "NONE") != "NONE":
                draft.properties["check_option"] = _text(check_option) or ""

    def add_columns(self, rows: list[Any]) -> None:
        for row in sorted(rows, key=lambda r: (_text(r[0]), _text(r[1]), int(r[3]))):
            draft = self._draft(row[0], row[1])
            if draft is not None:
                draft.columns.append(self._column(row))

    def _column(self, row: Sequence[Any]) -> ColumnInfo:
        _, _, name, ordinal, default, nullable, column_type, extra_, comment, expression = row
        extra = _text(extra_) or ""
        data_type = _text(column_type) or ""
        generated = None
        if _GENERATED.search(extra):
            generated = _text(expression) or "GENERATED"
        default_ = None if generated else _text(default)
        if default_ is not None and self._server.quoted_defaults:
            default_ = _sql_literal(default_)
        return ColumnInfo(
            name=_text(name) or "",
            ordinal=int(ordinal),
            data_type=data_type,
            nullable=_text(nullable) == "YES",
            default=default_,
            comment=_text(comment) or None,
            generated=generated,
            identity="auto_increment" in extra.lower(),
            enum_values=_enum_values(data_type),
        )

    def add_keys(self, constraints: list[Any], columns: list[Any], referential: list[Any]) -> None:
        types = {(_text(s), _text(t), _text(n)): _text(kind) for s, t, n, kind in constraints}
        rules = {
            (_text(s), _text(t), _text(n)): (_text(upd), _text(dele))
            for s, t, n, upd, dele in referential
        }
        grouped: dict[tuple[str, str, str], list[Sequence[Any]]] = defaultdict(list)
        for row in columns:
            grouped[(_text(row[0]) or "", _text(row[1]) or "", _text(row[2]) or "")].append(row)
        for key, parts in grouped.items():
            draft = self._tables.get(key[:2])
            kind = types.get(key)
            if draft is None or kind is None:
                continue
            parts = sorted(parts, key=lambda r: int(r[4]))
            names = tuple(_text(r[3]) or "" for r in parts)
            if kind == "PRIMARY KEY":
                draft.primary_key = KeyInfo(name=key[2], columns=names)
            elif kind == "UNIQUE":
                draft.uniques.append(KeyInfo(name=key[2], columns=names))
            else:
                on_update, on_delete = rules.get(key, (None, None))
                draft.foreign_keys.append(
                    ForeignKeyInfo(
                        name=key[2],
                        columns=names,
                        ref_database=CATALOG,
                        ref_schema=_text(parts[0][5]),
                        ref_table=_text(parts[0][6]) or "",
                        ref_columns=tuple(_text(r[7]) or "" for r in parts),
                        on_update=on_update,
                        on_delete=on_delete,
                    )
                )

    def add_indexes(self, rows: list[Any]) -> None:
        grouped: dict[tuple[str, str, str], list[Sequence[Any]]] = defaultdict(list)
        for row in rows:
            grouped[(_text(row[0]) or "", _text(row[1]) or "", _text(row[2]) or "")].append(row)
        for (schema, table, name), parts in grouped.items():
            draft = self._tables.get((schema, table))
            if draft is None:
                continue
            parts = sorted(parts, key=lambda r: int(r[4]))
            unique = int(parts[0][3]) == 0
            index_type = (_text(parts[0][8]) or "").upper()
            # MySQL 8 functional key parts have no COLUMN_NAME but an EXPRESSION.
            columns = tuple(_text(r[5]) or _text(r[9]) or "" for r in parts)
            draft.indexes.append(
                IndexInfo(
                    name=name,
                    columns=columns,
                    unique=unique,
                    primary=name == "PRIMARY",
                    predicate=None,  # MySQL has no partial indexes (explicit for mypy)
                    method=index_type.lower() or None,
                    definition=_index_definition(schema, table, name, unique, index_type, parts),
                )
            )

    def add_partitions(self, rows: list[Any]) -> None:
        grouped: dict[tuple[str, str], dict[str, list[Sequence[Any]]]] = defaultdict(dict)
        for row in rows:
            key = (_text(row[0]) or "", _text(row[1]) or "")
            grouped[key].setdefault(_text(row[2]) or "", []).append(row)
        for (schema, table), partitions in grouped.items():
            parent = self._tables.get((schema, table))
            if parent is None:
                continue
            first = next(iter(partitions.values()))[0]
            method, sub_method = _text(first[5]) or "", _text(first[6])
            parent.kind = TableKind.PARTITIONED_TABLE
            parent.partition_key = f"{method} ({_text(first[7]) or ''})"
            if sub_method:
                parent.properties["subpartition_key"] = f"{sub_method} ({_text(first[8]) or ''})"
            for pname, subrows in partitions.items():
                self._partitions.append(
                    _partition(parent, pname, method, subrows, bool(sub_method))
                )

    def build(self) -> tuple[TableInfo, ...]:
        tables = [
            TableInfo(  # type: ignore[call-arg]  # "schema" alias
                database=CATALOG,
                schema=d.schema,
                name=d.name,
                kind=d.kind,
                comment=d.comment,
                columns=tuple(d.columns),
                primary_key=d.primary_key,
                unique_constraints=tuple(
                    sorted(d.uniques, key=lambda k: (k.name or "", k.columns))
                ),
                foreign_keys=tuple(sorted(d.foreign_keys, key=lambda k: (k.name or "", k.columns))),
                indexes=tuple(sorted(d.indexes, key=lambda i: i.name)),
                parent=None,  # explicit: mypy without the pydantic plugin misses Field(None, ...)
                partition_key=d.partition_key,
                definition=d.definition,
                row_estimate=d.row_estimate,
                size_bytes=d.size_bytes,
                properties=d.properties,
            )
            for d in self._tables.values()
        ]
        tables.extend(self._partitions)
        return tuple(sorted(tables, key=lambda t: (t.schema_name, t.name)))


def _partition(
    parent: _Draft, name: str, method: str, rows: list[Sequence[Any]], has_subpartitions: bool
) -> TableInfo:
    first = rows[0]
    description = _text(first[9])
    props = {"partition": name, "ordinal": str(first[4])}
    if has_subpartitions:
        props["subpartitions"] = ",".join(sorted(_text(r[3]) or "" for r in rows))
    return TableInfo(  # type: ignore[call-arg]  # "schema" alias
        database=CATALOG,
        schema=parent.schema,
        name=f"{parent.name}#P#{name}",
        kind=TableKind.PARTITION,
        comment=_text(first[13]) or None,
        parent=f"{parent.schema}.{parent.name}",
        partition_key=parent.partition_key,
        partition_bound=_partition_bound(method, description),
        definition=None,  # explicit: mypy without the pydantic plugin misses Field(None, ...)
        row_estimate=sum(int(r[10] or 0) for r in rows),
        size_bytes=sum(int(r[11] or 0) + int(r[12] or 0) for r in rows),
        properties=props,
    )


def _partition_bound(method: str, description: str | None) -> str | None:
    if description is None:
        return None  # HASH / KEY partitions have no bound
    if method.startswith("RANGE"):
        bound = description if description == "MAXVALUE" else f"({description})"
        return f"VALUES LESS THAN {bound}"
    if method.startswith("LIST"):
        return f"VALUES IN ({description})"
    return description  # e.g. MariaDB SYSTEM_TIME: CURRENT / HISTORY


def _index_definition(
    schema: str, table: str, name: str, unique: bool, index_type: str, parts: list[Sequence[Any]]
) -> str:
    keys = []
    for r in parts:
        column, sub_part, collation, expression = _text(r[5]), r[6], _text(r[7]), _text(r[9])
        key = _qi(column) if column is not None else f"({expression})"
        if sub_part is not None:
            key += f"({int(sub_part)})"
        if collation == "D":
            key += " DESC"
        keys.append(key)
    cols = ", ".join(keys)
    using = f" USING {index_type}" if index_type in ("BTREE", "HASH", "RTREE") else ""
    if name == "PRIMARY":
        return f"PRIMARY KEY ({cols}){using}"
    prefix = {"FULLTEXT": "FULLTEXT ", "SPATIAL": "SPATIAL "}.get(
        index_type, "UNIQUE " if unique else ""
    )
    return f"CREATE {prefix}INDEX {_qi(name)} ON {_qi(schema)}.{_qi(table)} ({cols}){using}"


# --------------------------------------------------------------------------- small helpers

_ESCAPES = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "b": "\b"}
_QUOTED = re.compile(r"'((?:[^'\\]|''|\\.)*)'", re.DOTALL)
_ESCAPE = re.compile(r"''|\\(.)", re.DOTALL)


def _unescape(body: str) -> str:
    """The value of a single-quoted MySQL string literal's body."""
    return _ESCAPE.sub(lambda m: "'" if m[0] == "''" else _ESCAPES.get(m[1], m[1]), body)


def _sql_literal(value: str) -> str | None:
    """MariaDB's ``COLUMN_DEFAULT`` (an SQL expression) spelled as MySQL 8 does.

    ``NULL`` becomes ``None`` and a quoted string its value; numbers and expressions such as
    ``current_timestamp()`` stay as written.
    """
    if value == "NULL":
        return None
    m = _QUOTED.fullmatch(value)
    return _unescape(m.group(1)) if m else value


def _enum_values(column_type: str) -> tuple[str, ...] | None:
    if not column_type.lower().startswith("enum("):
        return None
    return tuple(_unescape(m.group(1)) for m in _QUOTED.finditer(column_type, 5))


def _text(value: Any) -> str | None:
    """information_schema columns may come back as bytes (binary collations on MySQL 8)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _qi(name: str | None) -> str:
    return "`" + (name or "").replace("`", "``") + "`"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is anywhere in the chain (PyMySQL wraps socket errors)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, kind):
            return True
        seen.add(id(e))
        todo += [e.__cause__, e.__context__, getattr(e, "original_exception", None)]
    return False


def _close_quietly(conn: Any) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # already closed or the socket is gone: nothing left to release
        logger.debug("closing a broken mysql connection", exc_info=True)


def _conn_detail(conn: Any) -> dict[str, Any]:
    server = _Server.of(conn)
    return {"server_version": server.version_text, "flavor": server.flavor}


def _selection_detail(selection: _Selection) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "schemas": len(selection.all_schemas),
        "selected": selection.selected[:50],
        "selected_count": len(selection.selected),
    }
    if selection.missing:
        detail["missing"] = selection.missing
    return detail


def _same(value: dict[str, Any]) -> dict[str, Any]:
    return value
