"""SQLite files, read with the standard library's ``sqlite3``.

Mapping::

    database   ``database_name``, else the file's stem ("shop" for shop.db)
    schema     "main" (plus attached schemas, if a connection ever has any; "temp" is skipped)
    table      a table or a view

Discovery joins ``sqlite_master`` to the table-valued pragma functions (``pragma_table_xinfo``,
``pragma_foreign_key_list``, ``pragma_index_list`` with ``pragma_index_xinfo``): one query each
per schema, whatever the number of tables. What the pragmas do not say (the text of generation
expressions, of expression index keys and of partial index predicates) is read from the
``CREATE`` statements kept in ``sqlite_master``, with a small tokenizer rather than regexes so
that quoted, spaced and unicode identifiers cannot fool it.

``default`` keeps SQLite's own spelling of the default expression (``'abc'``,
``CURRENT_TIMESTAMP``); only ``NULL`` becomes ``None``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, cast
from urllib.parse import quote

from pydantic import Field

from datawave.datasource.connectors.base import Connector, ConnectorConfig, run_blocking
from datawave.datasource.connectors.steps import StepRunner
from datawave.datasource.errors import ConnectorError, ConnectorTimeout, PermissionDenied
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

__all__ = ["SQLiteConfig", "SQLiteConnector"]

logger = logging.getLogger(__name__)

_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_INTERRUPT, _SQLITE_AUTH = 3, 5, 6, 9, 23
_PROGRESS_OPS = 10_000  # VM instructions between two deadline checks


class SQLiteConfig(ConnectorConfig):
    """Which file to read.

    ``path`` is only checked by ``test_connection`` (step ``open_file``): the file may exist on
    an edge node only.
    """

    path: str = Field(min_length=1, description="Path of the SQLite database file")
    database_name: str | None = Field(
        default=None, min_length=1, description="Default: the file's stem"
    )
    read_only: bool = Field(default=True, description="Open with mode=ro; never creates a file")

    @property
    def database(self) -> str:
        return self.database_name or Path(self.path).stem or "sqlite"


# --------------------------------------------------------------------------- queries

_USER_OBJECTS = "m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
_NOT_VIRTUAL = "m.sql NOT LIKE 'CREATE VIRTUAL TABLE%'"

#: ``{schema}`` is the quoted schema name; ``?`` binds it again for the pragma functions.
_MASTER = "SELECT type, name, tbl_name, sql FROM {schema}.sqlite_master"
_COLUMNS = (
    'SELECT m.name, p.cid, p.name, p.type, p."notnull", p.dflt_value, p.pk, p.hidden'
    " FROM {schema}.sqlite_master AS m JOIN pragma_table_xinfo(m.name, ?) AS p"
    f" WHERE m.type IN ('table', 'view') AND {_USER_OBJECTS}"
)
#: :data:`_COLUMNS`, then the retries used when it fails: a view over a dropped table, or a
#: virtual table whose module is not loaded, makes the whole join fail.
_COLUMN_QUERIES = (
    ("", _COLUMNS),
    ("views", _COLUMNS.replace("m.type IN ('table', 'view')", "m.type = 'table'")),
    (
        "views and virtual tables",
        _COLUMNS.replace("m.type IN ('table', 'view')", f"m.type = 'table' AND {_NOT_VIRTUAL}"),
    ),
)
_FOREIGN_KEYS = (
    'SELECT m.name, p.id, p.seq, p."table", p."from", p."to", p.on_update, p.on_delete'
    " FROM {schema}.sqlite_master AS m JOIN pragma_foreign_key_list(m.name, ?) AS p"
    f" WHERE m.type = 'table' AND {_USER_OBJECTS} AND {_NOT_VIRTUAL}"
)
_INDEXES = (
    'SELECT m.name, il.name, il."unique", il.origin, il.partial, ii.seqno, ii.cid, ii.name'
    " FROM {schema}.sqlite_master AS m JOIN pragma_index_list(m.name, ?) AS il"
    " JOIN pragma_index_xinfo(il.name, ?) AS ii"
    f" WHERE m.type = 'table' AND {_USER_OBJECTS} AND {_NOT_VIRTUAL} AND ii.\"key\" = 1"
)
_STAT1 = "SELECT tbl, idx, stat FROM {schema}.sqlite_stat1"
_DBSTAT = "SELECT name, SUM(pgsize) FROM dbstat WHERE schema = ? GROUP BY name"


_PLURAL = {"table": "tables", "view": "views", "index": "indexes", "trigger": "triggers"}


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- connector


@dataclass
class _Run:
    conn: sqlite3.Connection
    queries: int = 0
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class SQLiteConnector(Connector):
    """A connection per operation: opening a local file is cheap and holds no server slot."""

    type_name: ClassVar[str] = "sqlite"
    config_model: ClassVar[type[ConnectorConfig]] = SQLiteConfig
    extra: ClassVar[str | None] = "sqlite"
    description: ClassVar[str] = "SQLite database files (standard library sqlite3)"

    config: SQLiteConfig

    # -- files and errors ------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        cfg = self.config
        path = Path(cfg.path).expanduser()
        # Checked first: sqlite3's own message for both is "unable to open database file".
        missing = not path.is_file()
        if missing or not os.access(path, os.R_OK):
            cls = ConnectorError if missing else PermissionDenied
            message = f"sqlite: {'no such file' if missing else 'cannot read'}: {cfg.path}"
            self.report.record_error(message)
            raise cls(message, path=cfg.path)
        mode = "ro" if cfg.read_only else "rw"
        uri = f"file:{quote(str(path.absolute()))}?mode={mode}"
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=cfg.connect_timeout_s,
                check_same_thread=False,  # steps run in different worker threads, one at a time
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            conn.execute("PRAGMA schema_version").fetchone()  # reads the header
        except sqlite3.Error as exc:
            conn.close()
            raise self._translate(exc) from exc
        self.report.connections_opened += 1
        return conn

    def _translate(self, exc: BaseException) -> ConnectorError:
        """The one boundary where ``sqlite3`` and file errors become datawave errors."""
        if isinstance(exc, ConnectorError):
            return exc
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = f"sqlite {self.config.path}: {exc}"
        cls: type[ConnectorError] = ConnectorError
        if primary == _SQLITE_INTERRUPT:
            cls, text = ConnectorTimeout, f"{text} after {self.config.step_timeout_s:g}s"
        elif primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            cls = ConnectorTimeout
        elif primary in (_SQLITE_PERM, _SQLITE_AUTH) or isinstance(exc, PermissionError):
            cls = PermissionDenied
        message = self.redact(text)
        self.report.record_error(message)
        return cls(message, path=self.config.path, driver_code=code)

    def _fetch(
        self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one query, interrupted once it exceeds ``step_timeout_s``."""
        self.report.queries += 1
        deadline = time.monotonic() + self.config.step_timeout_s
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_OPS)
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        finally:
            conn.set_progress_handler(None, 0)

    def _schemas(self, conn: sqlite3.Connection) -> list[str]:
        rows = self._fetch(conn, "PRAGMA database_list")
        return [str(r[1]) for r in rows if r[1] != "temp"]

    # -- test_connection -------------------------------------------------------------------

    async def test_connection(self) -> TestReport:
        cfg = self.config
        runner = StepRunner(
            timeout_s=cfg.step_timeout_s, secrets=cfg.secret_values(), translate=self._translate
        )
        conn = await runner.run(
            "open_file", self._open, timeout_s=cfg.connect_timeout_s + 1, detail=self._file_detail
        )
        live = cast(sqlite3.Connection, conn)  # after a failed open_file the steps are skipped
        try:
            await runner.run("read_schema", lambda: self._count_objects(live), detail=_same)
            await runner.run("read_column_catalog", lambda: self._probe_columns(live), detail=_same)
            await runner.run(
                "read_constraints",
                lambda: {"foreign_key_columns": len(self._each_schema(live, _FOREIGN_KEYS, 1))},
                detail=_same,
            )
            await runner.run(
                "read_indexes",
                lambda: {"index_keys": len(self._each_schema(live, _INDEXES, 2))},
                detail=_same,
            )
        finally:
            if conn is not None:
                await run_blocking(conn.close)
        return runner.report()

    def _file_detail(self, _conn: sqlite3.Connection) -> dict[str, Any]:
        path = Path(self.config.path).expanduser()
        return {
            "path": self.config.path,
            "read_only": self.config.read_only,
            "size_bytes": path.stat().st_size,
            "sqlite_version": sqlite3.sqlite_version,
        }

    def _count_objects(self, conn: sqlite3.Connection) -> dict[str, Any]:
        counts: dict[str, Any] = defaultdict(int)
        schemas = self._schemas(conn)
        for schema in schemas:
            for kind, name, _, _ in self._fetch(conn, _MASTER.format(schema=_qi(schema))):
                if not str(name).startswith("sqlite_"):
                    counts[_PLURAL.get(kind, kind)] += 1
        return {"schemas": schemas, **counts}

    def _each_schema(self, conn: sqlite3.Connection, sql: str, binds: int) -> list[Any]:
        rows: list[Any] = []
        for schema in self._schemas(conn):
            rows += self._fetch(conn, sql.format(schema=_qi(schema)), [schema] * binds)
        return rows

    def _probe_columns(self, conn: sqlite3.Connection) -> dict[str, Any]:
        columns = 0
        for schema in self._schemas(conn):
            rows, skipped = self._columns(conn, schema)
            columns += len(rows)
            if skipped:  # discovery falls back the same way and warns
                return {"columns": columns, "warning": skipped}
        return {"columns": columns}

    def _columns(
        self, conn: sqlite3.Connection, schema: str, run: _Run | None = None
    ) -> tuple[list[Any], str | None]:
        """Columns of one schema, and what had to be skipped (and why) to read them."""
        error: ConnectorError | None = None
        for skipped, sql in _COLUMN_QUERIES:
            if run is not None:
                run.queries += 1
            try:
                rows = self._fetch(conn, sql.format(schema=_qi(schema)), [schema])
            except ConnectorError as exc:
                error = exc
                continue
            return rows, (f"columns of {skipped} skipped: {error.message}" if error else None)
        assert error is not None
        raise error

    # -- discover --------------------------------------------------------------------------

    async def discover(self, *, known: Mapping[str, str] | None = None) -> DiscoveryResult:
        """Read every schema of the file in a fixed number of queries.

        Raises:
            ConnectorError: the file is missing, unreadable or not a database.
        """
        return await run_blocking(self._discover)

    def _discover(self) -> DiscoveryResult:
        conn = self._open()
        try:
            return self._read(_Run(conn))
        finally:
            conn.close()

    def _query(
        self, run: _Run, name: str, sql: str, params: Sequence[Any] = ()
    ) -> list[Any] | None:
        run.queries += 1
        try:
            return self._fetch(run.conn, sql, params)
        except ConnectorError as exc:
            run.failures.append(f"{name}: {exc.message}")
            return None

    def _read(self, run: _Run) -> DiscoveryResult:
        cfg = self.config
        database = cfg.database
        if not cfg.filters.database(database):
            return DiscoveryResult(databases_complete=True)
        run.queries += 1
        schemas = [s for s in self._schemas(run.conn) if cfg.filters.schema(s)]
        tables: list[TableInfo] = []
        complete: set[tuple[str, str]] = set()
        for schema in schemas:
            found = self._read_schema(run, database, schema)
            if found is not None:
                tables += found
                complete.add((database, schema))
        size = Path(cfg.path).expanduser().stat().st_size
        return DiscoveryResult(
            databases=(
                DatabaseInfo(name=database, size_bytes=size, properties={"path": cfg.path}),
            ),
            schemas=tuple(SchemaInfo(database=database, name=s) for s in schemas),
            tables=tuple(sorted(tables, key=lambda t: (t.schema_name, t.name))),
            databases_complete=True,
            complete_databases=frozenset({database}),
            complete_schemas=frozenset(complete),
            queries=run.queries,
            queries_per_database={database: run.queries},
            warnings=tuple(run.warnings),
            failures=tuple(run.failures),
        )

    def _read_schema(self, run: _Run, database: str, schema: str) -> list[TableInfo] | None:
        """Tables of one schema, all or nothing: ``None`` when a structural query failed.

        A table reported without its columns or keys would look like drift, so a failure
        leaves the schema incomplete and the stored metadata untouched.
        """
        q = _qi(schema)
        failures = len(run.failures)
        master = self._query(run, f"{schema}.sqlite_master", _MASTER.format(schema=q))
        if master is None:
            return None
        try:
            columns, skipped = self._columns(run.conn, schema, run)
        except ConnectorError as exc:
            run.failures.append(f"{schema}.columns: {exc.message}")
            return None
        if skipped:
            run.warnings.append(f"{schema}: {skipped}")
        fks = self._query(run, f"{schema}.foreign_keys", _FOREIGN_KEYS.format(schema=q), [schema])
        idx = self._query(run, f"{schema}.indexes", _INDEXES.format(schema=q), [schema] * 2)
        if fks is None or idx is None or len(run.failures) > failures:
            return None
        stat1: list[Any] = []
        if any(r[1] == "sqlite_stat1" for r in master):
            run.queries += 1
            try:
                stat1 = self._fetch(run.conn, _STAT1.format(schema=q))
            except ConnectorError as exc:  # statistics only: the structure stands
                run.warnings.append(f"{schema}.sqlite_stat1: {exc.message}")
        run.queries += 1
        try:  # dbstat is a compile-time option: without it sizes are simply unknown
            sizes: list[Any] | None = self._fetch(run.conn, _DBSTAT, [schema])
        except ConnectorError:
            sizes = None
        builder = _SchemaBuilder(database, schema, self.config, master)
        builder.add_columns(columns)
        builder.add_foreign_keys(fks)
        builder.add_indexes(idx)
        builder.add_statistics(stat1, sizes)
        return builder.build()

    # -- health ----------------------------------------------------------------------------

    async def check_health(self) -> HealthReport:
        limit = self.config.connect_timeout_s + 1
        now = datetime.now(UTC)
        try:
            latency_ms = await asyncio.wait_for(run_blocking(self._ping), timeout=limit)
        except TimeoutError:
            error = f"sqlite {self.config.path}: health check timed out after {limit:g}s"
            return HealthReport(state=HealthState.DOWN, error=error, checked_at=now)
        except ConnectorError as exc:
            return HealthReport(state=HealthState.DOWN, error=exc.message, checked_at=now)
        return HealthReport(
            state=HealthState.HEALTHY, latency_ms=round(latency_ms, 3), checked_at=now
        )

    def _ping(self) -> float:
        t0 = time.perf_counter()
        conn = self._open()
        try:
            self._fetch(conn, "SELECT 1")
        finally:
            conn.close()
        return (time.perf_counter() - t0) * 1000


# --------------------------------------------------------------------------- mapping


@dataclass
class _Draft:
    name: str
    kind: TableKind
    sql: str | None
    properties: dict[str, str] = field(default_factory=dict)
    generated: dict[str, str] = field(default_factory=dict)
    without_rowid: bool = False
    columns: list[ColumnInfo] = field(default_factory=list)
    primary_key: KeyInfo | None = None
    uniques: list[KeyInfo] = field(default_factory=list)
    foreign_keys: list[ForeignKeyInfo] = field(default_factory=list)
    indexes: list[IndexInfo] = field(default_factory=list)
    row_estimate: int | None = None
    size_bytes: int | None = None


class _SchemaBuilder:
    """Joins the rows of one schema's queries into :class:`TableInfo` records."""

    def __init__(self, database: str, schema: str, config: SQLiteConfig, master: list[Any]):
        self.database, self.schema = database, schema
        self._tables: dict[str, _Draft] = {}
        self._index_sql: dict[str, str | None] = {}
        self._index_table: dict[str, str] = {}
        for kind, name, tbl_name, sql in master:
            if kind == "index":
                self._index_sql[name] = sql
                self._index_table[name] = tbl_name
            elif (
                kind in ("table", "view")
                and not name.startswith("sqlite_")
                and config.filters.table(schema, name)
            ):
                self._tables[name] = _draft(name, kind, sql)

    def add_columns(self, rows: list[Any]) -> None:
        by_table: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            if row[0] in self._tables and row[7] != 1:  # hidden 1: virtual-table internals
                by_table[row[0]].append(row)
        for name, cols in by_table.items():
            draft = self._tables[name]
            cols.sort(key=lambda r: r[1])
            pk = sorted((r for r in cols if r[6]), key=lambda r: r[6])
            rowid_alias = (
                len(pk) == 1
                and draft.kind is TableKind.TABLE
                and not draft.without_rowid
                and str(pk[0][3]).upper() == "INTEGER"
            )
            if pk and draft.kind is TableKind.TABLE:
                draft.primary_key = KeyInfo(columns=tuple(r[2] for r in pk))
            for ordinal, (_, _, col, type_, notnull, default, pk_pos, hidden) in enumerate(cols, 1):
                identity = rowid_alias and pk_pos == 1
                generated = None
                if hidden in (2, 3):  # 2: VIRTUAL, 3: STORED generated column
                    generated = _lookup(draft.generated, col) or "GENERATED"
                draft.columns.append(
                    ColumnInfo(
                        name=col,
                        ordinal=ordinal,
                        data_type=type_ or "",
                        nullable=not notnull and not identity,
                        default=None if default is None or default.upper() == "NULL" else default,
                        generated=generated,
                        identity=identity,
                    )
                )

    def add_foreign_keys(self, rows: list[Any]) -> None:
        grouped: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for row in rows:
            if row[0] in self._tables:
                grouped[(row[0], row[1])].append(row)
        for (table, _), parts in grouped.items():
            parts.sort(key=lambda r: r[2])
            ref_table = parts[0][3]
            ref_columns = tuple(r[5] for r in parts)
            if any(c is None for c in ref_columns):  # REFERENCES t: the referenced primary key
                ref = self._tables.get(ref_table)
                pk = ref.primary_key if ref is not None else None
                ref_columns = pk.columns if pk is not None else ()
            self._tables[table].foreign_keys.append(
                ForeignKeyInfo(
                    columns=tuple(r[4] for r in parts),
                    ref_database=self.database,
                    ref_schema=self.schema,
                    ref_table=ref_table,
                    ref_columns=ref_columns,
                    on_update=parts[0][6],
                    on_delete=parts[0][7],
                )
            )

    def add_indexes(self, rows: list[Any]) -> None:
        grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for row in rows:
            if row[0] in self._tables:
                grouped[(row[0], row[1])].append(row)
        for (table, name), parts in grouped.items():
            parts.sort(key=lambda r: r[5])
            _, _, unique, origin, partial, *_ = parts[0]
            sql = self._index_sql.get(name)
            keys, predicate = _parse_index_sql(sql) if sql else ([], None)
            columns = tuple(
                r[7] if r[6] != -2 else (keys[r[5]] if r[5] < len(keys) else "<expression>")
                for r in parts
            )
            draft = self._tables[table]
            draft.indexes.append(
                IndexInfo(
                    name=name,
                    columns=columns,
                    unique=bool(unique),
                    primary=origin == "pk",
                    predicate=predicate if partial else None,
                    definition=sql,
                )
            )
            if origin == "u":
                draft.uniques.append(KeyInfo(columns=columns))

    def add_statistics(self, stat1: list[Any], sizes: list[Any] | None) -> None:
        rows: dict[str, int] = {}
        for tbl, idx, stat in stat1:
            head = str(stat or "").split(" ", 1)[0]
            if tbl in self._tables and head.isdigit():
                # The table's own row (idx NULL) is exact; an index row may be partial.
                count = int(head)
                rows[tbl] = count if idx is None else max(rows.get(tbl, 0), count)
        for name, draft in self._tables.items():
            draft.row_estimate = rows.get(name)
        if sizes is None:
            return
        totals: dict[str, int] = defaultdict(int)
        for btree, pgsize in sizes:
            totals[self._index_table.get(btree, btree)] += int(pgsize or 0)
        for name, draft in self._tables.items():
            if draft.kind is TableKind.TABLE and not draft.properties.get("virtual"):
                draft.size_bytes = totals.get(name, 0)

    def build(self) -> list[TableInfo]:
        return [
            TableInfo(  # type: ignore[call-arg]  # "schema" alias
                database=self.database,
                schema=self.schema,
                name=d.name,
                kind=d.kind,
                columns=tuple(d.columns),
                primary_key=d.primary_key,
                unique_constraints=tuple(sorted(d.uniques, key=lambda k: k.columns)),
                foreign_keys=tuple(
                    sorted(d.foreign_keys, key=lambda k: (k.columns, k.ref_table, k.ref_columns))
                ),
                indexes=tuple(sorted(d.indexes, key=lambda i: i.name)),
                parent=None,  # explicit: mypy without the pydantic plugin misses Field(None, ...)
                definition=d.sql if d.kind is TableKind.VIEW else None,
                row_estimate=d.row_estimate,
                size_bytes=d.size_bytes,
                properties=d.properties,
            )
            for d in self._tables.values()
        ]


def _draft(name: str, kind: str, sql: str | None) -> _Draft:
    if kind == "view":
        return _Draft(name=name, kind=TableKind.VIEW, sql=sql)
    draft = _Draft(name=name, kind=TableKind.TABLE, sql=sql)
    if sql:
        generated, options, module = _parse_table_sql(sql)
        draft.generated = generated
        draft.without_rowid = "WITHOUT ROWID" in options
        for option in sorted(options):
            draft.properties[option.lower().replace(" ", "_")] = "true"
        if module:
            draft.properties["virtual"] = module
    return draft


def _lookup(names: dict[str, str], name: str) -> str | None:
    """SQLite identifiers are case-insensitive (for ASCII letters)."""
    if name in names:
        return names[name]
    folded = {k.casefold(): v for k, v in names.items()}
    return folded.get(name.casefold())


def _same(value: dict[str, Any]) -> dict[str, Any]:
    return value


# --------------------------------------------------------------------------- CREATE statements

_TOKEN = re.compile(
    r"""
      (?P<space>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<string>'(?:[^']|'')*')
    | (?P<ident>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
    | (?P<word>[^\W\d][\w$]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int

    def word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


def _tokens(sql: str) -> list[_Tok]:
    return [
        _Tok(m.lastgroup or "other", m.group(), m.start(), m.end())
        for m in _TOKEN.finditer(sql)
        if m.lastgroup != "space"
    ]


def _group(toks: list[_Tok], open_at: int) -> tuple[list[list[_Tok]], int]:
    """Top-level comma-separated items of the parenthesis at ``open_at``, and its closing index."""
    items: list[list[_Tok]] = [[]]
    depth = 0
    for i in range(open_at + 1, len(toks)):
        t = toks[i]
        if t.text == "(" and t.kind == "other":
            depth += 1
        elif t.text == ")" and t.kind == "other":
            if depth == 0:
                return [it for it in items if it], i
            depth -= 1
        elif t.text == "," and t.kind == "other" and depth == 0:
            items.append([])
            continue
        items[-1].append(t)
    raise ValueError("unbalanced parentheses")


def _first_paren(toks: list[_Tok]) -> int | None:
    return next((i for i, t in enumerate(toks) if t.kind == "other" and t.text == "("), None)


def _unquote(tok: _Tok) -> str:
    if tok.kind in ("ident", "string"):
        if tok.text[0] == "[":
            return tok.text[1:-1]
        q = tok.text[0]
        return tok.text[1:-1].replace(q + q, q)
    return tok.text


def _parse_table_sql(sql: str) -> tuple[dict[str, str], set[str], str | None]:
    """Generation expressions by column, table options and the virtual-table module."""
    toks = _tokens(sql)
    if len(toks) > 2 and toks[1].word("VIRTUAL"):
        using = next((i for i, t in enumerate(toks) if t.word("USING")), None)
        module = toks[using + 1].text if using is not None and using + 1 < len(toks) else "?"
        return {}, set(), module
    start = _first_paren(toks)
    if start is None:  # CREATE TABLE ... AS SELECT
        return {}, set(), None
    try:
        items, end = _group(toks, start)
    except ValueError:
        return {}, set(), None
    tail = " ".join(t.text.upper() for t in toks[end + 1 :] if t.kind == "word")
    options = {o for o in ("WITHOUT ROWID", "STRICT") if o in tail}
    generated: dict[str, str] = {}
    for item in items:
        if item[0].word("CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"):
            continue
        depth = 0
        for i, t in enumerate(item):
            if t.kind == "other" and t.text in "()":
                depth += 1 if t.text == "(" else -1
            elif depth == 0 and t.word("AS") and i + 1 < len(item) and item[i + 1].text == "(":
                close = _matching(item, i + 1)
                if close is not None:
                    generated[_unquote(item[0])] = sql[item[i + 1].end : item[close].start].strip()
                break
    return generated, options, None


def _matching(toks: Sequence[_Tok], open_at: int) -> int | None:
    depth = 0
    for i in range(open_at, len(toks)):
        if toks[i].kind == "other" and toks[i].text == "(":
            depth += 1
        elif toks[i].kind == "other" and toks[i].text == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def _parse_index_sql(sql: str) -> tuple[list[str], str | None]:
    """Key texts (expressions as written, without ASC/DESC/COLLATE) and the WHERE predicate."""
    toks = _tokens(sql)
    start = _first_paren(toks)
    if start is None:
        return [], None
    try:
        items, end = _group(toks, start)
    except ValueError:
        return [], None
    keys = []
    for item in items:
        last = len(item)
        if last > 1 and item[last - 1].word("ASC", "DESC"):
            last -= 1
        if last > 2 and item[last - 2].word("COLLATE"):
            last -= 2
        keys.append(sql[item[0].start : item[last - 1].end].strip())
    where = next((t for t in toks[end + 1 :] if t.word("WHERE")), None)
    return keys, (sql[where.end :].strip() or None) if where else None
