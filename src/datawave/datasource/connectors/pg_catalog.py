"""The SQL the PostgreSQL connector runs against ``pg_catalog``, and how its rows become records.

Discovery reads each database with the fixed set of queries in :data:`DATABASE_QUERIES` whatever
the number of tables: every query scans one catalog for all relations of the selected schemas
(``%(schemas)s``, a ``text[]``) and the connector joins the rows in Python. Nothing here loops
per table.

Functions that would run a sub-query per row (``obj_description`` and friends) are replaced by
joins on ``pg_description``. Names come back raw (``name`` columns, never ``quote_ident``) so
quoted, spaced and unicode identifiers survive exactly. :func:`read_tables` joins the rows of one
database by relation oid into sorted :class:`TableInfo` records, and signs each table's raw rows
so that a rediscovery builds records only for the tables whose rows changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

import msgpack
from pydantic import TypeAdapter

from datawave.datasource.connectors.base import gc_paused
from datawave.datasource.models import ColumnInfo, TableInfo, TableKind, qualified_name

__all__ = [
    "COLUMNS",
    "CONSTRAINTS",
    "DATABASES",
    "DATABASE_QUERIES",
    "DATABASE_SIZE",
    "EXPORT_SNAPSHOT",
    "INDEXES",
    "RELATIONS",
    "SCHEMAS",
    "SIGNATURE_VERSION",
    "STATISTICS",
    "CatalogTables",
    "gc_paused",
    "read_tables",
    "sample",
]

#: Relation kinds discovered: table, view, materialized view, partitioned table, foreign table.
RELKINDS: Final = ("r", "v", "m", "p", "f")

_RELKIND_SQL = "(" + ", ".join(f"'{kind}'" for kind in RELKINDS) + ")"

#: Server level, on the first connection: every database that accepts connections.
#: ``datname``, comment, encoding, collation. Sizes are read per database (:data:`DATABASE_SIZE`):
#: ``pg_database_size`` walks a directory tree, too slow to run for databases we skip.
DATABASES: Final = """
SELECT d.datname, sd.description, pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate
FROM pg_catalog.pg_database d
LEFT JOIN pg_catalog.pg_shdescription sd
       ON sd.objoid = d.oid AND sd.classoid = 'pg_catalog.pg_database'::pg_catalog.regclass
WHERE d.datallowconn AND NOT d.datistemplate
"""

#: User schemas: ``pg_*`` (pg_catalog, pg_toast, pg_temp_N ...) and information_schema are
#: system schemas; users cannot create a schema named ``pg_*``.
SCHEMAS: Final = """
SELECT n.nspname, d.description
FROM pg_catalog.pg_namespace n
LEFT JOIN pg_catalog.pg_description d
       ON d.objoid = n.oid AND d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
      AND d.objsubid = 0
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
"""

#: ``oid, schema, name, relkind, relispartition, comment, view definition, partition key,
#: partition bound, parent schema, parent name``.
RELATIONS: Final = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispartition,
       d.description,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid, true) END,
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END,
       pn.nspname, pc.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_description d
       ON d.objoid = c.oid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.objsubid = 0
LEFT JOIN pg_catalog.pg_inherits i ON c.relispartition AND i.inhrelid = c.oid
LEFT JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent
LEFT JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
WHERE c.relkind IN {_RELKIND_SQL} AND n.nspname = ANY(%(schemas)s)
"""

#: One row per relation: ``attrelid, columns`` where ``columns`` is the JSON text of an array
#: with one array per column, in attnum order: ``[attnum, name, type, not null, default
#: expression, attgenerated, attidentity, is array, enum labels (of the element type for an
#: array) or null, comment]``. One text per table instead of a row per column: the server does
#: the assembly (on its own core), the client converts 5,000 values instead of 660,000, a table's
#: signature hashes its text as is, and tables with equal columns arrive as equal texts, built
#: once (:func:`read_tables`). The order comes from the sorted sub-select (``ORDER BY`` inside
#: ``json_agg`` sorts each group again on PostgreSQL < 16); the parsed rows are sorted by attnum
#: all the same.
COLUMNS: Final = f"""
SELECT s.attrelid, pg_catalog.json_agg(s.col)::text
FROM (
    SELECT a.attrelid,
           pg_catalog.json_build_array(
               a.attnum, a.attname,
               pg_catalog.format_type(a.atttypid, a.atttypmod),
               a.attnotnull,
               pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
               a.attgenerated, a.attidentity,
               t.typcategory = 'A',
               e.labels,
               d.description) AS col
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    LEFT JOIN (
        SELECT enumtypid,
               pg_catalog.json_agg(enumlabel ORDER BY enumsortorder) AS labels
        FROM pg_catalog.pg_enum
        GROUP BY enumtypid
    ) e ON e.enumtypid = CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE a.atttypid END
    LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    LEFT JOIN pg_catalog.pg_description d
           ON d.objoid = a.attrelid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.objsubid = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
      AND c.relkind IN {_RELKIND_SQL} AND n.nspname = ANY(%(schemas)s)
    ORDER BY a.attrelid, a.attnum
) AS s
GROUP BY s.attrelid
"""

#: Primary keys, unique and foreign keys: ``conrelid, name, contype, conkey, ref schema,
#: ref table, ref column names, on update, on delete``. ``conkey`` is resolved to names by the
#: connector (from the table's own columns). The referenced names are looked up here: a join
#: for the usual one-column key, a sub-select only for keys of several columns (run for every
#: key, it costs more than the rest of the query). The copies PostgreSQL adds on the
#: referenced side of a partitioned table (same ``conrelid`` as their parent constraint) are
#: internal and skipped.
CONSTRAINTS: Final = f"""
SELECT k.conrelid, k.conname, k.contype, k.conkey,
       fn.nspname, fc.relname,
       CASE WHEN k.contype <> 'f' THEN NULL
            WHEN pg_catalog.cardinality(k.confkey) = 1 THEN ARRAY[f1.attname::text]
            ELSE ARRAY(
                SELECT fa.attname::text
                FROM pg_catalog.unnest(k.confkey) WITH ORDINALITY AS u(attnum, ord)
                JOIN pg_catalog.pg_attribute fa
                  ON fa.attrelid = k.confrelid AND fa.attnum = u.attnum
                ORDER BY u.ord) END,
       k.confupdtype, k.confdeltype
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = k.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
LEFT JOIN pg_catalog.pg_attribute f1 ON f1.attrelid = k.confrelid AND f1.attnum = k.confkey[1]
LEFT JOIN pg_catalog.pg_constraint pk ON pk.oid = k.conparentid
WHERE k.contype IN ('p', 'u', 'f')
  AND (pk.oid IS NULL OR pk.conrelid <> k.conrelid)
  AND c.relkind IN {_RELKIND_SQL} AND n.nspname = ANY(%(schemas)s)
"""

#: ``indrelid, name, unique, primary, key attnums (0 = expression), expression text per key
#: position (only for indexes with expressions), predicate, access method, definition (only for
#: expression or partial indexes, where the columns alone do not say it)``.
INDEXES: Final = f"""
SELECT x.indrelid, ic.relname, x.indisunique, x.indisprimary,
       (x.indkey::pg_catalog.int2[])[0:x.indnkeyatts - 1],
       CASE WHEN x.indexprs IS NOT NULL THEN ARRAY(
           SELECT CASE WHEN x.indkey[k - 1] = 0
                       THEN pg_catalog.pg_get_indexdef(x.indexrelid, k, true) END
           FROM pg_catalog.generate_series(1, x.indnkeyatts) AS k
           ORDER BY k) END,
       pg_catalog.pg_get_expr(x.indpred, x.indrelid, true),
       am.amname,
       CASE WHEN x.indexprs IS NOT NULL OR x.indpred IS NOT NULL
            THEN pg_catalog.pg_get_indexdef(x.indexrelid) END
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
JOIN pg_catalog.pg_class c ON c.oid = x.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN {_RELKIND_SQL} AND n.nspname = ANY(%(schemas)s)
"""

#: ``oid, reltuples, estimated total size``. Sizes come from the catalog's page counts (table
#: + TOAST + indexes, as of the last VACUUM / ANALYZE) exactly like row estimates come from
#: ``reltuples``: no file-system walk and no relation lock, so discovery never waits on a
#: locked table and costs the same whatever the data volume.
STATISTICS: Final = f"""
SELECT c.oid, c.reltuples,
       CASE WHEN c.relkind IN ('r', 'm') THEN
           (GREATEST(c.relpages, 0)::bigint + GREATEST(COALESCE(t.relpages, 0), 0)
            + COALESCE(ix.pages, 0))
           * pg_catalog.current_setting('block_size')::bigint END
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
LEFT JOIN (
    SELECT x.indrelid, sum(GREATEST(ic.relpages, 0))::bigint AS pages
    FROM pg_catalog.pg_index x
    JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid
    GROUP BY x.indrelid
) ix ON ix.indrelid = c.oid
WHERE c.relkind IN {_RELKIND_SQL} AND n.nspname = ANY(%(schemas)s)
"""

#: Estimated size of the database we are connected to, from the same page counts.
DATABASE_SIZE: Final = (
    "SELECT sum(GREATEST(relpages, 0))::bigint "
    "* pg_catalog.current_setting('block_size')::bigint "
    "FROM pg_catalog.pg_class"
)

#: The queries discovery runs in each database, in order.
DATABASE_QUERIES: Final = (
    SCHEMAS,
    RELATIONS,
    COLUMNS,
    CONSTRAINTS,
    INDEXES,
    STATISTICS,
    DATABASE_SIZE,
)


#: Run by the main connection at the start of its transaction: the id of its snapshot, which a
#: second connection imports (``SET TRANSACTION SNAPSHOT``) to read :data:`COLUMNS` in parallel
#: as of the same instant. Not in :data:`DATABASE_QUERIES`: it reads no catalog.
EXPORT_SNAPSHOT: Final = "SELECT pg_catalog.pg_export_snapshot()"


def sample(sql: str, limit: int = 5) -> str:
    """``sql`` limited to a few rows: the connection test proves privileges, not volume."""
    return f"SELECT * FROM ({sql}) AS q LIMIT {int(limit)}"


# -- rows to records ---------------------------------------------------------------------------

#: Part of every signature: bump it whenever the way rows become records changes, so that the
#: signatures stored by an older version stop matching and each table is rebuilt once.
SIGNATURE_VERSION: Final = 2

_FK_ACTIONS = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}
_KINDS = {
    "r": TableKind.TABLE,
    "v": TableKind.VIEW,
    "m": TableKind.MATERIALIZED_VIEW,
    "p": TableKind.PARTITIONED_TABLE,
    "f": TableKind.FOREIGN_TABLE,
}
_ATTNUM = itemgetter(0)  # parsed column rows: [attnum, name, ...]
_TAIL = itemgetter(slice(1, None))  # constraint and index rows without the relation oid
_ROW_NAME = itemgetter(1)  # constraint and index rows: (relid, name, ...)
_TABLE_ORDER = itemgetter("schema", "name")

# Records are assembled as plain dicts (only non-default keys set) and validated in one call:
# pydantic-core builds the nested models without a Python-level call each. Column records are
# validated once per distinct column row (:func:`_columns`) and passed in built.
_TABLES: TypeAdapter[list[TableInfo]] = TypeAdapter(list[TableInfo])
_COLUMN_LIST: TypeAdapter[list[ColumnInfo]] = TypeAdapter(list[ColumnInfo])

Row = tuple[Any, ...]
#: ``(row_estimate, size_bytes)``
Stats = tuple[int | None, int | None]


@dataclass(slots=True)
class CatalogTables:
    """What :func:`read_tables` made of one database's rows."""

    #: Records of the tables that are new or whose signature changed, sorted by schema, name.
    tables: list[TableInfo] = field(default_factory=list)
    #: Qualified name -> signature, for every table in ``tables``.
    signatures: dict[str, str] = field(default_factory=dict)
    #: Qualified name -> fresh statistics of the tables whose signature was ``known``.
    unchanged: dict[str, Stats] = field(default_factory=dict)


def read_tables(
    database: str,
    relations: Iterable[Row],
    columns: Iterable[Row],
    constraints: Iterable[Row],
    indexes: Iterable[Row],
    statistics: Iterable[Row] | Callable[[], Iterable[Row]],
    *,
    table_filter: Callable[[str, str], bool],
    known: Mapping[str, str] | None = None,
) -> CatalogTables:
    """Group the rows of one database by relation oid, sign each table, build what changed.

    A table's signature is BLAKE2b over what its record is built from: a canonical msgpack
    encoding of its relation row and its constraint and index rows in name order (oids and
    statistics left out), then the JSON text of its columns. The record is a function of
    exactly these, so an equal signature means an equal record: a table whose signature is in
    ``known`` is reported in ``unchanged`` with its fresh statistics and never built (nor its
    columns parsed). A rediscovery of an unchanged database builds nothing.

    Args:
        database: the database the rows come from.
        relations, columns, constraints, indexes, statistics: rows of the queries of the same
            name, in their column order; ``statistics`` may be a callable returning them,
            called once every record is built (their query may still be running till then).
        table_filter: ``(schema, table) -> keep``; rows of dropped tables are ignored.
        known: qualified name -> signature stored by the previous discovery.
    """
    rels: dict[int, Row] = {}
    for rel in relations:
        if table_filter(rel[1], rel[2]):
            rels[rel[0]] = rel
    texts: dict[int, str] = dict(columns)  # relation oid -> JSON text of its columns
    cons = _by_relation(constraints, rels)
    idxs = _by_relation(indexes, rels)
    # Tables with equal column texts share one built column list: partitions, tenant copies of
    # a schema, tables made from one template are built once.
    shapes: dict[str, _Columns] = {}
    interned: dict[tuple[Any, ...], ColumnInfo] = {}

    out = CatalogTables()
    unchanged: list[tuple[str, int, str]] = []
    built: list[tuple[int, str, dict[str, Any]]] = []
    for oid, rel in rels.items():
        table_cons = sorted(cons.get(oid, ()), key=_ROW_NAME)
        table_idxs = sorted(idxs.get(oid, ()), key=_ROW_NAME)
        text = texts.get(oid, "[]")  # a relation without columns has no row
        signature = _signature(rel, text, table_cons, table_idxs)
        qname = qualified_name(database, rel[1], rel[2])
        if known is not None and known.get(qname) == signature:
            unchanged.append((qname, oid, rel[3]))
            continue
        out.signatures[qname] = signature
        table_cols = shapes.get(text)
        if table_cols is None:
            table_cols = shapes[text] = _columns(text, interned)
        built.append((oid, rel[3], _record(database, rel, table_cols, table_cons, table_idxs)))

    # Statistics last: a connector may still be reading them while the records were built.
    stats = {row[0]: row for row in (statistics() if callable(statistics) else statistics)}
    for qname, oid, relkind in unchanged:
        out.unchanged[qname] = _statistics(relkind, stats.get(oid))
    records: list[dict[str, Any]] = []
    for oid, relkind, table in built:
        estimate, size = _statistics(relkind, stats.get(oid))
        if estimate is not None:
            table["row_estimate"] = estimate
        if size is not None:
            table["size_bytes"] = size
        records.append(table)
    records.sort(key=_TABLE_ORDER)
    out.tables = _TABLES.validate_python(records)
    return out


def _by_relation(rows: Iterable[Row], rels: Mapping[int, Row]) -> dict[int, list[Row]]:
    out: dict[int, list[Row]] = {}
    for row in rows:
        if row[0] in rels:
            out.setdefault(row[0], []).append(row)
    return out


def _signature(rel: Row, text: str, cons: list[Row], idxs: list[Row]) -> str:
    """32 hex chars; the rows must already be in their canonical order."""
    payload = (
        SIGNATURE_VERSION,
        rel[1:],  # without the oid: a dropped and re-created table signs the same
        list(map(_TAIL, cons)),
        list(map(_TAIL, idxs)),
    )
    h = hashlib.blake2b(msgpack.packb(payload), digest_size=16)
    h.update(text.encode())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class _Columns:
    """One table's columns, built from the JSON text :data:`COLUMNS` gives for it."""

    records: tuple[ColumnInfo, ...]
    names: dict[int, str]  # attnum -> name, for keys and indexes


def _columns(text: str, interned: dict[tuple[Any, ...], ColumnInfo]) -> _Columns:
    """Build the column records of one table's :data:`COLUMNS` text.

    Equal rows make equal, immutable records: each is validated once per discovery
    (``interned``), as schemas repeat columns (ids, audit stamps) by the thousand.
    """
    rows: list[list[Any]] = json.loads(text)
    rows.sort(key=_ATTNUM)
    names: dict[int, str] = {}
    records: list[ColumnInfo | None] = []
    append = records.append
    missing: list[tuple[int, tuple[Any, ...], dict[str, Any]]] = []
    for row in rows:
        attnum, cname, typ, notnull, expr, generated, identity, is_array, enum, note = row
        names[attnum] = cname
        shape = (attnum, cname, typ, notnull, expr, generated, identity, is_array, note,
                 None if enum is None else tuple(enum))  # fmt: skip
        column = interned.get(shape)
        if column is None:
            col: dict[str, Any] = {"name": cname, "ordinal": attnum, "data_type": typ}
            if notnull:
                col["nullable"] = False
            if expr is not None:
                col["generated" if generated else "default"] = expr
            if note is not None:
                col["comment"] = note
            if identity:
                col["identity"] = True
            if is_array:
                col["is_array"] = True
            if enum is not None:
                col["enum_values"] = enum
            missing.append((len(records), shape, col))
        append(column)
    if missing:  # validated in one call: no Python-level call per column
        for (at, shape, _), column in zip(
            missing, _COLUMN_LIST.validate_python([col for _, _, col in missing]), strict=True
        ):
            records[at] = interned.setdefault(shape, column)
    return _Columns(tuple(records), names)  # type: ignore[arg-type]  # no None left


def _statistics(relkind: str, stat: Row | None) -> Stats:
    if stat is None:
        return None, None
    _, tuples, size = stat
    estimate = int(tuples) if tuples is not None and tuples >= 0 and relkind != "v" else None
    return estimate, size


def _record(
    database: str,
    rel: Row,
    columns: _Columns,
    cons: list[Row],
    idxs: list[Row],
) -> dict[str, Any]:
    """One table as the dict :data:`_TABLES` validates (only non-default keys set), without
    its statistics (added by :func:`read_tables`)."""
    _, schema, name, relkind, is_partition, comment, view, partkey, bound, psch, pname = rel
    kind = _KINDS[relkind]
    if is_partition and relkind in ("r", "f"):
        kind = TableKind.PARTITION
    table: dict[str, Any] = {
        "database": database,
        "schema": schema,
        "name": name,
        "kind": kind,
        "comment": comment,
        "parent": f"{psch}.{pname}" if pname is not None else None,
        "partition_key": partkey,
        "partition_bound": bound,
        "definition": view.strip() if view is not None else None,
    }
    attnames = columns.names
    table["columns"] = columns.records

    uniques: list[dict[str, Any]] = []
    fks: list[dict[str, Any]] = []
    for _, kname, contype, conkey, ref_schema, ref_table, ref_cols, upd, dele in cons:
        key: dict[str, Any] = {
            "name": kname,
            "columns": [attnames.get(n) or str(n) for n in conkey],
        }
        if contype == "p":
            table["primary_key"] = key
        elif contype == "u":
            uniques.append(key)
        else:
            key["ref_database"] = database
            key["ref_schema"] = ref_schema
            key["ref_table"] = ref_table
            key["ref_columns"] = ref_cols or ()
            key["on_update"] = _FK_ACTIONS.get(upd)
            key["on_delete"] = _FK_ACTIONS.get(dele)
            fks.append(key)
    if uniques:
        table["unique_constraints"] = uniques
    if fks:
        table["foreign_keys"] = fks

    if idxs:
        indexes: list[dict[str, Any]] = []
        for _, iname, unique, primary, keys, exprs, predicate, method, definition in idxs:
            if exprs is None:
                key_cols = [attnames.get(n) or str(n) for n in keys]
            else:  # attnum 0 marks an expression, deparsed per key position
                key_cols = [
                    exprs[i] if n == 0 else attnames.get(n) or str(n) for i, n in enumerate(keys)
                ]
            indexes.append(
                {
                    "name": iname,
                    "columns": key_cols,
                    "unique": unique,
                    "primary": primary,
                    "predicate": predicate,
                    "method": method,
                    "definition": definition,
                }
            )
        table["indexes"] = indexes
    return table
