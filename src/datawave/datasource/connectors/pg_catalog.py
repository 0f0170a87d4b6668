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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

import msgpack
from pydantic import TypeAdapter

from datawave.datasource.connectors.base import gc_paused
from datawave.datasource.models import TableInfo, TableKind, qualified_name

__all__ = [
    "COLUMNS",
    "CONSTRAINTS",
    "DATABASES",
    "DATABASE_QUERIES",
    "DATABASE_SIZE",
    "ENUMS",
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

#: ``attrelid, attnum, name, type, not null, default expression, attgenerated, attidentity,
#: is array, element type oid (for enum lookup), comment``.
COLUMNS: Final = f"""
SELECT a.attrelid, a.attnum, a.attname,
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
       a.attgenerated, a.attidentity,
       t.typcategory = 'A',
       CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE a.atttypid END,
       d.description
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_catalog.pg_description d
       ON d.objoid = a.attrelid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.objsubid = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN {_RELKIND_SQL} AND n.nspname = ANY(%(schemas)s)
"""

#: Every enum type of the database: ``type oid, labels in sort order``.
ENUMS: Final = """
SELECT e.enumtypid, pg_catalog.array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
FROM pg_catalog.pg_enum e
GROUP BY e.enumtypid
"""

#: Primary keys, unique and foreign keys: ``conrelid, name, contype, conkey, ref schema,
#: ref table, ref column names, on update, on delete, confrelid, confkey``. ``conkey`` is
#: resolved to names by the connector, and so is ``confkey`` when the referenced table sits in a
#: schema being read (its columns come with :data:`COLUMNS`); only the names of columns in
#: other schemas are looked up here (a correlated sub-select per such key, which costs more
#: than the rest of the query when run for every key). The copies PostgreSQL adds on the
#: referenced side of a partitioned table (same ``conrelid`` as their parent constraint) are
#: internal and skipped.
CONSTRAINTS: Final = f"""
SELECT k.conrelid, k.conname, k.contype, k.conkey,
       fn.nspname, fc.relname,
       CASE WHEN k.contype = 'f' AND fn.nspname <> ALL(%(schemas)s) THEN ARRAY(
           SELECT fa.attname::text
           FROM pg_catalog.unnest(k.confkey) WITH ORDINALITY AS u(attnum, ord)
           JOIN pg_catalog.pg_attribute fa ON fa.attrelid = k.confrelid AND fa.attnum = u.attnum
           ORDER BY u.ord) END,
       k.confupdtype, k.confdeltype, k.confrelid, k.confkey
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = k.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
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
    ENUMS,
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
SIGNATURE_VERSION: Final = 1

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
_ATTNUM = itemgetter(1)  # column rows: (attrelid, attnum, ...)
_ELEMENT = itemgetter(9)  # column rows: element type oid
_SIGNED_COLUMN = itemgetter(1, 2, 3, 4, 5, 6, 7, 8, 10)  # all but attrelid and the type oid
_TAIL = itemgetter(slice(1, None))  # constraint and index rows without the relation oid
_ROW_NAME = itemgetter(1)  # constraint and index rows: (relid, name, ...)
_TABLE_ORDER = itemgetter("schema", "name")

# Records are assembled as plain dicts and validated in one call: pydantic-core then builds all
# nested models without a Python-level call per column (about a third faster at 70k columns
# than constructing each ``ColumnInfo``), and only non-default keys are set.
_TABLES: TypeAdapter[list[TableInfo]] = TypeAdapter(list[TableInfo])

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
    enums: Iterable[Row],
    constraints: Iterable[Row],
    indexes: Iterable[Row],
    statistics: Iterable[Row] | Callable[[], Iterable[Row]],
    *,
    table_filter: Callable[[str, str], bool],
    known: Mapping[str, str] | None = None,
) -> CatalogTables:
    """Group the rows of one database by relation oid, sign each table, build what changed.

    A table's signature is BLAKE2b over a canonical msgpack encoding of the raw rows its record
    is built from: the relation row, its column rows in attnum order (with the labels of the
    enum types they use), its constraint and index rows in name order; oids and statistics
    left out. The record is a function of exactly these rows, so an equal signature means an
    equal record: a table whose signature is in ``known`` is reported in ``unchanged`` with its
    fresh statistics and never built. A rediscovery of an unchanged database builds nothing.

    Args:
        database: the database the rows come from.
        relations, columns, enums, constraints, indexes, statistics: rows of the queries of the
            same name, in their column order; ``statistics`` may be a callable returning them,
            called once every record is built (their query may still be running till then).
        table_filter: ``(schema, table) -> keep``; rows of dropped tables are ignored.
        known: qualified name -> signature stored by the previous discovery.
    """
    rels: dict[int, Row] = {}
    for rel in relations:
        if table_filter(rel[1], rel[2]):
            rels[rel[0]] = rel
    constraints = list(constraints)
    # Referenced tables whose column names the query left to us (they are in ``columns``).
    referenced = {row[9] for row in constraints if row[2] == "f" and row[6] is None}
    ref_names: dict[tuple[int, int], str] = {}
    cols: dict[int, list[Row]] = {oid: [] for oid in rels}
    for row in columns:
        bucket = cols.get(row[0])
        if bucket is not None:
            bucket.append(row)
        if row[0] in referenced:
            ref_names[row[0], row[1]] = row[2]
    cons = _by_relation(_resolve_references(constraints, ref_names), rels)
    idxs = _by_relation(indexes, rels)
    labels: dict[int, list[str]] = dict(enums)

    out = CatalogTables()
    unchanged: list[tuple[str, int, str]] = []
    built: list[tuple[int, str, dict[str, Any]]] = []
    for oid, rel in rels.items():
        table_cols = cols[oid]
        table_cols.sort(key=_ATTNUM)
        table_cons = sorted(cons.get(oid, ()), key=_ROW_NAME)
        table_idxs = sorted(idxs.get(oid, ()), key=_ROW_NAME)
        signature = _signature(rel, table_cols, table_cons, table_idxs, labels)
        qname = qualified_name(database, rel[1], rel[2])
        if known is not None and known.get(qname) == signature:
            unchanged.append((qname, oid, rel[3]))
            continue
        out.signatures[qname] = signature
        built.append(
            (oid, rel[3], _record(database, rel, table_cols, table_cons, table_idxs, labels))
        )

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


def _resolve_references(rows: list[Row], names: Mapping[tuple[int, int], str]) -> list[Row]:
    """Constraint rows as ``conrelid .. on delete``, referenced column names filled in.

    Signatures are taken over these rows, so renaming a referenced column re-signs (and
    rebuilds) the tables whose foreign keys point at it.
    """
    out: list[Row] = []
    for row in rows:
        if row[2] == "f" and row[6] is None:
            relid = row[9]
            ref_cols = tuple(names.get((relid, n)) or str(n) for n in row[10])
            out.append((*row[:6], ref_cols, row[7], row[8]))
        else:
            out.append(row[:9])
    return out


def _by_relation(rows: Iterable[Row], rels: Mapping[int, Row]) -> dict[int, list[Row]]:
    out: dict[int, list[Row]] = {}
    for row in rows:
        if row[0] in rels:
            out.setdefault(row[0], []).append(row)
    return out


def _signature(
    rel: Row, cols: list[Row], cons: list[Row], idxs: list[Row], labels: Mapping[int, list[str]]
) -> str:
    """32 hex chars; the rows must already be in their canonical order."""
    payload = (
        SIGNATURE_VERSION,
        rel[1:],  # without the oid: a dropped and re-created table signs the same
        list(map(_SIGNED_COLUMN, cols)),  # attrelid and element type oid left out
        list(map(labels.get, map(_ELEMENT, cols))),  # enum labels per column, or None
        list(map(_TAIL, cons)),
        list(map(_TAIL, idxs)),
    )
    return hashlib.blake2b(msgpack.packb(payload), digest_size=16).hexdigest()


def _statistics(relkind: str, stat: Row | None) -> Stats:
    if stat is None:
        return None, None
    _, tuples, size = stat
    estimate = int(tuples) if tuples is not None and tuples >= 0 and relkind != "v" else None
    return estimate, size


def _record(
    database: str,
    rel: Row,
    cols: list[Row],
    cons: list[Row],
    idxs: list[Row],
    labels: Mapping[int, list[str]],
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
    attnames: dict[int, str] = {}
    columns: list[dict[str, Any]] = []
    append = columns.append
    for _, attnum, cname, typ, notnull, expr, generated, identity, is_array, elem, note in cols:
        attnames[attnum] = cname
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
        enum = labels.get(elem)
        if enum is not None:
            col["enum_values"] = enum
        append(col)
    table["columns"] = columns

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
