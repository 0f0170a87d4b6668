"""Bulk jobs: one job fans a discovery out to many sources."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["JobItem", "JobStatus", "JobView"]


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # finished, some items failed
    CANCELLED = "cancelled"


class JobItem(BaseModel):
    source_id: str
    source_name: str | None = None
    status: str = "pending"
    run_id: str | None = None
    error: str | None = None


class JobView(BaseModel):
    id: str
    kind: str = "discover"
    status: JobStatus
    total: int
    done: int = 0
    failed: int = 0
    created_at: datetime
    finished_at: datetime | None = None
    selector: dict[str, Any] = Field(default_factory=dict)
    items: list[JobItem] = Field(default_factory=list)

    @property
    def progress(self) -> float:
        return 1.0 if self.total == 0 else (self.done + self.failed) / self.total
