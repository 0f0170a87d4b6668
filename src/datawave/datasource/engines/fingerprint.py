"""Structural fingerprints of tables: equal fingerprints mean nothing to write.

Statistics (row estimates, sizes) are deliberately outside the fingerprint: a table that grows
has not drifted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from operator import attrgetter

import msgpack

from datawave.datasource.models import TableInfo

__all__ = ["fingerprint", "snapshot_fingerprint"]


#: A column's structural fields, read in one C call. msgpack encodes tuples and lists alike,
#: so tuples are packed as they are, without copying them into lists.
_COLUMN_FIELDS = attrgetter(
    "name", "ordinal", "data_type", "nullable", "default", "comment", "generated", "identity",
    "enum_values", "is_array",
)  # fmt: skip


def _canonical(t: TableInfo) -> tuple[object, ...]:
    return (
        t.kind.value,
        t.comment,
        t.parent,
        t.partition_key,
        t.partition_bound,
        t.definition,
        list(map(_COLUMN_FIELDS, t.columns)),
        (t.primary_key.name, t.primary_key.columns) if t.primary_key else None,
        sorted((u.name or "", u.columns) for u in t.unique_constraints),
        sorted(
            (
                f.name or "",
                f.columns,
                f.ref_database,
                f.ref_schema,
                f.ref_table,
                f.ref_columns,
                f.on_update,
                f.on_delete,
            )
            for f in t.foreign_keys
        ),
        sorted((i.name, i.columns, i.unique, i.primary, i.predicate, i.method) for i in t.indexes),
        sorted((t.properties or {}).items()),
    )


def fingerprint(table: TableInfo) -> str:
    """32 hex chars of BLAKE2b over a canonical msgpack encoding of the table's structure."""
    return hashlib.blake2b(msgpack.packb(_canonical(table)), digest_size=16).hexdigest()


def snapshot_fingerprint(tables: Mapping[str, str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tables):
        h.update(name.encode())
        h.update(b"\x00")
        h.update(tables[name].encode())
    return h.hexdigest()
