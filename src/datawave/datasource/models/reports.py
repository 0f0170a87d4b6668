"""Reports as data: every operation returns one of these, logs are secondary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "HealthReport",
    "HealthState",
    "RunStatus",
    "RunSummary",
    "StepResult",
    "StepStatus",
    "TestReport",
]


class StepStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMEOUT = "timeout"


class StepResult(BaseModel):
    """One named step of a connection test, e.g. ``authenticate`` or ``read_column_catalog``."""

    name: str
    status: StepStatus
    duration_ms: float
    error: str | None = None
    error_code: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class TestReport(BaseModel):
    __test__ = False  # not a pytest class

    source_id: str | None = None
    ok: bool
    duration_ms: float
    steps: list[StepResult]
    tested_at: datetime | None = None

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.status not in (StepStatus.OK,)), None)


class HealthState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"


class HealthReport(BaseModel):
    source_id: str | None = None
    state: HealthState
    latency_ms: float | None = None
    error: str | None = None
    checked_at: datetime | None = None


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


class RunSummary(BaseModel):
    """The outcome of one discovery run, as stored in ``discovery_runs``."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    source_id: str
    job_id: str | None = None
    status: RunStatus
    attempt: int = 1
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: float | None = None
    counters: dict[str, int] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    drift_events: int = 0
