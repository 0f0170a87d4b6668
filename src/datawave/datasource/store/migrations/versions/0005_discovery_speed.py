"""discovery speed: per-table catalog signatures, columns packed into one document per table

Adds ``tables.signature`` (the connector's signature of the catalog rows a record was built
from; NULL until the next discovery signs it) and ``tables.column_doc`` (the table's columns as
one JSON array, in ordinal order), moves every ``columns`` row into its table's document, and
drops ``columns``. The downgrade unpacks the documents into ``columns`` rows again.

The JSON written here is what ``TypeAdapter(tuple[ColumnInfo, ...])`` reads: one object per
column with ``ColumnInfo``'s field names; fields at their default value are left out, as the
store itself writes them.

Revision ID: 0005_discovery
Revises: 0004
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005_discovery"
down_revision = "0004"
branch_labels = None
depends_on = None

_BATCH = 500

# Snapshots of the two tables as this migration sees them (not the application's tables.py).
_tables = sa.table(
    "tables",
    sa.column("id", sa.BigInteger()),
    sa.column("source_id", sa.String()),
    sa.column("primary_key", sa.JSON()),
    sa.column("column_doc", sa.Text()),
)
_columns = sa.table(
    "columns",
    sa.column("table_id", sa.BigInteger()),
    sa.column("ordinal", sa.Integer()),
    sa.column("source_id", sa.String()),
    sa.column("name", sa.String()),
    sa.column("data_type", sa.Text()),
    sa.column("nullable", sa.Boolean()),
    sa.column("default", sa.Text()),
    sa.column("comment", sa.Text()),
    sa.column("generated", sa.Text()),
    sa.column("identity", sa.Boolean()),
    sa.column("enum_values", sa.JSON()),
    sa.column("is_array", sa.Boolean()),
    sa.column("is_primary_key", sa.Boolean()),
)
#: ``ColumnInfo`` fields with a default, and the default (left out of documents).
_DEFAULTS: dict[str, Any] = {
    "nullable": True,
    "default": None,
    "comment": None,
    "generated": None,
    "identity": False,
    "enum_values": None,
    "is_array": False,
}


def _doc(rows: list[Any]) -> str:
    out = []
    for r in rows:
        col: dict[str, Any] = {"name": r.name, "ordinal": r.ordinal, "data_type": r.data_type}
        for name, default in _DEFAULTS.items():
            value = getattr(r, name)
            if isinstance(value, str) and name == "enum_values":
                value = json.loads(value)
            if name in ("nullable", "identity", "is_array"):
                value = bool(value)
            if value != default:
                col[name] = value
        out.append(col)
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def _by_table(conn: sa.Connection) -> Iterator[tuple[int, list[Any]]]:
    rows = conn.execute(sa.select(_columns).order_by(_columns.c.table_id, _columns.c.ordinal))
    current: int | None = None
    bucket: list[Any] = []
    for r in rows:
        if r.table_id != current:
            if current is not None:
                yield current, bucket
            current, bucket = r.table_id, []
        bucket.append(r)
    if current is not None:
        yield current, bucket


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both backends (no SQLite table rebuild while ``columns``,
    # which cascades from ``tables``, still holds the data).
    op.add_column("tables", sa.Column("signature", sa.String(length=32), nullable=True))
    op.add_column("tables", sa.Column("column_doc", sa.Text(), nullable=True))

    conn = op.get_bind()
    update = (
        sa.update(_tables)
        .where(_tables.c.id == sa.bindparam("b_id"))
        .values(column_doc=sa.bindparam("b_doc"))
    )
    pending: list[dict[str, Any]] = []
    for table_id, rows in list(_by_table(conn)):  # read all before writing on the connection
        pending.append({"b_id": table_id, "b_doc": _doc(rows)})
        if len(pending) >= _BATCH:
            conn.execute(update, pending)
            pending = []
    if pending:
        conn.execute(update, pending)
    # Tables without a single column row (none are written that way, but be exact).
    conn.execute(sa.update(_tables).where(_tables.c.column_doc.is_(None)).values(column_doc="[]"))
    op.drop_table("columns")


def downgrade() -> None:
    conn = op.get_bind()
    docs = conn.execute(
        sa.select(_tables.c.id, _tables.c.source_id, _tables.c.primary_key, _tables.c.column_doc)
    ).all()
    # First reshape ``tables`` (SQLite rebuilds it), then create and fill ``columns``: a rebuild
    # with ``columns`` present would cascade-delete its rows.
    with op.batch_alter_table("tables") as batch:
        batch.drop_column("column_doc")
        batch.drop_column("signature")
    op.create_table(
        "columns",
        sa.Column("table_id", sa.BigInteger(), nullable=False),
        sa.Column("ordinal", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("data_type", sa.Text(), nullable=False),
        sa.Column("nullable", sa.Boolean(), nullable=False),
        sa.Column("default", sa.Text(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("generated", sa.Text(), nullable=True),
        sa.Column("identity", sa.Boolean(), nullable=False),
        sa.Column("enum_values", sa.JSON(), nullable=True),
        sa.Column("is_array", sa.Boolean(), nullable=False),
        sa.Column("is_primary_key", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["table_id"], ["tables.id"], name=op.f("fk_columns_table_id_tables"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("table_id", "ordinal", name=op.f("pk_columns")),
        sqlite_with_rowid=False,
    )
    rows: list[dict[str, Any]] = []
    for table_id, source_id, pk, doc in docs:
        if isinstance(pk, str):
            pk = json.loads(pk)
        pk_cols = set(pk["columns"]) if pk else set()
        for col in json.loads(doc or "[]"):
            full = {**_DEFAULTS, **col}
            rows.append(
                {
                    "table_id": table_id,
                    "ordinal": full["ordinal"],
                    "source_id": source_id,
                    "name": full["name"],
                    "data_type": full["data_type"],
                    "nullable": full["nullable"],
                    "default": full["default"],
                    "comment": full["comment"],
                    "generated": full["generated"],
                    "identity": full["identity"],
                    "enum_values": full["enum_values"],
                    "is_array": full["is_array"],
                    "is_primary_key": full["name"] in pk_cols,
                }
            )
            if len(rows) >= 5000:
                conn.execute(sa.insert(_columns), rows)
                rows = []
    if rows:
        conn.execute(sa.insert(_columns), rows)
