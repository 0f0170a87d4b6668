"""Structural fingerprints of tables: equal fingerprints mean nothing to write.

Statistics (row estimates, sizes) are deliberately outside the fingerprint: a table that grows
has not drifted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from operator import attrgetter
from typing import Any

import msgpack

from datawave.datasource.models import TableInfo, columns_json

__all__ = ["FINGERPRINT_VERSION", "fingerprint", "snapshot_fingerprint"]


#: Bumped when the canonical form changes; stored fingerprints of an older version differ from
#: every new one, so each table is rewritten once (without drift events: its structure is diffed
#: field by field, not by fingerprint).
FINGERPRINT_VERSION = 2


_UNIQUE = attrgetter("name", "columns")
_FOREIGN = attrgetter(
    "name", "columns", "ref_database", "ref_schema", "ref_table", "ref_columns", "on_update",
    "on_delete",
)  # fmt: skip
_INDEX = attrgetter("name", "columns", "unique", "primary", "predicate", "method")


def _in_order(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Sorted by name then columns, without sorting the common one-element list."""
    if len(rows) > 1:
        rows.sort(key=lambda r: (r[0] or "", r[1]))
    return rows


def _canonical(t: TableInfo) -> tuple[object, ...]:
    pk = t.primary_key
    return (
        t.kind,  # a StrEnum: msgpack packs it as its str value
        t.comment,
        t.parent,
        t.partition_key,
        t.partition_bound,
        t.definition,
        (pk.name, pk.columns) if pk is not None else None,
        _in_order(list(map(_UNIQUE, t.unique_constraints))),
        _in_order(list(map(_FOREIGN, t.foreign_keys))),
        _in_order(list(map(_INDEX, t.indexes))),
        sorted(t.properties.items()) if t.properties else (),
    )


def fingerprint(table: TableInfo, columns: bytes | None = None) -> str:
    """32 hex chars of BLAKE2b over the table's structure in a canonical form.

    That form is the msgpack of everything but the columns (keys and indexes sorted), followed
    by the columns' canonical JSON (:func:`~datawave.datasource.models.columns_json`; pass it
    as ``columns`` when it is at hand, as the discovery engine does for the store).
    """
    h = hashlib.blake2b(msgpack.packb((FINGERPRINT_VERSION, *_canonical(table))), digest_size=16)
    h.update(columns_json(table.columns) if columns is None else columns)
    return h.hexdigest()


def snapshot_fingerprint(tables: Mapping[str, str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tables):
        h.update(name.encode())
        h.update(b"\x00")
        h.update(tables[name].encode())
    return h.hexdigest()
