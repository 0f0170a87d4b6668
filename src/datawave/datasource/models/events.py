"""Events every layer emits (discovery progress, drift, health, jobs) in one shape.

The same event shape goes to the WebSocket stream, NATS subjects and the edge outbox, so a
consumer never needs to know whether the work ran in the core or on an edge.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field

__all__ = ["Event", "EventSink"]


class Event(BaseModel):
    type: str = Field(
        description="e.g. discovery.started, discovery.finished, drift, health.changed"
    )
    source_id: str | None = None
    run_id: str | None = None
    job_id: str | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    data: dict[str, Any] = Field(default_factory=dict)


class EventSink(Protocol):
    def __call__(self, event: Event) -> None: ...
