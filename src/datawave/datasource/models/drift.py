"""Typed drift events produced by diffing a run against the last snapshot."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["DriftEvent", "DriftKind"]


class DriftKind(StrEnum):
    TABLE_ADDED = "table_added"
    TABLE_REMOVED = "table_removed"
    TABLE_CHANGED = "table_changed"  # comment, kind, definition, indexes
    COLUMN_ADDED = "column_added"
    COLUMN_REMOVED = "column_removed"
    COLUMN_TYPE_CHANGED = "column_type_changed"
    COLUMN_NULLABILITY_CHANGED = "column_nullability_changed"
    KEY_CHANGED = "key_changed"


class DriftEvent(BaseModel):
    """``breaking`` marks changes that can break a reader: removals, type changes, new NOT NULL."""

    id: int | None = None
    source_id: str
    run_id: str | None = None
    kind: DriftKind
    table: str = Field(description="Qualified name db.schema.table")
    column: str | None = None
    before: Any = None
    after: Any = None
    breaking: bool
    detected_at: datetime | None = None
