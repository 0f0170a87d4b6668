"""A bulk job counts an edge discovery when its result is applied, not when it is queued.

No network, no Ray: the owner directory answers as an edge source's owner does (the run is
recorded ``running`` and the command queued), and the test finishes runs in the real SQLite
store the way the gateway does when the edge's result arrives.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from datawave.datasource.actors.jobs import JobManager
from datawave.datasource.config import load_settings
from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.engines import SourceService
from datawave.datasource.models import JobStatus, JobView, RunStatus, RunSummary, SourceSpec
from datawave.datasource.store import MetadataStore


class EdgeOwners:
    """Owners whose sources all live on edge site ``A``: ``discover`` returns at once with the
    run ``running`` (the gateway queued the command); the result comes later, or never."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.runs: dict[str, str] = {}  # source id -> run id

    async def call(self, shard: int, method: str, *args: Any) -> RunSummary:
        assert method == "discover"
        source_id, job_id = args
        run = self.store.start_run(str(uuid.uuid4()), source_id, job_id=job_id, origin="edge:A")
        self.runs[source_id] = run.run_id
        return run


async def until(check: Callable[[], Any], what: str, rounds: int = 2000) -> Any:
    for _ in range(rounds):
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"{what} never happened")


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[MetadataStore, EdgeOwners, list[str]]]:
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'core.db'}")
    svc = SourceService(store, ConnectorRegistry(), shards=1)
    ids = [
        svc.register(
            SourceSpec(name=f"plant-{i}", type="sqlite", config={"path": "/x.db"}, edge_site="A")
        ).id
        for i in range(2)
    ]
    yield store, EdgeOwners(store), ids
    store.close()


def manager(tmp_path: Path, owners: EdgeOwners, store: MetadataStore, wait_s: float) -> JobManager:
    settings = load_settings(data_dir=tmp_path, edge={"job_wait_s": wait_s})
    return JobManager(settings, owners, store, poll_s=0.01)


def items(view: JobView) -> dict[str, tuple[str, str | None]]:
    return {i.source_id: (i.status, i.error) for i in view.items}


async def test_edge_items_run_until_the_result_is_applied(
    tmp_path: Path, setup: tuple[MetadataStore, EdgeOwners, list[str]]
) -> None:
    store, owners, (ok_id, bad_id) = setup
    jobs = manager(tmp_path, owners, store, wait_s=3600)
    view = await jobs.submit({"ids": [ok_id, bad_id]})

    # Both commands are queued: the items show running (with their runs), nothing is counted.
    async def both_running() -> bool:
        got = await jobs.get(view.id, with_items=True)
        return all(i.status == "running" and i.run_id for i in got.items)

    await until(both_running, "items running")
    now = await jobs.get(view.id)
    assert (now.status, now.done, now.failed) == (JobStatus.RUNNING, 0, 0)
    assert {i.run_id for i in (await jobs.get(view.id, with_items=True)).items} == set(
        owners.runs.values()
    )

    # The gateway applies the edge's results: one succeeded, one failed on the edge.
    store.finish_run(owners.runs[ok_id], RunStatus.SUCCEEDED, counters={"tables_seen": 3})
    await until(lambda: jobs._views[view.id].done == 1, "the first result counted")
    assert (await jobs.get(view.id)).status is JobStatus.RUNNING
    store.finish_run(owners.runs[bad_id], RunStatus.FAILED, errors=["password authentication"])
    done = await jobs.wait(view.id, timeout_s=30)

    assert (done.status, done.done, done.failed) == (JobStatus.FAILED, 1, 1)
    assert items(done) == {
        ok_id: ("succeeded", None),
        bad_id: ("failed", "password authentication"),
    }
    assert not jobs._awaited  # the poller let go of every run


async def test_an_edge_that_never_delivers_fails_the_item_and_keeps_the_run(
    tmp_path: Path, setup: tuple[MetadataStore, EdgeOwners, list[str]]
) -> None:
    store, owners, (ok_id, silent_id) = setup
    jobs = manager(tmp_path, owners, store, wait_s=0.5)
    view = await jobs.submit({"ids": [ok_id, silent_id]})
    await until(lambda: len(owners.runs) == 2, "both commands queued")
    store.finish_run(owners.runs[ok_id], RunStatus.SUCCEEDED)
    done = await jobs.wait(view.id, timeout_s=30)

    assert (done.status, done.done, done.failed) == (JobStatus.FAILED, 1, 1)
    status, error = items(done)[silent_id]
    assert status == "failed" and "no result from the edge within 0.5s" in (error or "")
    # The run stays open: a late result still lands on it.
    assert store.get_run(owners.runs[silent_id]).status is RunStatus.RUNNING


async def test_cancelling_a_job_cancels_its_waiting_items(
    tmp_path: Path, setup: tuple[MetadataStore, EdgeOwners, list[str]]
) -> None:
    store, owners, ids = setup
    jobs = manager(tmp_path, owners, store, wait_s=3600)
    view = await jobs.submit({"ids": ids})
    await until(lambda: len(owners.runs) == 2, "both commands queued")
    cancelled = await jobs.cancel(view.id)

    assert cancelled.status is JobStatus.CANCELLED
    assert {s for s, _ in items(cancelled).values()} == {"cancelled"}
    assert not jobs._awaited
