"""JobManager: fans a bulk discovery out to the owner shards and tracks its progress.

Plain class; the owners are reached through an injected :class:`OwnerDirectory` so the fan-out
logic is testable without Ray. Progress is kept in memory for cheap polling and written to the
store in batches (job + items) so a job survives a restart of the caller.

A discovery that finishes elsewhere (an edge source: the owner returns its run ``running`` as
soon as the command is queued) is an item ``running`` until its run is finished in the store,
i.e. until the gateway applied the edge's result, which may be long after if the site is
offline. One poller per manager reads those runs from the store (the store is what every
gateway writes, so this holds across gateway restarts and replicas) and finishes the items with
the run's real outcome; after ``edge.job_wait_s`` the item fails with the reason and the run
stays open, so a late result still lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from datawave.datasource.actors.payload import mask_store_url
from datawave.datasource.config import DatawaveSettings
from datawave.datasource.errors import DatawaveError, NotFound
from datawave.datasource.models import (
    JobItem,
    JobStatus,
    JobView,
    RunStatus,
    RunSummary,
    SourceSelector,
)
from datawave.datasource.store import MetadataStore

__all__ = ["JobManager", "OwnerDirectory", "resolve_selector"]

log = logging.getLogger(__name__)

#: The poll period for runs finishing elsewhere grows with their number, up to this.
POLL_MAX_S = 5.0


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
        *,
        poll_s: float = 0.5,
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
        self.poll_s = poll_s
        self._awaited: dict[str, asyncio.Future[RunSummary]] = {}
        self._poller: asyncio.Task[None] | None = None

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

        written = asyncio.Lock()  # batches land in order: an item's last state wins

        async def flush(force: bool = False) -> None:
            nonlocal last_flush
            if pending and (force or time.monotonic() - last_flush > 0.5 or len(pending) >= 200):
                batch = list(pending)
                pending.clear()
                last_flush = time.monotonic()
                async with written:
                    await asyncio.to_thread(self.store.update_job_items, job_id, batch)

        settled = asyncio.Event()

        async def flush_idle() -> None:  # items that wait (on an edge) show up within a second
            while not settled.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(settled.wait(), timeout=0.5)
                await flush()

        waiting: dict[str, str] = {}  # source id -> run id, while its result is elsewhere

        async def one(source_id: str, shard: int) -> None:
            try:
                async with sem:
                    run = await self.owners.call(shard, "discover", source_id, job_id)
                if run.status is RunStatus.RUNNING:  # queued on an edge: wait outside the limit
                    waiting[source_id] = run.run_id
                    pending.append(JobItem(source_id=source_id, status="running",
                                           run_id=run.run_id))  # fmt: skip
                    await flush()
                    item = await self._edge_result(source_id, run)
                    waiting.pop(source_id, None)
                else:
                    item = _item(source_id, run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                waiting.pop(source_id, None)
                cause = getattr(exc, "cause", None) or exc
                item = JobItem(source_id=source_id, status="failed", error=str(cause)[:2000])
            if item.status == "succeeded":
                view.done += 1
            else:
                view.failed += 1
            pending.append(item)
            await flush()

        status = JobStatus.SUCCEEDED
        idle = asyncio.get_running_loop().create_task(flush_idle())
        try:
            await asyncio.gather(*(one(s, sh) for s, sh in targets))
            if view.failed:
                status = JobStatus.FAILED
        except asyncio.CancelledError:
            status = JobStatus.CANCELLED
            pending.extend(
                JobItem(source_id=sid, status="cancelled", run_id=rid,
                        error="job cancelled; the run finishes when its edge delivers")
                for sid, rid in waiting.items()
            )  # fmt: skip
        finally:
            settled.set()
            await asyncio.gather(idle, return_exceptions=True)
            await flush(force=True)
            await asyncio.to_thread(self.store.finish_job, job_id, status)
            view.status = status
            self._done[job_id].set()

    async def _edge_result(self, source_id: str, run: RunSummary) -> JobItem:
        """The item of a run that finishes elsewhere, once the store has its outcome."""
        wait_s = self.settings.edge.job_wait_s
        fut = self._awaited.get(run.run_id)
        if fut is None:
            fut = self._awaited[run.run_id] = asyncio.get_running_loop().create_future()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_runs())
        try:
            done = await asyncio.wait_for(asyncio.shield(fut), timeout=wait_s)
        except TimeoutError:
            return JobItem(source_id=source_id, status="failed", run_id=run.run_id,
                           error=f"no result from the edge within {wait_s:g}s (edge.job_wait_s); "
                                 "the run stays open and finishes if the edge delivers")  # fmt: skip
        finally:
            if self._awaited.get(run.run_id) is fut:
                del self._awaited[run.run_id]
        return _item(source_id, done)

    async def _poll_runs(self) -> None:
        """Resolve the awaited runs that the store shows finished; ends when none is left."""
        while self._awaited:
            delay = min(POLL_MAX_S, max(self.poll_s, 0.002 * len(self._awaited)))
            await asyncio.sleep(delay)
            ids = [rid for rid, fut in self._awaited.items() if not fut.done()]
            try:
                finished = await asyncio.to_thread(self._finished_runs, ids)
            except Exception as exc:  # the store is back soon: keep waiting
                log.warning("job manager: reading %d edge runs failed: %s", len(ids), exc)
                continue
            for run in finished:
                fut = self._awaited.get(run.run_id)
                if fut is not None and not fut.done():
                    fut.set_result(run)

    def _finished_runs(self, run_ids: list[str]) -> list[RunSummary]:
        found = self.store.get_runs(run_ids)
        out = []
        for rid in run_ids:
            run = found.get(rid)
            if run is None:  # purged with its source: nothing will ever finish it
                run = RunSummary(run_id=rid, source_id="", status=RunStatus.FAILED,
                                 started_at=datetime.now(UTC), errors=["run deleted"])  # fmt: skip
            if run.status is not RunStatus.RUNNING:
                out.append(run)
        return out

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


def _item(source_id: str, run: RunSummary) -> JobItem:
    ok = run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL)
    return JobItem(source_id=source_id, status="succeeded" if ok else "failed",
                   run_id=run.run_id, error="; ".join(run.errors) or None)  # fmt: skip
