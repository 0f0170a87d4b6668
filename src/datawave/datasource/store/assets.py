"""Discovered assets: bulk-apply a :class:`ChangeSet` in one transaction, and read them back.

Writes go through the DBAPI for the large tables (``COPY`` on PostgreSQL, ``executemany`` on
SQLite): a 70,000-column first discovery is one round of bulk statements, not ORM objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
from sqlalchemy import Connection, delete, func, insert, or_, select, tuple_, update

from datawave.datasource.models import (
    ColumnInfo,
    DatabaseInfo,
    DriftEvent,
    ForeignKeyInfo,
    IndexInfo,
    KeyInfo,
    SchemaInfo,
    TableInfo,
)
from datawave.datasource.store.base import StoreBase, aware, dumps
from datawave.datasource.store.changes import ChangeSet, TableRow, TableState
from datawave.datasource.store.tables import (
    columns,
    databases,
    drift_events,
    schemas,
    snapshots,
    tables,
)

__all__ = ["AssetsMixin"]

_COLUMN_FIELDS = (
    "table_id", "ordinal", "source_id", "name", "data_type", "nullable", "default", "comment",
    "generated", "identity", "enum_values", "is_array", "is_primary_key",
)  # fmt: skip
_CHUNK = 500


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


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
    "first_seen_at", "updated_at",
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
    }  # fmt: skip


def _table_tuple(source_id: str, row: TableRow, ts: Any) -> tuple[Any, ...]:
    """The same values for the DBAPI bulk path, JSON already encoded (order: _TABLE_FIELDS)."""
    t = row.table
    return (
        row.id, source_id, t.database, t.schema_name, t.name, t.kind.value, t.comment, t.parent,
        t.partition_key, t.partition_bound, t.definition, t.row_estimate, t.size_bytes,
        len(t.columns), dumps(_key_json(t.primary_key)),
        dumps([_key_json(u) for u in t.unique_constraints]),
        dumps([_fk_json(fk) for fk in t.foreign_keys]), dumps([_ix_json(ix) for ix in t.indexes]),
        dumps(t.properties) if t.properties else None, row.fingerprint, ts, ts,
    )  # fmt: skip


def _column_rows(source_id: str, rows: Sequence[TableRow]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    append = out.append
    for r in rows:
        pk = set(r.table.primary_key.columns) if r.table.primary_key else ()
        tid = r.id
        for c in r.table.columns:
            append(
                (
                    tid, c.ordinal, source_id, c.name, c.data_type, c.nullable, c.default,
                    c.comment, c.generated, c.identity,
                    None if c.enum_values is None else json.dumps(list(c.enum_values)),
                    c.is_array, c.name in pk,
                )
            )  # fmt: skip
    return out


def _table_info(m: Any, cols: list[ColumnInfo]) -> TableInfo:
    pk = m["primary_key"]
    return TableInfo(  # type: ignore[call-arg]  # "schema" is the field's alias
        database=m["database"],
        schema=m["schema"],
        name=m["name"],
        kind=m["kind"],
        comment=m["comment"],
        columns=tuple(cols),
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


def _column_info(m: Any) -> ColumnInfo:
    ev = m["enum_values"]
    if isinstance(ev, str):
        ev = json.loads(ev)
    return ColumnInfo(
        name=m["name"],
        ordinal=m["ordinal"],
        data_type=m["data_type"],
        nullable=bool(m["nullable"]),
        default=m["default"],
        comment=m["comment"],
        generated=m["generated"],
        identity=bool(m["identity"]),
        enum_values=tuple(ev) if ev is not None else None,
        is_array=bool(m["is_array"]),
    )


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
            doomed = list(cs.delete_tables) + [r.id for r in cs.replace_tables]
            for chunk in _chunks(doomed):
                conn.execute(delete(columns).where(columns.c.table_id.in_(chunk)))
            for chunk in _chunks(cs.delete_tables):
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
                from sqlalchemy import bindparam

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
            # Sorted by table id: the columns b-tree is keyed (table_id, ordinal), and appends
            # in key order are far cheaper than random inserts.
            col_rows = _column_rows(
                cs.source_id, sorted(cs.insert_tables + cs.replace_tables, key=lambda r: r.id)
            )
            self._bulk_columns(conn, col_rows)
            written += len(col_rows)
            for sid, est, size in cs.stats_updates:
                conn.execute(
                    update(tables)
                    .where(tables.c.id == sid)
                    .values(row_estimate=est, size_bytes=size)
                )
                written += 1
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

    def _bulk_columns(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self._bulk_insert(conn, "columns", _COLUMN_FIELDS, rows)

    # -- state for diffing -------------------------------------------------------------------
    def load_table_state(self, source_id: str) -> dict[tuple[str, str, str], TableState]:
        q = select(
            tables.c.database, tables.c.schema, tables.c.name, tables.c.id, tables.c.fingerprint,
            tables.c.row_estimate, tables.c.size_bytes,
        ).where(tables.c.source_id == source_id)  # fmt: skip
        with self.read() as conn:
            return {(r[0], r[1], r[2]): TableState(r[3], r[4], r[5], r[6]) for r in conn.execute(q)}

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
            for chunk in _chunks(list(table_ids)):
                trows = conn.execute(select(tables).where(tables.c.id.in_(chunk))).all()
                crow = conn.execute(
                    select(columns)
                    .where(columns.c.table_id.in_(chunk))
                    .order_by(columns.c.table_id, columns.c.ordinal)
                ).all()
                by_table: dict[int, list[ColumnInfo]] = {}
                for c in crow:
                    by_table.setdefault(c.table_id, []).append(_column_info(c._mapping))
                for t in trows:
                    out[t.id] = _table_info(t._mapping, by_table.get(t.id, []))
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
        q = select(tables).where(tables.c.source_id == source_id)
        if database is not None:
            q = q.where(tables.c.database == database)
        if schema is not None:
            q = q.where(tables.c.schema == schema)
        if after is not None:
            q = q.where(tuple_(tables.c.database, tables.c.schema, tables.c.name) > tuple_(*after))
        q = q.order_by(tables.c.database, tables.c.schema, tables.c.name).limit(limit)
        with self.read() as conn:
            trows = conn.execute(q).all()
            by_table: dict[int, list[ColumnInfo]] = {}
            if with_columns and trows:
                crow = conn.execute(
                    select(columns)
                    .where(columns.c.table_id.in_([t.id for t in trows]))
                    .order_by(columns.c.table_id, columns.c.ordinal)
                ).all()
                for c in crow:
                    by_table.setdefault(c.table_id, []).append(_column_info(c._mapping))
        return [_table_info(t._mapping, by_table.get(t.id, [])) for t in trows]

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
        """Case-insensitive substring search over table and column names and comments."""
        pat = f"%{q.lower()}%"
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
            cq = (
                select(
                    tables.c.source_id, tables.c.database, tables.c.schema, tables.c.name,
                    columns.c.name, columns.c.data_type, columns.c.comment,
                )
                .select_from(columns.join(tables, tables.c.id == columns.c.table_id))
                .where(
                    or_(func.lower(columns.c.name).like(pat), func.lower(columns.c.comment).like(pat))
                )
            )  # fmt: skip
            if source_ids is not None:
                cq = cq.where(tables.c.source_id.in_(list(source_ids)))
            for c in conn.execute(cq.limit(max(0, limit - len(hits)))):
                hits.append({"type": "column", "source_id": c[0], "database": c[1], "schema": c[2],
                             "table": c[3], "column": c[4], "data_type": c[5], "comment": c[6]})  # fmt: skip
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
