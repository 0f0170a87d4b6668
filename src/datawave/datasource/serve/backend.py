"""The seam between the HTTP app and the runtime it fronts.

The FastAPI app depends only on :class:`Backend`: under Ray Serve it is
:class:`~datawave.datasource.serve.deployment.RayBackend` (owner shards and the job manager
reached by actor name), under plain uvicorn or in unit tests it can be
:class:`~datawave.datasource.serve.local.LocalBackend` (the same plain classes, in process).
Reads of discovered metadata never go through the backend's actors: they come from
``backend.store`` on a worker thread.
"""

from __future__ import annotations

from typing import Any, Protocol

from datawave.datasource.store import MetadataStore

__all__ = ["Backend", "EventFeed"]


class EventFeed(Protocol):
    """Where the API reads events from (the EventHub actor, or a local hub)."""

    async def since(self, seq: int, timeout_s: float = 10.0, limit: int = 1000) -> dict[str, Any]:
        """Events after ``seq``: ``{"seq": last, "events": [...], "gap": bool}``.

        ``seq=-1`` subscribes "from now": it returns the current sequence and no events.
        """
        ...


class Backend(Protocol):
    @property
    def store(self) -> MetadataStore: ...

    @property
    def shards(self) -> int: ...

    @property
    def events(self) -> EventFeed: ...

    async def call_owner(self, shard: int, method: str, *args: Any) -> Any:
        """Call ``method`` on the owner of ``shard``; errors arrive as ``DatawaveError``."""
        ...

    async def call_jobs(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the job manager."""
        ...

    async def ready(self) -> dict[str, Any]:
        """Ping every owner and the job manager; raise ``Unavailable`` when one is missing."""
        ...

    async def close(self) -> None: ...
