"""Typed records for discovered metadata (cf. SQLAlchemy's ``ReflectedColumn``).

Connectors produce these; engines fingerprint and diff them; the store persists them. They are
frozen so a record can be hashed, cached and shipped (msgpack via ``model_dump``) unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "ColumnInfo",
    "DatabaseInfo",
    "DiscoveryResult",
    "ForeignKeyInfo",
    "IndexInfo",
    "KeyInfo",
    "SchemaInfo",
    "TableInfo",
    "TableKind",
    "columns_json",
    "qualified_name",
]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableKind(StrEnum):
    TABLE = "table"
    VIEW = "view"
    MATERIALIZED_VIEW = "materialized_view"
    PARTITIONED_TABLE = "partitioned_table"
    PARTITION = "partition"
    FOREIGN_TABLE = "foreign_table"
    FILE = "file"


class ColumnInfo(_Record):
    """One column. ``data_type`` is the source's own spelling (``character varying(40)``)."""

    name: str
    ordinal: int = Field(description="1-based position in the table")
    data_type: str
    nullable: bool = True
    default: str | None = None
    comment: str | None = None
    generated: str | None = Field(None, description="Generation expression of a generated column")
    identity: bool = False
    enum_values: tuple[str, ...] | None = None
    is_array: bool = False


class KeyInfo(_Record):
    """A primary key or unique constraint."""

    name: str | None = None
    columns: tuple[str, ...]


class ForeignKeyInfo(_Record):
    name: str | None = None
    columns: tuple[str, ...]
    ref_database: str | None = None
    ref_schema: str | None = None
    ref_table: str
    ref_columns: tuple[str, ...]
    on_update: str | None = None
    on_delete: str | None = None


class IndexInfo(_Record):
    """An index; ``columns`` holds column names or, for expression indexes, the expression."""

    name: str
    columns: tuple[str, ...]
    unique: bool = False
    primary: bool = False
    predicate: str | None = Field(None, description="WHERE clause of a partial index")
    method: str | None = None
    definition: str | None = None


class DatabaseInfo(_Record):
    name: str
    comment: str | None = None
    size_bytes: int | None = None
    properties: dict[str, str] = Field(default_factory=dict)


class SchemaInfo(_Record):
    database: str
    name: str
    comment: str | None = None


class TableInfo(_Record):
    """A table-like object with everything we know about its structure.

    ``row_estimate`` and ``size_bytes`` are statistics: they are stored and shown but are not
    part of the fingerprint, so a growing table is not "drift".
    """

    database: str
    schema_name: str = Field(alias="schema")
    name: str
    kind: TableKind = TableKind.TABLE
    comment: str | None = None
    columns: tuple[ColumnInfo, ...] = ()
    primary_key: KeyInfo | None = None
    unique_constraints: tuple[KeyInfo, ...] = ()
    foreign_keys: tuple[ForeignKeyInfo, ...] = ()
    indexes: tuple[IndexInfo, ...] = ()
    parent: str | None = Field(None, description="'schema.table' of the partitioned parent")
    partition_key: str | None = None
    partition_bound: str | None = None
    definition: str | None = Field(None, description="SQL of a view or materialized view")
    row_estimate: int | None = None
    size_bytes: int | None = None
    properties: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @property
    def schema_(self) -> str:
        return self.schema_name

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.database, self.schema_name, self.name)

    @property
    def qualified_name(self) -> str:
        return qualified_name(self.database, self.schema_name, self.name)


def _quoted(part: str) -> str:
    # ``isalnum`` of the whole string is "every character is a letter or digit"; mapping ``_``
    # to a letter first gives "letters, digits and underscores" in one C call.
    if part.replace("_", "a").isalnum():
        return part
    return '"' + part.replace('"', '""') + '"'


def qualified_name(database: str, schema: str, name: str) -> str:
    """``db.schema.table`` with parts quoted when they hold dots, quotes or spaces."""
    # The common case in one C call: three non-empty parts of letters, digits and underscores
    # (no separator between them, so a dot or a space anywhere fails the test).
    if database and schema and name and (database + schema + name).replace("_", "a").isalnum():
        return f"{database}.{schema}.{name}"
    return f"{_quoted(database)}.{_quoted(schema)}.{_quoted(name)}"


class DiscoveryResult(_Record):
    """What one discovery run saw, plus which listings are complete.

    Deletion happens only on positive evidence: the engine removes a stored object only when
    the listing of its parent is marked complete here and the object is absent from it.
    ``databases_complete`` covers the list of databases; ``complete_databases`` names the
    databases whose schema listing succeeded; ``complete_schemas`` the (database, schema)
    pairs whose table listing succeeded.

    A rediscovery may skip building records for tables that did not change: given the stored
    signatures (``Connector.discover(known=...)``), a connector lists such tables in
    ``unchanged`` (with their fresh statistics) instead of ``tables``. They count as listed.
    """

    databases: tuple[DatabaseInfo, ...] = ()
    schemas: tuple[SchemaInfo, ...] = ()
    tables: tuple[TableInfo, ...] = ()
    databases_complete: bool = False
    complete_databases: frozenset[str] = frozenset()
    complete_schemas: frozenset[tuple[str, str]] = frozenset()
    queries: int = 0
    queries_per_database: dict[str, int] = Field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    signatures: dict[str, str] = Field(
        default_factory=dict,
        description="Qualified table name -> structural signature of the catalog rows the "
        "table was built from, for the tables in ``tables`` (connectors that compute them)",
    )
    unchanged: dict[str, tuple[int | None, int | None]] = Field(
        default_factory=dict,
        description="Qualified table name -> fresh (row_estimate, size_bytes) of tables whose "
        "signature matched the one the caller passed as ``known``: present, not rebuilt",
    )

    @property
    def complete(self) -> bool:
        return self.databases_complete and not self.failures


_COLUMNS: TypeAdapter[tuple[ColumnInfo, ...]] = TypeAdapter(tuple[ColumnInfo, ...])
#: The serializer itself: one call per table on a first discovery, without the adapter's wrapper.
_COLUMNS_TO_JSON = _COLUMNS.serializer.to_json


def columns_json(columns: Sequence[ColumnInfo]) -> bytes:
    """A table's columns as one compact JSON array, fields at their default left out.

    Canonical for equal columns (fields in declaration order), so the store keeps it as the
    table's ``column_doc`` and the fingerprint hashes the very same bytes: one serialization
    per table serves both.
    """
    return _COLUMNS_TO_JSON(tuple(columns), exclude_defaults=True)
