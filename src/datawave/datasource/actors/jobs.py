"""JobManager: fans a bulk discovery out to the owner shards and tracks its progress.

Plain class; the owners are reached through an injected :class:`OwnerDirectory` so the fan-out
logic is testable without Ray. Progress is kept in memory for cheap polling and written to the
store in batches (job + items) so a job survives a restart of the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from datawave.datasource.actors.payload import mask_store_url
from datawave.datasource.config import DatawaveSettings
from datawave.datasource.errors import DatawaveError, NotFound
from datawave.datasource.models import JobItem, JobStatus, JobView, RunStatus, SourceSelector
from datawave.datasource.store import MetadataStore

__all__ = ["JobManager", "OwnerDirectory", "resolve_selector"]

log = logging.getLogger(__name__)


class OwnerDirectory(Protocol):
    def call(self, shard: int, method: str, *args: Any) -> Awaitable[Any]: ...


def resolve_selector(store: MetadataStore, selector: SourceSelector) -> list[tuple[str, int]]:
    """(source id, shard) of every live source the selector matches."""
    if not (selector.all or selector.ids or selector.names or selector.type or selector.labels
            or selector.collection or selector.edge_site):  # fmt: skip
        raise DatawaveError("empty selector: name sources or pass all=true", field="selector")
    recs = store.list_sources(
        type=selector.type, labels=selector.labels or None, collection=selector.collection,
        edge_site=selector.edge_site, ids=selector.ids, names=selector.names,
    )  # fmt: skip
    if selector.ids:
        missing = set(selector.ids) - {r.id for r in recs}
        if missing:
            raise NotFound(f"unknown sources: {sorted(missing)}", kind="source")
    if selector.names:
        missing = set(selector.names) - {r.name for r in recs}
        if missing:
            raise NotFound(f"unknown sources: {sorted(missing)}", kind="source")
    return [(r.id, r.owner_shard) for r in recs]


class JobManager:
    def __init__(
        self,
        settings: Mapping[str, Any] | DatawaveSettings,
        owners: OwnerDirectory,
        store: MetadataStore,
    ) -> None:
        self.settings = (
            settings
            if isinstance(settings, DatawaveSettings)
            else DatawaveSettings.model_validate(settings)
        )
        self.owners = owners
        self.store = store
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._views: dict[str, JobView] = {}
        self._done: dict[str, asyncio.Event] = {}

    async def submit(
        self, selector: Mapping[str, Any] | SourceSelector, job_id: str | None = None
    ) -> JobView:
        sel = (
            selector
            if isinstance(selector, SourceSelector)
            else SourceSelector.model_validate(dict(selector))
        )
        job_id = job_id or str(uuid.uuid4())
        if job_id in self._views:  # idempotent re-submit
            return self._views[job_id]
        targets = await asyncio.to_thread(resolve_selector, self.store, sel)
        view = await asyncio.to_thread(
            self.store.create_job, job_id, "discover", sel.model_dump(exclude_none=True),
            [s for s, _ in targets],
        )  # fmt: skip
        self._views[job_id] = view
        self._done[job_id] = asyncio.Event()
        self._tasks[job_id] = asyncio.get_running_loop().create_task(self._run(job_id, targets))
        return view

    async def _run(self, job_id: str, targets: list[tuple[str, int]]) -> None:
        sem = asyncio.Semaphore(self.settings.owners.job_concurrency)
        pending: list[JobItem] = []
        last_flush = time.monotonic()
        view = self._views[job_id]

        async def flush(force: bool = False) -> None:
            nonlocal last_flush
            if pending and (force or time.monotonic() - last_flush > 0.5 or len(pending) >= 200):
                batch = list(pending)
                pending.clear()
                last_flush = time.monotonic()
                await asyncio.to_thread(self.store.update_job_items, job_id, batch)

        async def one(source_id: str, shard: int) -> None:
            async with sem:
                try:
                    run = await self.owners.call(shard, "discover", source_id, job_id)
                    ok = run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL)
                    item = JobItem(source_id=source_id, status="succeeded" if ok else "failed",
                                   run_id=run.run_id, error="; ".join(run.errors) or None)  # fmt: skip
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    cause = getattr(exc, "cause", None) or exc
                    item = JobItem(source_id=source_id, status="failed", error=str(cause)[:2000])
            if item.status == "succeeded":
                view.done += 1
            else:
                view.failed += 1
            pending.append(item)
            await flush()

        status = JobStatus.SUCCEEDED
        try:
            await asyncio.gather(*(one(s, sh) for s, sh in targets))
            if view.failed:
                status = JobStatus.FAILED
        except asyncio.CancelledError:
            status = JobStatus.CANCELLED
        finally:
            await flush(force=True)
            await asyncio.to_thread(self.store.finish_job, job_id, status)
            view.status = status
            self._done[job_id].set()

    async def get(self, job_id: str, with_items: bool = False) -> JobView:
        if with_items or job_id not in self._views:
            return await asyncio.to_thread(self.store.get_job, job_id, with_items=with_items)
        return self._views[job_id].model_copy()

    async def wait(self, job_id: str, timeout_s: float | None = None) -> JobView:
        ev = self._done.get(job_id)
        if ev is not None:
            await asyncio.wait_for(ev.wait(), timeout=timeout_s)
        return await self.get(job_id, with_items=True)

    async def cancel(self, job_id: str) -> JobView:
        task = self._tasks.get(job_id)
        if task is None:
            await self.get(job_id)  # NotFound for unknown ids
        elif not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return await self.get(job_id, with_items=True)

    async def topology(self) -> dict[str, Any]:
        return {
            "shards": self.settings.owners.shards,
            # Masked: this answer reaches any driver; each reader supplies the password itself.
            "store_url": mask_store_url(self.settings.resolved_store_url),
            "namespace": self.settings.ray.namespace,
        }
