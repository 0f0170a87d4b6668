"""PostgreSQL connector: ``pg_catalog`` in a constant number of queries per database.

Every blocking psycopg call runs in a worker thread (:func:`run_blocking` / :class:`StepRunner`)
under two bounds: ``connect_timeout`` for reaching and authenticating, ``statement_timeout``
(``step_timeout_s``) for each query, and an asyncio deadline on top so a silent peer cannot hold
a caller past its budget. Driver errors become the :mod:`datawave.datasource.errors` tree in
:meth:`PostgresConnector.translate`, the one boundary, with secrets redacted.

Discovery reads each database inside read-only, repeatable-read transactions that see one
snapshot: the main connection exports its snapshot (``pg_export_snapshot()``) and a second
connection imports it (``SET TRANSACTION SNAPSHOT``) to read the largest catalog, the columns,
while the main one reads the rest. Both see the catalog as of the same instant, so the listing
stays consistent; when the second connection cannot be had (connection limit, no snapshot
export on the server) the main one reads everything. Rows are grouped in Python by relation
oid; tables whose signature the caller already holds are not rebuilt (``known``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from operator import attrgetter
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote

import psycopg
from psycopg import sql as pgsql
from psycopg.abc import QueryNoTemplate as Query
from pydantic import ConfigDict, Field, SecretStr

from datawave.datasource.connectors import pg_catalog as sql
from datawave.datasource.connectors.base import (
    Connector,
    ConnectorConfig,
    gc_paused,
    run_blocking,
)
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
    DatabaseInfo,
    DiscoveryResult,
    HealthReport,
    HealthState,
    SchemaInfo,
    TableInfo,
    TestReport,
)

__all__ = ["PostgresConfig", "PostgresConnector"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

APPLICATION_NAME = "datawave-datasource"
#: Extra seconds an asyncio deadline grants over the driver's own timeout, so the server-side
#: ``statement_timeout`` (a clean error) normally fires first.
_SLACK_S = 1.0
_URL_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"})
_NAME = attrgetter("name")


# -- config ------------------------------------------------------------------------------------


class PostgresConfig(NetworkConfig):
    """How to reach one PostgreSQL server.

    ``url`` (``postgresql://user:pass@host:port/db?sslmode=...``) is an alternative spelling of
    the connection fields; fields given explicitly win over the URL's parts. The URL is not kept:
    after validation it is split into the fields, so the password lives only in ``password``.
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    url: SecretStr | None = Field(
        None, exclude=True, description="postgresql://user:password@host:port/database"
    )
    host: str = Field(min_length=1)
    port: int = Field(5432, ge=1, le=65535)
    user: str = Field(min_length=1)
    auth: Literal["password", "none"] = Field(
        "password", description="'none' for trust, peer or .pgpass setups"
    )
    password: SecretStr | None = Field(None, validate_default=True)
    database: str = Field("postgres", min_length=1, description="Database to connect to first")
    databases: list[str] | None = Field(
        None, min_length=1, description="Databases to discover; default: all that allow connections"
    )
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    degraded_latency_ms: float = Field(1000.0, gt=0)

    url_schemes: ClassVar[frozenset[str]] = _URL_SCHEMES

    @classmethod
    def url_fields(cls, parts: SplitResult) -> dict[str, Any]:
        out: dict[str, Any] = {}
        database = unquote(parts.path.lstrip("/"))
        if database:
            out["database"] = database
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key != "sslmode":
                raise ValueError("the only URL query parameter accepted is sslmode")
            out["sslmode"] = value
        return out


# -- driver plumbing ---------------------------------------------------------------------------


class _Session:
    """One psycopg connection, used by one worker thread at a time.

    A caller that gave up on a hung thread (asyncio deadline) must not free the connection
    under that thread's feet: :meth:`close` waits briefly for the lock and otherwise leaves the
    closing to the thread, when its query returns.
    """

    def __init__(self, conn: psycopg.Connection[Any], database: str) -> None:
        self.conn = conn
        self.database = database
        self.lock = threading.Lock()
        self.queries = 0
        self._close_requested = False

    def fetch(self, query: Query, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self.lock:
            try:
                self.queries += 1
                cursor = self.conn.execute(query, params)  # waits for the whole result
                # Turning tens of thousands of rows into tuples (and their arrays into lists)
                # would otherwise trigger a full collection of the process heap midway: CPU
                # bound and short, unlike the wait above, so the collector is paused only here.
                with gc_paused():
                    return cursor.fetchall()
            finally:
                if self._close_requested:
                    self.conn.close()

    def run(self, statement: Query) -> None:
        """A statement without a result (``SET ...``)."""
        with self.lock:
            try:
                self.queries += 1
                self.conn.execute(statement)
            finally:
                if self._close_requested:
                    self.conn.close()

    def rollback(self) -> None:
        with self.lock:
            self.conn.rollback()

    @property
    def usable(self) -> bool:
        return not (self.conn.closed or self.conn.broken)

    def close(self, wait_s: float = 1.0) -> None:
        self._close_requested = True
        if self.lock.acquire(timeout=wait_s):
            try:
                self.conn.close()
            finally:
                self.lock.release()


@dataclass
class _DatabaseScan:
    """What one database yielded; filled step by step so a late failure keeps earlier parts."""

    name: str
    queries: int = 0
    schemas: list[SchemaInfo] = field(default_factory=list)
    tables: list[TableInfo] = field(default_factory=list)
    signatures: dict[str, str] = field(default_factory=dict)
    unchanged: dict[str, sql.Stats] = field(default_factory=dict)
    size_bytes: int | None = None
    schemas_complete: bool = False
    tables_complete: bool = False
    warnings: list[str] = field(default_factory=list)
    error: ConnectorError | None = None


# -- the connector -----------------------------------------------------------------------------


class PostgresConnector(Connector):
    """PostgreSQL 12+ via psycopg 3: databases, schemas, relations, keys, indexes, statistics."""

    type_name: ClassVar[str] = "postgresql"
    config_model: ClassVar[type[ConnectorConfig]] = PostgresConfig
    extra: ClassVar[str | None] = "postgresql"
    description: ClassVar[str] = "PostgreSQL databases, read from pg_catalog"

    config: PostgresConfig

    def __init__(self, config: ConnectorConfig) -> None:
        if not isinstance(config, PostgresConfig):
            raise TypeError("PostgresConnector needs a PostgresConfig (use create())")
        super().__init__(config)
        self._health: _Session | None = None
        self._health_lock = threading.Lock()  # guards the swap of ``_health``, never held long

    # -- error boundary ----------------------------------------------------------------------

    def translate(self, exc: BaseException, *, database: str | None = None) -> ConnectorError:
        """Map a driver or socket error to the errors tree; the message is redacted."""
        if isinstance(exc, ConnectorError):
            return exc
        cfg = self.config
        text = " ".join(str(exc).split()) or type(exc).__name__
        sqlstate = getattr(exc, "sqlstate", None)
        cls = _classify(exc, sqlstate, text.lower())
        context: dict[str, Any] = {"host": cfg.host, "port": cfg.port}
        if database is not None:
            context["database"] = database
        if sqlstate:
            context["sqlstate"] = sqlstate
        return cls(self.redact(text), **context)

    def _guard(self, fn: Callable[[], T], *, database: str | None = None) -> Callable[[], T]:
        """``fn`` with driver errors translated, for thread callables."""

        def call() -> T:
            try:
                return fn()
            except Exception as exc:
                raise self.translate(exc, database=database) from exc

        return call

    # -- connections -------------------------------------------------------------------------

    def _connect_kwargs(self, database: str) -> dict[str, Any]:
        cfg = self.config
        statement_ms = max(1, int(cfg.step_timeout_s * 1000))
        idle_s = max(1, int(cfg.step_timeout_s))
        kwargs: dict[str, Any] = {
            "host": cfg.host,
            "port": cfg.port,
            "user": cfg.user,
            "dbname": database,
            "sslmode": cfg.sslmode,
            # libpq counts whole seconds (psycopg raises anything below 2 to 2); the asyncio
            # deadline around the call enforces fractional budgets.
            "connect_timeout": max(2, math.ceil(cfg.connect_timeout_s)),
            "application_name": APPLICATION_NAME,
            "client_encoding": "UTF8",
            # An empty-ish search_path makes pg_get_* output schema-qualified whatever the
            # role's settings, so definitions do not "drift" when a search_path changes.
            # JIT only costs compile time on catalog queries (0.4 s at 5,000 tables). The
            # column query sorts some 100 bytes per column: 64 MB keeps it off disk up to about
            # 500,000 columns (a session setting, used only by the sorts that need it).
            "options": (
                f"-c statement_timeout={statement_ms} -c search_path=pg_catalog -c jit=off"
                " -c work_mem=64MB"
            ),
            "keepalives": 1,
            "keepalives_idle": idle_s,
            "keepalives_interval": max(1, idle_s // 3),
            "keepalives_count": 3,
        }
        if cfg.auth == "password" and cfg.password is not None:
            kwargs["password"] = cfg.password.get_secret_value()
        return kwargs

    def _open(self, database: str, *, autocommit: bool) -> _Session:
        """Connect (blocking, in a worker thread); raises the translated error."""
        try:
            conn = psycopg.connect(
                autocommit=autocommit, prepare_threshold=None, **self._connect_kwargs(database)
            )
        except Exception as exc:
            raise self.translate(exc, database=database) from exc
        if not autocommit:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
        self.report.connections_opened += 1
        return _Session(conn, database)

    async def _open_within_deadline(self, database: str, *, autocommit: bool) -> _Session:
        """:meth:`_open` bounded by ``connect_timeout_s``; a late connection is closed."""
        limit = self.config.connect_timeout_s
        task = asyncio.ensure_future(
            run_blocking(lambda: self._open(database, autocommit=autocommit))
        )
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=limit)
        except BaseException as exc:  # timed out or cancelled: the thread may still connect
            task.add_done_callback(_close_late_session)
            if not isinstance(exc, TimeoutError) or isinstance(exc, ConnectorError):
                raise
            cfg = self.config
            raise ConnectorTimeout(
                f"connection to {cfg.host}:{cfg.port} not established within {limit:g}s",
                host=cfg.host,
                port=cfg.port,
                database=database,
            ) from None

    def _reach_host(self) -> dict[str, Any]:
        cfg = self.config
        try:
            with socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout_s):
                pass
        except Exception as exc:
            raise self.translate(exc) from exc
        return {"host": cfg.host, "port": cfg.port}

    # -- test --------------------------------------------------------------------------------

    async def test_connection(self) -> TestReport:
        """Reach, authenticate, then read a few rows of each catalog discovery reads."""
        cfg = self.config
        runner = StepRunner(
            timeout_s=cfg.step_timeout_s + _SLACK_S,
            secrets=cfg.secret_values(),
            translate=self.translate,
        )
        await runner.run("reach_host", self._reach_host, timeout_s=cfg.connect_timeout_s)
        session = await runner.run(
            "authenticate",
            lambda: self._open(cfg.database, autocommit=True),
            timeout_s=cfg.connect_timeout_s,
            detail=lambda s: {
                "database": s.database,
                "server_version": s.conn.info.parameter_status("server_version"),
            },
        )
        if session is None:
            for name in _READ_STEPS:
                await runner.run(name, _unreachable)
            return runner.report()
        try:
            await self._test_reads(runner, session)
        finally:
            self.report.queries += session.queries
            await run_blocking(session.close)
        return runner.report()

    async def _test_reads(self, runner: StepRunner, session: _Session) -> None:
        db = session.database

        def rows(*queries: str, params: dict[str, Any] | None = None) -> Callable[[], int]:
            def fetch() -> int:
                return sum(len(session.fetch(q, params if "%(" in q else None)) for q in queries)

            return self._guard(fetch, database=db)

        def count(key: str) -> Callable[[int], dict[str, Any]]:
            return lambda n: {key: n}

        await runner.run("list_databases", rows(sql.DATABASES), detail=count("databases"))
        schemas = await runner.run(
            "list_schemas",
            self._guard(lambda: self._schemas(session), database=db),
            detail=lambda found: {"schemas": len(found)},
        )
        params = {"schemas": [s.name for s in schemas or ()]}
        for name, queries in (
            ("read_table_catalog", (sql.RELATIONS,)),
            ("read_column_catalog", (sql.COLUMNS,)),
            ("read_constraints", (sql.CONSTRAINTS,)),
            ("read_indexes", (sql.INDEXES,)),
            ("read_statistics", (sql.STATISTICS, sql.DATABASE_SIZE)),
        ):
            sampled = [sql.sample(q) for q in queries]
            await runner.run(name, rows(*sampled, params=params), detail=count("rows"))

    # -- discovery ---------------------------------------------------------------------------

    async def discover(self, *, known: Mapping[str, str] | None = None) -> DiscoveryResult:
        """Discover every selected database; one failing database does not stop the others.

        Args:
            known: qualified table name -> stored signature; matching tables are reported in
                ``unchanged`` with fresh statistics instead of being rebuilt.

        Raises:
            ConnectorError: the first connection or the database listing failed.
        """
        cfg = self.config
        first = await self._open_within_deadline(cfg.database, autocommit=False)
        try:
            listing = await run_blocking(
                self._guard(lambda: first.fetch(sql.DATABASES), database=cfg.database)
            )
        except BaseException:
            await run_blocking(first.close)
            raise
        first.queries = 0  # the listing is server level, not part of any database's count
        queries = 1

        listed = {
            name: (comment, encoding, collation) for name, comment, encoding, collation in listing
        }
        wanted = cfg.databases if cfg.databases is not None else sorted(listed)
        targets = sorted(d for d in dict.fromkeys(wanted) if cfg.filters.database(d))

        databases: list[DatabaseInfo] = []
        schemas: list[SchemaInfo] = []
        tables: list[TableInfo] = []
        signatures: dict[str, str] = {}
        unchanged: dict[str, sql.Stats] = {}
        complete_databases: set[str] = set()
        complete_schemas: set[tuple[str, str]] = set()
        per_database: dict[str, int] = {}
        warnings: list[str] = []
        failures: list[str] = []

        pending: _Session | None = first  # until a scan takes it over
        try:
            if cfg.database not in targets:
                pending = None
                await run_blocking(first.close)
            for name in targets:
                session = None
                if name == cfg.database:
                    session, pending = pending, None
                scan = await self._scan_within_deadline(name, session, known)
                queries += scan.queries
                per_database[name] = scan.queries
                warnings.extend(scan.warnings)
                if scan.error is not None:
                    message = self.redact(f"database {name!r}: {scan.error.message}")
                    failures.append(message)
                    self.report.record_error(message)
                    logger.warning("postgresql discovery: %s", message)
                if name in listed:
                    comment, encoding, collation = listed[name]
                    properties = {"encoding": encoding, "collation": collation}
                    databases.append(
                        DatabaseInfo(
                            name=name,
                            comment=comment,
                            size_bytes=scan.size_bytes,
                            properties=properties,
                        )
                    )
                elif scan.schemas_complete:  # named in ``databases`` but not listed (template)
                    databases.append(DatabaseInfo(name=name, size_bytes=scan.size_bytes))
                if scan.schemas_complete:
                    complete_databases.add(name)
                    schemas.extend(scan.schemas)
                if scan.tables_complete:
                    complete_schemas.update((name, s.name) for s in scan.schemas)
                    tables.extend(scan.tables)
                    signatures.update(scan.signatures)
                    unchanged.update(scan.unchanged)
        finally:
            if pending is not None:
                await run_blocking(pending.close)

        self.report.queries += queries
        return DiscoveryResult(
            databases=tuple(databases),
            schemas=tuple(schemas),
            tables=tuple(tables),
            databases_complete=True,
            complete_databases=frozenset(complete_databases),
            complete_schemas=frozenset(complete_schemas),
            queries=queries,
            queries_per_database=per_database,
            warnings=tuple(warnings),
            failures=tuple(failures),
            signatures=signatures,
            unchanged=unchanged,
        )

    async def _scan_within_deadline(
        self, name: str, session: _Session | None, known: Mapping[str, str] | None
    ) -> _DatabaseScan:
        cfg = self.config
        # Two connections, and the snapshot export / import statements on top of the queries.
        steps = len(sql.DATABASE_QUERIES) + 2
        limit = 2 * cfg.connect_timeout_s + steps * cfg.step_timeout_s + _SLACK_S
        try:
            return await asyncio.wait_for(
                run_blocking(self._scan_database, name, session, known), timeout=limit
            )
        except TimeoutError:
            # The worker closes its own connection when (if) the driver returns.
            scan = _DatabaseScan(name)
            scan.error = ConnectorTimeout(
                f"discovery did not finish within {limit:g}s", database=name
            )
            return scan

    def _scan_database(
        self, name: str, session: _Session | None, known: Mapping[str, str] | None
    ) -> _DatabaseScan:
        """Blocking: connect if needed, run the fixed catalog queries, build the records."""
        scan = _DatabaseScan(name)
        try:
            if session is None:
                session = self._open(name, autocommit=False)
            self._read_catalog(session, scan, known)
        except Exception as exc:
            scan.error = self.translate(exc, database=name)
        finally:
            if session is not None:
                scan.queries += session.queries
                session.close()
        return scan

    def _schemas(self, session: _Session) -> list[SchemaInfo]:
        db = session.database
        keep = self.config.filters.schema
        found = [
            SchemaInfo(database=db, name=name, comment=comment)
            for name, comment in session.fetch(sql.SCHEMAS)
            if keep(name)
        ]
        found.sort(key=_NAME)
        return found

    def _export_snapshot(self, session: _Session) -> str | None:
        """The id of the main transaction's snapshot, or None: then one connection reads all."""
        try:
            return str(session.fetch(sql.EXPORT_SNAPSHOT)[0][0])
        except psycopg.Error as exc:  # e.g. a server or proxy without snapshot export
            logger.info(
                "postgresql discovery of %r on one connection: snapshot export failed: %s",
                session.database,
                self.translate(exc, database=session.database).message,
            )
            session.rollback()  # the failed statement aborted the transaction
            return None

    def _read_catalog(
        self, session: _Session, scan: _DatabaseScan, known: Mapping[str, str] | None
    ) -> None:
        cfg = self.config
        db = session.database
        snapshot = self._export_snapshot(session)
        scan.schemas = self._schemas(session)
        scan.schemas_complete = True
        params = {"schemas": [s.name for s in scan.schemas]}
        wait = cfg.step_timeout_s + _SLACK_S
        side: _SnapshotReader | None = None
        if snapshot is not None:
            # The second connection reads the columns, then the statistics: the main one reads
            # the rest meanwhile, and the records are built while the statistics still run.
            side = _SnapshotReader(
                partial(self._open, db, autocommit=False),
                snapshot,
                [(sql.COLUMNS, params), (sql.STATISTICS, params), (sql.DATABASE_SIZE, None)],
            )
            side.start()
        try:
            relations = session.fetch(sql.RELATIONS, params)
            constraints = session.fetch(sql.CONSTRAINTS, params)
            indexes = session.fetch(sql.INDEXES, params)
            # The main transaction (and with it the exported snapshot) lives on until the
            # second connection has imported it, or given up.
            if side is None or not side.wait_imported(cfg.connect_timeout_s + _SLACK_S):
                if side is not None:
                    logger.info(
                        "postgresql discovery of %r: second connection unavailable (%s); "
                        "reading everything on the first",
                        db,
                        self.translate(side.error, database=db).message
                        if side.error is not None
                        else "not ready in time",
                    )
                    scan.queries += side.abandon()
                    side = None
                columns = session.fetch(sql.COLUMNS, params)
                statistics = self._statistics(
                    scan,
                    lambda i: (
                        session.fetch(sql.STATISTICS, params)
                        if i == 0
                        else session.fetch(sql.DATABASE_SIZE)
                    ),
                )
            else:
                reader = side
                columns = reader.result(wait)
                statistics = self._statistics(scan, lambda i: reader.result(wait, i + 1))
            with sql.gc_paused():
                read = sql.read_tables(
                    db,
                    relations,
                    columns,
                    constraints,
                    indexes,
                    statistics,
                    table_filter=cfg.filters.table,
                    known=known,
                )
        finally:
            if side is not None:
                scan.queries += side.abandon()
        scan.tables, scan.signatures, scan.unchanged = read.tables, read.signatures, read.unchanged
        scan.tables_complete = True

    def _statistics(
        self, scan: _DatabaseScan, fetch: Callable[[int], list[tuple[Any, ...]]]
    ) -> Callable[[], list[tuple[Any, ...]]]:
        """The statistics rows when asked for (``fetch(0)``), the database size (``fetch(1)``)
        set on ``scan``; a failure is a warning: statistics are not structure."""

        def read() -> list[tuple[Any, ...]]:
            try:
                rows = fetch(0)
                scan.size_bytes = fetch(1)[0][0]
            except (psycopg.Error, ConnectorTimeout) as exc:
                # Nothing runs after this point in the (now aborted) transaction.
                reason = self.translate(exc, database=scan.name).message
                scan.warnings.append(f"database {scan.name!r}: statistics missing: {reason}")
                return []
            return rows

        return read

    # -- health ----------------------------------------------------------------------------

    async def check_health(self) -> HealthReport:
        """``SELECT 1`` on a kept connection (reopened when broken); never raises."""
        checked_at = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            await self._probe()
        except Exception as exc:
            return HealthReport(
                state=HealthState.DOWN,
                latency_ms=round((time.perf_counter() - t0) * 1000, 3),
                error=self.translate(exc).message,
                checked_at=checked_at,
            )
        latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        degraded = latency_ms > self.config.degraded_latency_ms
        return HealthReport(
            state=HealthState.DEGRADED if degraded else HealthState.HEALTHY,
            latency_ms=latency_ms,
            checked_at=checked_at,
        )

    async def _probe(self) -> None:
        limit = self.config.step_timeout_s + _SLACK_S
        for attempt in range(2):
            session, fresh = await self._health_session()
            select_one = self._guard(partial(session.fetch, "SELECT 1"))
            try:
                await asyncio.wait_for(run_blocking(select_one), timeout=limit)
                return
            except ConnectorError:
                if session.usable:
                    raise  # the server answered with an error: that is the state
                await self._drop_health(session)
                if fresh or attempt:
                    raise
                # The kept connection died while idle (server restart, idle timeout): retry once.
            except TimeoutError:
                await self._drop_health(session)
                raise ConnectorTimeout(f"SELECT 1 did not answer within {limit:g}s") from None

    async def _health_session(self) -> tuple[_Session, bool]:
        """The kept connection, or a new one opened within ``connect_timeout_s``."""
        with self._health_lock:
            session = self._health
        if session is not None and session.usable:
            return session, False
        session = await self._open_within_deadline(self.config.database, autocommit=True)
        with self._health_lock:
            previous, self._health = self._health, session
        if previous is not None:
            await run_blocking(previous.close)
        return session, True

    async def _drop_health(self, session: _Session) -> None:
        with self._health_lock:
            if self._health is session:
                self._health = None
        await run_blocking(session.close)

    async def close(self) -> None:
        """Close the kept health connection."""
        with self._health_lock:
            session, self._health = self._health, None
        if session is not None:
            await run_blocking(session.close)


class _SnapshotReader(threading.Thread):
    """A second connection that imports the main transaction's snapshot and runs queries.

    Runs in its own thread so its queries overlap those of the main connection, one after the
    other in one transaction; the first that fails ends the sequence (the transaction is
    aborted). It closes its own connection when it is done; :meth:`abandon` asks it to close as
    soon as its driver call returns, for when the main connection stopped waiting.
    """

    def __init__(
        self,
        open_session: Callable[[], _Session],
        snapshot: str,
        queries: Sequence[tuple[Query, dict[str, Any] | None]],
    ) -> None:
        super().__init__(name="datawave-pg-snapshot-reader", daemon=True)
        self._open_session = open_session
        self._import = pgsql.SQL("SET TRANSACTION SNAPSHOT {}").format(pgsql.Literal(snapshot))
        self._queries = list(queries)
        self._imported = threading.Event()
        self._done = [threading.Event() for _ in self._queries]
        self._lock = threading.Lock()
        self._abandoned = False
        self.session: _Session | None = None
        self.rows: list[list[tuple[Any, ...]] | None] = [None] * len(self._queries)
        self.errors: list[BaseException | None] = [None] * len(self._queries)
        self.error: BaseException | None = None  # connecting or importing failed
        self.reading = False

    def run(self) -> None:
        session = None
        try:
            session = self._open_session()
            with self._lock:
                self.session = session
                if self._abandoned:
                    return
            session.run(self._import)
            self.reading = True
            self._imported.set()
            for i, (query, params) in enumerate(self._queries):
                try:
                    self.rows[i] = session.fetch(query, params)
                except BaseException as exc:
                    self.errors[i] = exc
                    return
                finally:
                    self._done[i].set()
        except BaseException as exc:
            self.error = exc
        finally:
            self._imported.set()
            for done in self._done:
                done.set()
            if session is not None:
                session.close(wait_s=0)

    def wait_imported(self, timeout: float) -> bool:
        """True once the snapshot is imported; False if that failed or took too long."""
        self._imported.wait(timeout)
        return self.reading

    def result(self, timeout: float, index: int = 0) -> list[tuple[Any, ...]]:
        """The rows of query ``index``; raises what it raised, or a timeout."""
        if not self._done[index].wait(timeout):
            raise ConnectorTimeout(
                f"the catalog query was not read within {timeout:g}s",
                database=self.session.database if self.session else None,
            )
        error = self.errors[index] or self.error
        if error is not None:
            raise error
        rows = self.rows[index]
        if rows is None:  # an earlier query of the sequence failed
            raise next(e for e in self.errors if e is not None)
        return rows

    def abandon(self) -> int:
        """Stop waiting for this reader; returns the statements it ran (for the count)."""
        with self._lock:
            self._abandoned = True
            session = self.session
        if session is None:
            return 0
        if self.is_alive():
            session.close(wait_s=0)  # closed by the thread when its driver call returns
        return session.queries


_READ_STEPS = (
    "list_databases",
    "list_schemas",
    "read_table_catalog",
    "read_column_catalog",
    "read_constraints",
    "read_indexes",
    "read_statistics",
)


def _unreachable() -> None:  # pragma: no cover - StepRunner skips steps after a failure
    raise ConnectorError("not connected")


def _close_late_session(task: asyncio.Future[_Session]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


# -- error classification ----------------------------------------------------------------------

_UNKNOWN_ROLE = re.compile(r'\brole "[^"]*" does not exist')
_AUTH_MARKERS = (
    "password authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "authentication failed",
    "pg_hba.conf rejects",
)


def _classify(exc: BaseException, sqlstate: str | None, text: str) -> type[ConnectorError]:
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.ConnectionTimeout):
        return ConnectorTimeout
    if isinstance(exc, TimeoutError):  # socket.timeout is an alias
        return ConnectorTimeout
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionRefused
    if sqlstate:
        if sqlstate.startswith("28"):
            return AuthenticationFailed
        if sqlstate == "42501":
            return PermissionDenied
        if sqlstate == "57014":
            return ConnectorTimeout
        return ConnectorError
    if isinstance(exc, psycopg.OperationalError):
        # Connection failures carry no SQLSTATE in psycopg; libpq's text is all there is.
        if "timeout expired" in text or "timed out" in text:
            return ConnectorTimeout
        if "connection refused" in text:
            return ConnectionRefused
        if "permission denied" in text:
            return PermissionDenied
        if _UNKNOWN_ROLE.search(text):
            return AuthenticationFailed
        if any(marker in text for marker in _AUTH_MARKERS):
            return AuthenticationFailed
    return ConnectorError
