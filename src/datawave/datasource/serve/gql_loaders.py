"""Batch loaders behind GraphQL: one query per level of the tree, whatever the fan-out.

Each loader receives every key requested at one level of a GraphQL query (all sources' databases,
all schemas' tables, all tables' columns) and answers them with a single ``IN`` query on the
store's tables, so ``sources → databases → schemas → tables → columns`` costs five queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from datawave.datasource.store import MetadataStore
from datawave.datasource.store.assets import decode_columns
from datawave.datasource.store.tables import databases, schemas, tables

__all__ = ["load_columns", "load_databases", "load_schemas", "load_tables"]

_CHUNK = 500

_TABLE_COLS = (
    tables.c.id, tables.c.source_id, tables.c.database, tables.c.schema, tables.c.name,
    tables.c.kind, tables.c.comment, tables.c.row_estimate, tables.c.size_bytes,
    tables.c.column_count, tables.c.primary_key,
)  # fmt: skip


def _chunks(seq: Sequence[Any]) -> list[Sequence[Any]]:
    return [seq[i : i + _CHUNK] for i in range(0, len(seq), _CHUNK)]


def load_databases(store: MetadataStore, source_ids: Sequence[str]) -> list[list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with store.read() as conn:
        for chunk in _chunks(sorted(set(source_ids))):
            q = (select(databases.c.source_id, databases.c.name, databases.c.comment,
                        databases.c.size_bytes)
                 .where(databases.c.source_id.in_(chunk)).order_by(databases.c.name))  # fmt: skip
            for r in conn.execute(q):
                out[r.source_id].append(dict(r._mapping))
    return [out.get(k, []) for k in source_ids]


def load_schemas(
    store: MetadataStore, keys: Sequence[tuple[str, str]]
) -> list[list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    wanted = set(keys)
    with store.read() as conn:
        for chunk in _chunks(sorted({s for s, _ in wanted})):
            q = (select(schemas.c.source_id, schemas.c.database, schemas.c.name, schemas.c.comment)
                 .where(schemas.c.source_id.in_(chunk))
                 .order_by(schemas.c.database, schemas.c.name))  # fmt: skip
            for r in conn.execute(q):
                if (r.source_id, r.database) in wanted:
                    out[(r.source_id, r.database)].append(dict(r._mapping))
    return [out.get(k, []) for k in keys]


def load_tables(
    store: MetadataStore, keys: Sequence[tuple[str, str, str]]
) -> list[list[dict[str, Any]]]:
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    wanted = set(keys)
    by_source: dict[str, set[str]] = defaultdict(set)
    for s, _, sc in wanted:
        by_source[s].add(sc)
    with store.read() as conn:
        for chunk in _chunks(sorted(by_source)):
            names = sorted(set().union(*(by_source[s] for s in chunk)))
            q = (select(*_TABLE_COLS)
                 .where(tables.c.source_id.in_(chunk), tables.c.schema.in_(names))
                 .order_by(tables.c.database, tables.c.schema, tables.c.name))  # fmt: skip
            for r in conn.execute(q):
                key = (r.source_id, r.database, r.schema)
                if key in wanted:
                    out[key].append(dict(r._mapping))
    return [out.get(k, []) for k in keys]


def load_columns(store: MetadataStore, table_ids: Sequence[int]) -> list[list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    with store.read() as conn:
        for chunk in _chunks(sorted(set(table_ids))):
            q = select(tables.c.id, tables.c.primary_key, tables.c.column_doc).where(
                tables.c.id.in_(chunk)
            )
            for tid, pk, doc in conn.execute(q):  # columns: one JSON document per table
                keys = set(pk["columns"]) if pk else set()
                out[tid] = [{"table_id": tid, "name": c.name, "ordinal": c.ordinal,
                             "data_type": c.data_type, "nullable": c.nullable,
                             "default": c.default, "comment": c.comment,
                             "is_primary_key": c.name in keys}
                            for c in decode_columns(doc)]  # fmt: skip
    return [out.get(k, []) for k in table_ids]
