"""Data source definitions as registered and as stored."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["SourceRecord", "SourceSelector", "SourceSpec"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")


class SourceSpec(BaseModel):
    """What a user submits to register a source. ``config`` is validated by the connector."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique, human-chosen name (letters, digits, _ . -)")
    type: str = Field(description="Connector type, e.g. postgresql, mysql, sqlite, files")
    config: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    collection: str | None = Field(None, description="Collection path, e.g. finance/emea")
    edge_site: str | None = Field(None, description="Edge site that owns the source, if any")
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                "must be 1-128 letters, digits, '_', '.' or '-', starting alphanumeric"
            )
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} is not a valid label name")
        return v


class SourceRecord(BaseModel):
    """A registered source as stored. ``config`` never holds secrets (see ``secret_fields``)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    type: str
    config: dict[str, Any]
    secret_fields: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    collection: str | None = None
    edge_site: str | None = None
    description: str | None = None
    owner_shard: int = 0
    version: int = 1
    health: str = "unknown"
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    last_discovered_at: datetime | None = None


class SourceSelector(BaseModel):
    """Chooses sources for bulk operations; all given criteria must match."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = None
    names: list[str] | None = None
    type: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    collection: str | None = Field(None, description="Matches this collection and its children")
    edge_site: str | None = None
    all: bool = False
