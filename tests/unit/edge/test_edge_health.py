"""An owner's on-demand health check sends edge sources to their edge, one call per site, and
probes core sources itself; every id gets one report, in order, even when an edge cannot be
asked. No network, no Ray: the router stands in for the gateway actor (the real path runs in
tests/integration/edge/test_edge_health_jobs.py), the core source is a real SQLite file."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datawave.datasource.actors import gateway as gateway_actor
from datawave.datasource.actors.owner import SourceOwner, open_store
from datawave.datasource.config import load_settings
from datawave.datasource.edge import protocol
from datawave.datasource.edge.agent import EdgeAgent
from datawave.datasource.edge.cache import EdgeCache
from datawave.datasource.edge.sources import SourceBook
from datawave.datasource.errors import DatawaveError, EdgeError
from datawave.datasource.models import HealthReport, HealthState


class SiteRouter:
    """Answers as the gateway does for a reachable edge; site ``gone`` cannot be asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], list[float] | None]] = []

    async def check_health(
        self, site: str, source_ids: list[str], timeouts: list[float] | None = None
    ) -> list[HealthReport]:
        self.calls.append((site, list(source_ids), timeouts))
        if site == "gone":
            raise DatawaveError("the core has no edge gateway")
        return [HealthReport(source_id=s, state=HealthState.HEALTHY, latency_ms=2.0,
                             error=f"checked on {site}") for s in source_ids]  # fmt: skip


@pytest.fixture
async def owner(tmp_path: Path) -> AsyncIterator[SourceOwner]:
    settings = load_settings(data_dir=tmp_path, owners={"shards": 1})
    open_store(settings, migrate=True).close()
    o = SourceOwner(0, settings)
    yield o
    await o.close()


async def _add(owner: SourceOwner, name: str, path: Path, site: str | None = None) -> str:
    spec = {"name": name, "type": "sqlite", "config": {"path": str(path)}, "edge_site": site}
    return (await owner.register(spec, str(uuid.uuid4()))).id


async def test_edge_sources_are_checked_on_their_site(owner: SourceOwner, tmp_path: Path) -> None:
    db = tmp_path / "core.sqlite"
    sqlite3.connect(db).close()
    core = await _add(owner, "core-lite", db)
    a1 = await _add(owner, "a1", tmp_path / "nowhere-a1.sqlite", "A")
    b = await _add(owner, "b", tmp_path / "nowhere-b.sqlite", "B")
    a2 = await _add(owner, "a2", tmp_path / "nowhere-a2.sqlite", "A")
    gone = await _add(owner, "g", tmp_path / "nowhere-g.sqlite", "gone")
    router = SiteRouter()
    owner.edge_router = router

    ids = [core, a1, b, gone, a2]
    reports = await owner.check_health(ids, [5.0, 7.0, 8.0, 9.0, 6.0])

    assert [r.source_id for r in reports] == ids
    # One call per site, with the site's ids and their timeouts; the core source stays here.
    assert sorted(router.calls) == [
        ("A", [a1, a2], [7.0, 6.0]), ("B", [b], [8.0]), ("gone", [gone], [9.0])
    ]  # fmt: skip
    by_id = {r.source_id: r for r in reports}
    assert by_id[core].state is HealthState.HEALTHY and by_id[core].error is None
    assert by_id[a1].error == by_id[a2].error == "checked on A"
    assert by_id[b].error == "checked on B"
    # An edge that cannot be asked: unknown, saying why (never probed from the core).
    assert by_id[gone].state is HealthState.UNKNOWN
    assert by_id[gone].error == "runs on edge site gone: the core has no edge gateway"


async def test_without_a_router_edge_sources_are_unknown(
    owner: SourceOwner, tmp_path: Path
) -> None:
    edge = await _add(owner, "e", tmp_path / "e.sqlite", "A")
    (report,) = await owner.check_health([edge])
    assert report.state is HealthState.UNKNOWN
    assert report.error == "runs on edge site A: no edge gateway in this process"


async def test_the_agent_checks_the_ids_it_is_asked_and_queues_the_samples(tmp_path: Path) -> None:
    db = tmp_path / "plant.sqlite"
    sqlite3.connect(db).close()
    book = SourceBook(tmp_path / "sources.json")
    book.replace([{"id": s, "name": s, "type": "sqlite", "config": {"path": str(db)}}
                  for s in ("s1", "s2")])  # fmt: skip
    with EdgeCache(tmp_path / "cache", node="n1") as cache:
        agent = EdgeAgent("A", "nats://127.0.0.1:1", cache, book)  # never started: no network

        reports = await agent.check_health(["s1", "ghost"], timeouts=[5.0, 5.0])
        assert [(r.source_id, r.state) for r in reports] == [
            ("s1", HealthState.HEALTHY), ("ghost", HealthState.UNKNOWN)
        ]  # fmt: skip
        assert reports[1].error == "source ghost is not on edge site A"
        # Only real samples go to the core (through the outbox).
        queued = [(e.record["kind"], e.record["source_id"]) for e in cache.outbox_read(0, 10)]
        assert queued == [("health", "s1")]

        # What the gateway's command gets: reports as plain data, in the order asked.
        answer = await agent._run_command("check_health", {"source_ids": ["s2", "s1"]})
        assert [(a["source_id"], a["state"]) for a in answer] == [("s2", "healthy"),
                                                                  ("s1", "healthy")]  # fmt: skip
        with pytest.raises(EdgeError, match="one timeout per source id"):
            await agent.check_health(["s1"], timeouts=[1.0, 2.0])
        with pytest.raises(EdgeError, match="must be lists"):
            await agent._run_command("check_health", {"source_ids": "s1"})


def test_the_routers_limits_mirror_the_agents() -> None:
    """actors/ cannot import edge/: the router's copy of the limits must not drift."""
    assert gateway_actor.HEALTH_TIMEOUT_S == protocol.HEALTH_TIMEOUT_S
    assert gateway_actor.HEALTH_CONCURRENCY == protocol.HEALTH_CONCURRENCY
