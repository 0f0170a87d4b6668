"""The change set a discovery run hands to the store: computed by engines, written in one txn."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from datawave.datasource.models import DatabaseInfo, DriftEvent, SchemaInfo, TableInfo

__all__ = ["ChangeSet", "SnapshotRow", "TableRow", "TableState"]


@dataclass(frozen=True, slots=True)
class TableState:
    """What the store knows of a table without loading its columns."""

    id: int
    fingerprint: str
    row_estimate: int | None
    size_bytes: int | None
    signature: str | None = None
    column_count: int = 0
    kind: str | None = None
    first_seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TableRow:
    id: int
    table: TableInfo
    fingerprint: str
    signature: str | None = None
    #: ``columns_json(table.columns)`` when the caller already has it (it fingerprinted them).
    columns: bytes | None = None


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    id: str
    fingerprint: str
    tables: dict[str, str]


@dataclass(slots=True)
class ChangeSet:
    source_id: str
    run_id: str
    now: datetime
    upsert_databases: list[DatabaseInfo] = field(default_factory=list)
    delete_databases: list[str] = field(default_factory=list)
    upsert_schemas: list[SchemaInfo] = field(default_factory=list)
    delete_schemas: list[tuple[str, str]] = field(default_factory=list)
    insert_tables: list[TableRow] = field(default_factory=list)
    replace_tables: list[TableRow] = field(default_factory=list)
    stats_updates: list[tuple[int, int | None, int | None]] = field(default_factory=list)
    #: ``(table id, signature)``: same structure, newly signed (e.g. first run after 0005).
    signature_updates: list[tuple[int, str]] = field(default_factory=list)
    delete_tables: list[int] = field(default_factory=list)
    drift: list[DriftEvent] = field(default_factory=list)
    snapshot: SnapshotRow | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.upsert_databases
            or self.delete_databases
            or self.upsert_schemas
            or self.delete_schemas
            or self.insert_tables
            or self.replace_tables
            or self.stats_updates
            or self.signature_updates
            or self.delete_tables
            or self.drift
            or self.snapshot
        )
