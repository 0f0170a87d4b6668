"""Discovered assets: bulk-apply a :class:`ChangeSet` in one transaction, and read them back.

Writes go through the DBAPI for the large tables (``COPY`` on PostgreSQL, ``executemany`` on
SQLite): a 70,000-column first discovery is one round of bulk statements, not ORM objects.

A table's columns are one JSON document on its row (``tables.column_doc``), written and read by
pydantic-core (:func:`column_doc`, :func:`decode_columns`) without a Python call per column:
inserting 60,000 column rows was the largest single cost of a first discovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
from pydantic import TypeAdapter
from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, tuple_, update

from datawave.datasource.models import (
    ColumnInfo,
    DatabaseInfo,
    DriftEvent,
    ForeignKeyInfo,
    IndexInfo,
    KeyInfo,
    SchemaInfo,
    TableInfo,
    columns_json,
)
from datawave.datasource.store.base import StoreBase, aware, chunked, dumps
from datawave.datasource.store.changes import ChangeSet, TableRow, TableState
from datawave.datasource.store.tables import (
    databases,
    drift_events,
    schemas,
    snapshots,
    tables,
)

__all__ = ["AssetsMixin", "column_doc", "decode_columns"]


_COLUMNS: TypeAdapter[tuple[ColumnInfo, ...]] = TypeAdapter(tuple[ColumnInfo, ...])
_KEY: TypeAdapter[KeyInfo] = TypeAdapter(KeyInfo)
_KEYS: TypeAdapter[tuple[KeyInfo, ...]] = TypeAdapter(tuple[KeyInfo, ...])
_FKS: TypeAdapter[tuple[ForeignKeyInfo, ...]] = TypeAdapter(tuple[ForeignKeyInfo, ...])
_IXS: TypeAdapter[tuple[IndexInfo, ...]] = TypeAdapter(tuple[IndexInfo, ...])
# The serializers themselves: 20,000 calls on a first discovery, without the adapters' wrapper.
_KEY_JSON = _KEY.serializer.to_json
_KEYS_JSON = _KEYS.serializer.to_json
_FKS_JSON = _FKS.serializer.to_json
_IXS_JSON = _IXS.serializer.to_json


def column_doc(cols: Sequence[ColumnInfo]) -> str:
    """The ``tables.column_doc`` of ``cols``: a JSON array, fields at their default left out."""
    return columns_json(cols).decode()


def _row_doc(row: TableRow) -> str:
    return (row.columns if row.columns is not None else columns_json(row.table.columns)).decode()


def decode_columns(doc: str | bytes | None) -> tuple[ColumnInfo, ...]:
    """The columns of a ``tables.column_doc`` value, in ordinal order."""
    return _COLUMNS.validate_json(doc) if doc else ()


def _key_json(k: KeyInfo | None) -> Any:
    return None if k is None else {"name": k.name, "columns": list(k.columns)}


def _fk_json(f: ForeignKeyInfo) -> dict[str, Any]:
    return {
        "name": f.name, "columns": list(f.columns), "ref_database": f.ref_database,
        "ref_schema": f.ref_schema, "ref_table": f.ref_table, "ref_columns": list(f.ref_columns),
        "on_update": f.on_update, "on_delete": f.on_delete,
    }  # fmt: skip


def _ix_json(i: IndexInfo) -> dict[str, Any]:
    return {
        "name": i.name, "columns": list(i.columns), "unique": i.unique, "primary": i.primary,
        "predicate": i.predicate, "method": i.method, "definition": i.definition,
    }  # fmt: skip


_TABLE_FIELDS = (
    "id", "source_id", "database", "schema", "name", "kind", "comment", "parent", "partition_key",
    "partition_bound", "definition", "row_estimate", "size_bytes", "column_count", "primary_key",
    "unique_constraints", "foreign_keys", "indexes", "properties", "fingerprint",
    "first_seen_at", "updated_at", "signature", "column_doc",
)  # fmt: skip


def _table_values(source_id: str, row: TableRow, now: Any) -> dict[str, Any]:
    """Row values with JSON columns as Python objects (for SQLAlchemy statements)."""
    t = row.table
    return {
        "id": row.id, "source_id": source_id, "database": t.database, "schema": t.schema_name,
        "name": t.name, "kind": t.kind.value, "comment": t.comment, "parent": t.parent,
        "partition_key": t.partition_key, "partition_bound": t.partition_bound,
        "definition": t.definition, "row_estimate": t.row_estimate, "size_bytes": t.size_bytes,
        "column_count": len(t.columns), "primary_key": _key_json(t.primary_key),
        "unique_constraints": [_key_json(u) for u in t.unique_constraints],
        "foreign_keys": [_fk_json(fk) for fk in t.foreign_keys],
        "indexes": [_ix_json(ix) for ix in t.indexes], "properties": t.properties or None,
        "fingerprint": row.fingerprint, "first_seen_at": now, "updated_at": now,
        "signature": row.signature, "column_doc": _row_doc(row),
    }  # fmt: skip


def _table_tuple(source_id: str, row: TableRow, ts: Any) -> tuple[Any, ...]:
    """The same values for the DBAPI bulk path, JSON already encoded (order: _TABLE_FIELDS).

    The JSON is pydantic-core's serialization of the records (the objects :func:`_table_values`
    gives SQLAlchemy), one call per non-empty value instead of a Python call per key or index.
    """
    t = row.table
    pk, uniques, fks, ixs = t.primary_key, t.unique_constraints, t.foreign_keys, t.indexes
    return (
        row.id, source_id, t.database, t.schema_name, t.name, t.kind.value, t.comment, t.parent,
        t.partition_key, t.partition_bound, t.definition, t.row_estimate, t.size_bytes,
        len(t.columns), None if pk is None else _KEY_JSON(pk).decode(),
        _KEYS_JSON(uniques).decode() if uniques else "[]",
        _FKS_JSON(fks).decode() if fks else "[]",
        _IXS_JSON(ixs).decode() if ixs else "[]",
        dumps(t.properties) if t.properties else None, row.fingerprint, ts, ts, row.signature,
        _row_doc(row),
    )  # fmt: skip


def _table_info(m: Any) -> TableInfo:
    pk = m["primary_key"]
    return TableInfo(  # type: ignore[call-arg]  # "schema" is the field's alias
        database=m["database"],
        schema=m["schema"],
        name=m["name"],
        kind=m["kind"],
        comment=m["comment"],
        columns=decode_columns(m["column_doc"]) if "column_doc" in m else (),
        primary_key=KeyInfo(name=pk["name"], columns=tuple(pk["columns"])) if pk else None,
        unique_constraints=tuple(
            KeyInfo(name=u["name"], columns=tuple(u["columns"]))
            for u in m["unique_constraints"] or []
        ),
        foreign_keys=tuple(ForeignKeyInfo(**fk) for fk in m["foreign_keys"] or []),
        indexes=tuple(IndexInfo(**ix) for ix in m["indexes"] or []),
        parent=m["parent"],
        partition_key=m["partition_key"],
        partition_bound=m["partition_bound"],
        definition=m["definition"],
        row_estimate=m["row_estimate"],
        size_bytes=m["size_bytes"],
        properties=m["properties"] or {},
    )


#: Every ``tables`` column but the column document: listings without columns skip reading it.
_TABLES_WITHOUT_DOC = [c for c in tables.c if c.name != "column_doc"]


class AssetsMixin(StoreBase):
    # -- write -------------------------------------------------------------------------------
    def apply_changes(self, cs: ChangeSet) -> int:
        """Write a change set atomically; return the number of rows written (0 for no-ops)."""
        if cs.empty:
            return 0
        written = 0
        with self.begin() as conn:
            now = cs.now
            for db in cs.upsert_databases:
                conn.execute(
                    delete(databases).where(
                        databases.c.source_id == cs.source_id, databases.c.name == db.name
                    )
                )
                conn.execute(
                    insert(databases).values(
                        source_id=cs.source_id, name=db.name, comment=db.comment,
                        size_bytes=db.size_bytes, properties=db.properties or None, updated_at=now,
                    )
                )  # fmt: skip
                written += 1
            for sc in cs.upsert_schemas:
                conn.execute(
                    delete(schemas).where(
                        schemas.c.source_id == cs.source_id,
                        schemas.c.database == sc.database,
                        schemas.c.name == sc.name,
                    )
                )
                conn.execute(
                    insert(schemas).values(
                        source_id=cs.source_id, database=sc.database, name=sc.name,
                        comment=sc.comment, updated_at=now,
                    )
                )  # fmt: skip
                written += 1
            for chunk in chunked(cs.delete_tables):
                conn.execute(delete(tables).where(tables.c.id.in_(chunk)))
                written += len(chunk)
            for name in cs.delete_schemas:
                conn.execute(
                    delete(schemas).where(
                        schemas.c.source_id == cs.source_id,
                        schemas.c.database == name[0],
                        schemas.c.name == name[1],
                    )
                )
                written += 1
            for dbname in cs.delete_databases:
                conn.execute(
                    delete(databases).where(
                        databases.c.source_id == cs.source_id, databases.c.name == dbname
                    )
                )
                written += 1
            if cs.replace_tables:
                vals = [_table_values(cs.source_id, r, now) for r in cs.replace_tables]
                for v in vals:
                    v.pop("first_seen_at")
                    v["b_id"] = v.pop("id")
                stmt = (
                    update(tables)
                    .where(tables.c.id == bindparam("b_id"))
                    .values({k: bindparam(k) for k in vals[0] if k != "b_id"})
                )
                conn.execute(stmt, vals)
                written += len(vals)
            if cs.insert_tables:
                ts = now.strftime("%Y-%m-%d %H:%M:%S.%f") if self.dialect == "sqlite" else now
                self._bulk_insert(
                    conn, "tables", _TABLE_FIELDS,
                    [_table_tuple(cs.source_id, r, ts) for r in cs.insert_tables],
                )  # fmt: skip
                written += len(cs.insert_tables)
            if cs.stats_updates:
                conn.execute(
                    update(tables)
                    .where(tables.c.id == bindparam("b_id"))
                    .values(row_estimate=bindparam("b_est"), size_bytes=bindparam("b_size")),
                    [{"b_id": i, "b_est": e, "b_size": z} for i, e, z in cs.stats_updates],
                )
                written += len(cs.stats_updates)
            if cs.signature_updates:
                conn.execute(
                    update(tables)
                    .where(tables.c.id == bindparam("b_id"))
                    .values(signature=bindparam("b_sig")),
                    [{"b_id": i, "b_sig": sig} for i, sig in cs.signature_updates],
                )
                written += len(cs.signature_updates)
            if cs.drift:
                conn.execute(
                    insert(drift_events),
                    [
                        {
                            "source_id": e.source_id, "run_id": e.run_id, "kind": e.kind.value,
                            "table_name": e.table, "column_name": e.column, "before": e.before,
                            "after": e.after, "breaking": e.breaking, "detected_at": now,
                        }
                        for e in cs.drift
                    ],
                )  # fmt: skip
                written += len(cs.drift)
            if cs.snapshot is not None:
                conn.execute(
                    insert(snapshots).values(
                        id=cs.snapshot.id, source_id=cs.source_id, run_id=cs.run_id,
                        created_at=now, table_count=len(cs.snapshot.tables),
                        fingerprint=cs.snapshot.fingerprint,
                        tables=msgpack.packb(cs.snapshot.tables),
                    )
                )  # fmt: skip
                written += 1
        return written

    def _bulk_insert(
        self, conn: Connection, table: str, names: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None
        cols = ", ".join(f'"{c}"' for c in names)
        if self.dialect == "postgresql":
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
        else:
            marks = ", ".join("?" for _ in names)
            cur = raw.cursor()
            try:
                cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
            finally:
                cur.close()

    # -- state for diffing -------------------------------------------------------------------
    def load_table_state(self, source_id: str) -> dict[tuple[str, str, str], TableState]:
        q = select(
            tables.c.database, tables.c.schema, tables.c.name, tables.c.id, tables.c.fingerprint,
            tables.c.row_estimate, tables.c.size_bytes, tables.c.signature, tables.c.column_count,
            tables.c.kind,
        ).where(tables.c.source_id == source_id)  # fmt: skip
        with self.read() as conn:
            rows = conn.execute(q).all()  # one fetchall, not a fetch per row
        return {(r[0], r[1], r[2]): TableState(*r[3:]) for r in rows}

    def load_databases(self, source_id: str) -> dict[str, DatabaseInfo]:
        q = select(databases).where(databases.c.source_id == source_id)
        with self.read() as conn:
            return {
                r.name: DatabaseInfo(
                    name=r.name, comment=r.comment, size_bytes=r.size_bytes,
                    properties=r.properties or {},
                )
                for r in conn.execute(q)
            }  # fmt: skip

    def load_schemas(self, source_id: str) -> dict[tuple[str, str], SchemaInfo]:
        q = select(schemas).where(schemas.c.source_id == source_id)
        with self.read() as conn:
            return {
                (r.database, r.name): SchemaInfo(
                    database=r.database, name=r.name, comment=r.comment
                )
                for r in conn.execute(q)
            }

    def load_tables(self, table_ids: Sequence[int]) -> dict[int, TableInfo]:
        """Full records (with columns) for the given ids, e.g. to diff changed tables."""
        out: dict[int, TableInfo] = {}
        with self.read() as conn:
            for chunk in chunked(list(table_ids)):
                for t in conn.execute(select(tables).where(tables.c.id.in_(chunk))):
                    out[t.id] = _table_info(t._mapping)
        return out

    # -- reads -------------------------------------------------------------------------------
    def list_databases(self, source_id: str) -> list[DatabaseInfo]:
        return sorted(self.load_databases(source_id).values(), key=lambda d: d.name)

    def list_schemas(self, source_id: str, database: str | None = None) -> list[SchemaInfo]:
        out = self.load_schemas(source_id).values()
        return sorted(
            (s for s in out if database is None or s.database == database),
            key=lambda s: (s.database, s.name),
        )

    def list_tables(
        self,
        source_id: str,
        *,
        database: str | None = None,
        schema: str | None = None,
        after: tuple[str, str, str] | None = None,
        limit: int = 100,
        with_columns: bool = True,
    ) -> list[TableInfo]:
        """Tables ordered by (database, schema, name); ``after`` is the last key of a page."""
        q = select(tables) if with_columns else select(*_TABLES_WITHOUT_DOC)
        q = q.where(tables.c.source_id == source_id)
        if database is not None:
            q = q.where(tables.c.database == database)
        if schema is not None:
            q = q.where(tables.c.schema == schema)
        if after is not None:
            q = q.where(tuple_(tables.c.database, tables.c.schema, tables.c.name) > tuple_(*after))
        q = q.order_by(tables.c.database, tables.c.schema, tables.c.name).limit(limit)
        with self.read() as conn:
            trows = conn.execute(q).all()
        return [_table_info(t._mapping) for t in trows]

    def get_table(self, source_id: str, database: str, schema: str, name: str) -> TableInfo:
        from datawave.datasource.errors import NotFound
        from datawave.datasource.store.ids import asset_id

        tid = asset_id(source_id, database, schema, name)
        found = self.load_tables([tid])
        if tid not in found:
            raise NotFound(f"no table {database}.{schema}.{name}", kind="table")
        return found[tid]

    def asset_counts(self, source_id: str) -> dict[str, int]:
        with self.read() as conn:
            n_t = conn.execute(
                select(func.count()).select_from(tables).where(tables.c.source_id == source_id)
            ).scalar()
            n_c = conn.execute(
                select(func.coalesce(func.sum(tables.c.column_count), 0)).where(
                    tables.c.source_id == source_id
                )
            ).scalar()
            n_s = conn.execute(
                select(func.count()).select_from(schemas).where(schemas.c.source_id == source_id)
            ).scalar()
            n_d = conn.execute(
                select(func.count())
                .select_from(databases)
                .where(databases.c.source_id == source_id)
            ).scalar()
        return {"databases": n_d or 0, "schemas": n_s or 0, "tables": n_t or 0, "columns": n_c or 0}

    def search(
        self, q: str, *, limit: int = 50, source_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Case-insensitive substring search over table and column names and comments.

        Column hits are matched in Python over the column documents (``str.lower`` on both
        sides, as the API's in-replica index does); a document whose lower-cased JSON text
        does not contain the needle is skipped unparsed when the needle is plain ASCII (JSON
        escapes nothing in it, so an occurrence in a name or comment is one in the text).
        """
        needle = q.lower()
        pat = f"%{needle}%"
        hits: list[dict[str, Any]] = []
        with self.read() as conn:
            tq = select(
                tables.c.source_id, tables.c.database, tables.c.schema, tables.c.name,
                tables.c.kind, tables.c.comment,
            ).where(or_(func.lower(tables.c.name).like(pat), func.lower(tables.c.comment).like(pat)))  # fmt: skip
            if source_ids is not None:
                tq = tq.where(tables.c.source_id.in_(list(source_ids)))
            for r in conn.execute(tq.limit(limit)):
                hits.append({"type": "table", "source_id": r[0], "database": r[1], "schema": r[2],
                             "table": r[3], "kind": r[4], "comment": r[5]})  # fmt: skip
            cq = select(
                tables.c.source_id, tables.c.database, tables.c.schema, tables.c.name,
                tables.c.column_doc,
            )  # fmt: skip
            if source_ids is not None:
                cq = cq.where(tables.c.source_id.in_(list(source_ids)))
            plain = (
                needle.isascii() and needle.isprintable() and not any(c in needle for c in '"\\')
            )
            rows = conn.execute(cq.order_by(tables.c.id).execution_options(yield_per=500))
            for sid, db, schema, table, doc in rows:
                if len(hits) >= limit:
                    break
                if not doc or (plain and needle not in doc.lower()):
                    continue
                for c in decode_columns(doc):
                    if needle in c.name.lower() or (c.comment and needle in c.comment.lower()):
                        hits.append({"type": "column", "source_id": sid, "database": db,
                                     "schema": schema, "table": table, "column": c.name,
                                     "data_type": c.data_type, "comment": c.comment})  # fmt: skip
            rows.close()
        return hits[:limit]

    def list_drift(
        self,
        source_id: str,
        *,
        breaking: bool | None = None,
        run_id: str | None = None,
        after_id: int | None = None,
        limit: int = 500,
    ) -> list[DriftEvent]:
        q = select(drift_events).where(drift_events.c.source_id == source_id)
        if breaking is not None:
            q = q.where(drift_events.c.breaking == breaking)
        if run_id is not None:
            q = q.where(drift_events.c.run_id == run_id)
        if after_id is not None:
            q = q.where(drift_events.c.id > after_id)
        with self.read() as conn:
            rows = conn.execute(q.order_by(drift_events.c.id).limit(limit)).all()
        return [
            DriftEvent(
                id=r.id, source_id=r.source_id, run_id=r.run_id, kind=r.kind, table=r.table_name,
                column=r.column_name, before=r.before, after=r.after, breaking=r.breaking,
                detected_at=aware(r.detected_at),
            )
            for r in rows
        ]  # fmt: skip

    def latest_snapshot(self, source_id: str) -> dict[str, Any] | None:
        q = (
            select(snapshots)
            .where(snapshots.c.source_id == source_id)
            .order_by(snapshots.c.created_at.desc())
            .limit(1)
        )
        with self.read() as conn:
            r = conn.execute(q).first()
        if r is None:
            return None
        return {
            "id": r.id, "run_id": r.run_id, "created_at": aware(r.created_at),
            "table_count": r.table_count, "fingerprint": r.fingerprint,
            "tables": msgpack.unpackb(r.tables),
        }  # fmt: skip
