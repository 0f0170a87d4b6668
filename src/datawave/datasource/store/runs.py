"""Discovery runs, connection-test results and bulk jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, true, update

from datawave.datasource.errors import NotFound
from datawave.datasource.models import (
    JobItem,
    JobStatus,
    JobView,
    RunStatus,
    RunSummary,
    TestReport,
)
from datawave.datasource.store.base import StoreBase, aware, chunked, utcnow
from datawave.datasource.store.tables import (
    discovery_runs,
    job_items,
    jobs,
    sources,
    test_results,
)

__all__ = ["RunsMixin"]


def _run(r: Any) -> RunSummary:
    return RunSummary(
        run_id=r.id,
        source_id=r.source_id,
        job_id=r.job_id,
        status=r.status,
        attempt=r.attempt,
        started_at=aware(r.started_at),
        finished_at=aware(r.finished_at),
        duration_ms=r.duration_ms,
        counters=r.counters or {},
        errors=r.errors or [],
        warnings=r.warnings or [],
        drift_events=r.drift_events or 0,
    )


class RunsMixin(StoreBase):
    # -- discovery runs ----------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        source_id: str,
        *,
        job_id: str | None = None,
        attempt: int = 1,
        origin: str = "core",
        started_at: datetime | None = None,
    ) -> RunSummary:
        with self.begin() as conn:
            conn.execute(
                insert(discovery_runs).values(
                    id=run_id, source_id=source_id, job_id=job_id, status=RunStatus.RUNNING.value,
                    attempt=attempt, origin=origin, started_at=started_at or utcnow(),
                )
            )  # fmt: skip
        return self.get_run(run_id)

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        counters: dict[str, int] | None = None,
        errors: Sequence[str] = (),
        warnings: Sequence[str] = (),
        snapshot_id: str | None = None,
        drift_events: int = 0,
        finished_at: datetime | None = None,
    ) -> RunSummary:
        run = self.get_run(run_id)
        end = finished_at or utcnow()
        with self.begin() as conn:
            conn.execute(
                update(discovery_runs)
                .where(discovery_runs.c.id == run_id)
                .values(
                    status=status.value, finished_at=end,
                    duration_ms=round((end - run.started_at).total_seconds() * 1000, 3),
                    counters=counters or {}, errors=list(errors), warnings=list(warnings)[:100],
                    snapshot_id=snapshot_id, drift_events=drift_events,
                )
            )  # fmt: skip
            if status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL):
                conn.execute(
                    update(sources)
                    .where(sources.c.id == run.source_id)
                    .values(last_discovered_at=end)
                )
        return self.get_run(run_id)

    def interrupt_running(
        self, *, shard: int | None = None, origin: str = "core", reason: str
    ) -> int:
        """Mark runs left ``running`` by a dead owner (of ``shard``) as ``interrupted``."""
        q = update(discovery_runs).where(
            discovery_runs.c.status == RunStatus.RUNNING.value, discovery_runs.c.origin == origin
        )
        if shard is not None:
            owned = select(sources.c.id).where(sources.c.owner_shard == shard)
            q = q.where(discovery_runs.c.source_id.in_(owned.scalar_subquery()))
        with self.begin() as conn:
            return int(
                conn.execute(
                    q.values(
                        status=RunStatus.INTERRUPTED.value, finished_at=utcnow(), errors=[reason]
                    )
                ).rowcount
            )

    def get_run(self, run_id: str) -> RunSummary:
        with self.read() as conn:
            r = conn.execute(select(discovery_runs).where(discovery_runs.c.id == run_id)).first()
        if r is None:
            raise NotFound(f"no discovery run {run_id!r}", kind="run")
        return _run(r)

    def get_runs(self, run_ids: Sequence[str]) -> dict[str, RunSummary]:
        """The runs of ``run_ids`` that exist, by id: one statement per 500 ids (a job manager
        waiting on thousands of edge runs reads them all at every poll)."""
        out: dict[str, RunSummary] = {}
        with self.read() as conn:
            for part in chunked(list(dict.fromkeys(run_ids))):
                for r in conn.execute(select(discovery_runs).where(discovery_runs.c.id.in_(part))):
                    out[r.id] = _run(r)
        return out

    def list_runs(
        self, source_id: str, *, job_id: str | None = None, limit: int = 50
    ) -> list[RunSummary]:
        q = (
            select(discovery_runs)
            .where(discovery_runs.c.source_id == source_id)
            .where(discovery_runs.c.job_id == job_id if job_id is not None else true())
            .order_by(discovery_runs.c.started_at.desc())
            .limit(limit)
        )
        with self.read() as conn:
            return [_run(r) for r in conn.execute(q)]

    # -- connection tests --------------------------------------------------------------------
    def record_test(self, source_id: str, report: TestReport) -> None:
        with self.begin() as conn:
            conn.execute(
                insert(test_results).values(
                    source_id=source_id, tested_at=report.tested_at or utcnow(), ok=report.ok,
                    duration_ms=report.duration_ms,
                    steps=[s.model_dump(mode="json") for s in report.steps],
                )
            )  # fmt: skip

    def latest_test(self, source_id: str) -> TestReport | None:
        q = (
            select(test_results)
            .where(test_results.c.source_id == source_id)
            .order_by(test_results.c.id.desc())
            .limit(1)
        )
        with self.read() as conn:
            r = conn.execute(q).first()
        if r is None:
            return None
        return TestReport(
            source_id=source_id, ok=r.ok, duration_ms=r.duration_ms, steps=r.steps,
            tested_at=aware(r.tested_at),
        )  # fmt: skip

    # -- jobs --------------------------------------------------------------------------------
    def create_job(
        self, job_id: str, kind: str, selector: dict[str, Any], source_ids: Sequence[str]
    ) -> JobView:
        with self.begin() as conn:
            conn.execute(
                insert(jobs).values(
                    id=job_id, kind=kind, status=JobStatus.RUNNING.value, selector=selector,
                    total=len(source_ids), done=0, failed=0, created_at=utcnow(),
                )
            )  # fmt: skip
            if source_ids:
                conn.execute(
                    insert(job_items),
                    [{"job_id": job_id, "source_id": s, "status": "pending"} for s in source_ids],
                )
        return self.get_job(job_id, with_items=False)

    def update_job_items(self, job_id: str, updates: Sequence[JobItem]) -> None:
        """Record finished items and refresh the job's counters in one transaction."""
        if not updates:
            return
        with self.begin() as conn:
            for it in updates:
                conn.execute(
                    update(job_items)
                    .where(job_items.c.job_id == job_id, job_items.c.source_id == it.source_id)
                    .values(status=it.status, run_id=it.run_id, error=it.error)
                )
            counts: dict[str, int] = dict(
                conn.execute(
                    select(job_items.c.status, func.count())
                    .where(job_items.c.job_id == job_id)
                    .group_by(job_items.c.status)
                ).all()
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(done=counts.get("succeeded", 0), failed=counts.get("failed", 0))
            )

    def finish_job(self, job_id: str, status: JobStatus) -> None:
        with self.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(status=status.value, finished_at=utcnow())
            )
            if status == JobStatus.CANCELLED:
                conn.execute(
                    update(job_items)
                    .where(job_items.c.job_id == job_id, job_items.c.status == "pending")
                    .values(status="cancelled")
                )

    def get_job(self, job_id: str, *, with_items: bool = True) -> JobView:
        with self.read() as conn:
            j = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if j is None:
                raise NotFound(f"no job {job_id!r}", kind="job")
            items: list[JobItem] = []
            if with_items:
                q = (
                    select(job_items, sources.c.name)
                    .select_from(
                        job_items.outerjoin(sources, sources.c.id == job_items.c.source_id)
                    )
                    .where(job_items.c.job_id == job_id)
                )
                items = [
                    JobItem(source_id=r.source_id, source_name=r.name, status=r.status,
                            run_id=r.run_id, error=r.error)
                    for r in conn.execute(q)
                ]  # fmt: skip
        return JobView(
            id=j.id, kind=j.kind, status=j.status, total=j.total, done=j.done, failed=j.failed,
            created_at=aware(j.created_at), finished_at=aware(j.finished_at),
            selector=j.selector or {}, items=items,
        )  # fmt: skip
