"""Edge sources on the session core (Ray owners, gateway actor, job manager, hub) with a real
edge node (`datawave edge join`: leaf server, agent process) and real PostgreSQL:

- an owner's on-demand health check of an edge source runs on the edge (the core cannot even
  open its secrets), the samples reach the store through sync, and with the agent gone the
  check answers ``unknown`` with the reason, promptly;
- a bulk job shows an edge discovery ``running`` until the edge's result is applied at the
  core (the agent is down meanwhile: the command waits), then counts it with its real outcome.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from datawave.datasource.models import HealthState, JobStatus, SourceSelector
from tests.integration.edge.fleet import AgentProcess
from tests.integration.edge.test_core_edge import dw, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@dataclass
class Site:
    name: str
    root: Path
    env: dict[str, str]
    agent_pid: int


@pytest.fixture
def site(core_env: dict[str, str], tmp_path: Path) -> Iterator[Site]:
    """A joined edge site; its agent runs (started by the join)."""
    name = f"h{uuid.uuid4().hex[:6]}"
    token = json.loads(dw(core_env, "edge", "token", "create", "--site", name, "--json").stdout)
    root = tmp_path / "node"
    env = {**core_env, "DATAWAVE_DATA_DIR": str(tmp_path / "edge-home")}
    joined = json.loads(
        dw(env, "edge", "join", token["token"], "--state-dir", str(root), "--json").stdout
    )
    try:
        yield Site(name, root, env, int(joined["agent_pid"]))
    finally:
        dw(env, "edge", "leave", "--state-dir", str(root), check=False)


def stop_agent(pid: int) -> None:
    """Stop the agent the join started (not our child: wait for it to be gone)."""
    os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True

    wait_for(gone, 20, "the agent stopped")


def check_health(client: Any, ids: list[str]) -> dict[str, Any]:
    """The owners' on-demand check, each id sent to its owner shard."""
    by_shard: dict[int, list[str]] = defaultdict(list)
    for sid in ids:
        by_shard[client.get(sid).owner_shard].append(sid)
    out = {}
    for shard, part in by_shard.items():
        for rep in client._call(shard, "check_health", part):
            out[rep.source_id] = rep
    return out


def register(client: Any, pg_db: Any, site: Site) -> tuple[Any, Any, Any]:
    """An edge source that works, one whose server refuses, and a core source."""
    ok = client.register(f"ok-{site.name}", "postgresql", pg_db.config(password="pw-edge"),
                         edge_site=site.name)  # fmt: skip
    bad = client.register(f"bad-{site.name}", "postgresql",
                          pg_db.config(port=1, password="pw-bad", connect_timeout_s=2),
                          edge_site=site.name)  # fmt: skip
    here = client.register(f"core-{site.name}", "postgresql", pg_db.config(password="pw-core"))
    # The edge has the definitions once a test of the good one passes there.
    wait_for(lambda: client.test(ok.id).ok, 60, "source definitions on the edge")
    return ok, bad, here


def test_health_check_of_edge_sources_runs_on_the_edge(client: Any, pg_db: Any, site: Site) -> None:
    ok, bad, here = register(client, pg_db, site)

    reports = check_health(client, [ok.id, bad.id, here.id])
    # The core cannot open the edge sources' secrets: healthy means the edge connected.
    assert reports[ok.id].state is HealthState.HEALTHY, reports[ok.id]
    assert reports[bad.id].state is HealthState.DOWN and reports[bad.id].error
    assert reports[here.id].state is HealthState.HEALTHY, reports[here.id]

    # The edge recorded them too: the samples reach the store through sync, and each opening
    # of a sealed secret is in the audit log as the edge's.
    def synced() -> bool:
        return client.get(ok.id).health == "healthy" and client.get(bad.id).health == "down"

    wait_for(synced, 30, "health samples applied at the core")
    uses = client.store.query_audit(action="credential.use", limit=1000)
    assert {e.source_id for e in uses
            if e.principal == f"edge:{site.name}" and e.detail.get("purpose") == "health"} \
        >= {ok.id, bad.id}  # fmt: skip

    # Offline: an answer, not a hang, saying why.
    stop_agent(site.agent_pid)
    t0 = time.monotonic()
    offline = check_health(client, [ok.id, here.id])
    assert time.monotonic() - t0 < 20
    assert offline[ok.id].state is HealthState.UNKNOWN
    assert "no agent answers (edge offline?)" in (offline[ok.id].error or "")
    assert offline[here.id].state is HealthState.HEALTHY


def test_a_job_counts_edge_discoveries_when_their_results_land(
    client: Any, pg_db: Any, site: Site
) -> None:
    pg_db.execute("CREATE TABLE rigs (id int primary key, depth_m int)")
    ok, bad, here = register(client, pg_db, site)
    stop_agent(site.agent_pid)  # the commands wait at the core while the edge is away

    job = client.discover_many(SourceSelector(ids=[ok.id, bad.id, here.id]))
    wait_for(lambda: job.progress().done == 1, 60, "the core source discovered")
    time.sleep(2)  # time enough for a wrong early count to show
    view = job.result()
    items = {i.source_id: i for i in view.items}
    assert (view.status, view.done, view.failed) == (JobStatus.RUNNING, 1, 0)
    assert items[here.id].status == "succeeded"
    for sid in (ok.id, bad.id):
        assert items[sid].status == "running" and items[sid].run_id, items[sid]

    agent = AgentProcess(site.root).start()  # the edge is back: the commands go out
    try:
        done = job.wait(120)
    finally:
        agent.stop()
    items = {i.source_id: i for i in done.items}
    assert (done.status, done.done, done.failed) == (JobStatus.FAILED, 2, 1), agent.log()
    assert items[ok.id].status == "succeeded"
    assert items[bad.id].status == "failed" and items[bad.id].error
    assert [t.name for t in client.tables(ok.id)] == ["rigs"]
    # The item's run is the edge's, finished with the edge's counters.
    run = client.store.get_run(items[ok.id].run_id)
    assert run.counters.get("shipped_tables") == 1
