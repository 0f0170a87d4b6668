"""A "full" edge agent: ``datawave edge run --full`` starts a Ray of its own next to the agent
(token auth with a token in the node directory, loopback only, no dashboard) and runs each
discovery there as a task; the result lands in the core's store as a light agent's does, and
the Ray stops with the agent.

The agent is the real CLI in a child process, against the real hub, leaf and PostgreSQL.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from datawave.datasource.models import RunStatus
from tests.integration.edge.fleet import (  # noqa: F401  (fixtures: core, agents)
    AgentProcess,
    CoreSide,
    agent_processes,
    core_side,
    join_site,
    node_id,
    until,
)

pytestmark = pytest.mark.timeout(120)


def _children(pid: int) -> dict[int, str]:
    """Descendants of ``pid``: {pid: command name}, from /proc."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        parents[int(entry.name)] = (int(raw[raw.rindex(")") + 2 :].split()[1]), name)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie we started is gone for our purpose
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


class FullAgent(AgentProcess):
    """``datawave edge run --full`` as a child process, in a site's environment: nothing of
    the test run's Ray (address, token) leaks into it."""

    def start(self) -> FullAgent:
        cmd = [sys.executable, "-m", "datawave.datasource.cli.main", "edge", "run", "--full",
               "--state-dir", str(self.root), "--health-interval", "0"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**env, "DATAWAVE_LOG_LEVEL": "INFO"})  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


async def test_full_agent_discovers_on_its_own_ray(  # type: ignore[no-untyped-def]
    core: CoreSide, tmp_path: Path, agents: list[AgentProcess], pg_db
) -> None:
    pg_db.execute("CREATE TABLE turbines (id int primary key, rated_kw int)")
    root = tmp_path / "edgeF"
    await join_site(core, "F", root)
    src = core.add_source("pg-full", "postgresql", pg_db.config(password="pw-full"), "F")

    agent = FullAgent(root).start()
    agents.append(agent)

    def agent_log() -> str:
        return agent.log()

    ray_pids: dict[int, str] = {}
    try:
        digest = await core.gateway._site_digest("F")
        node = node_id(root)
        await until(lambda: (n := core.store.get_edge_node(node)) and n.sources_digest == digest,
                    60, "the full agent up with the source definitions")  # fmt: skip

        # Its own Ray: GCS and raylet are the agent's children, with a private token file.
        ray_pids = _children(agent.pid)
        assert {"gcs_server", "raylet"} <= set(ray_pids.values()), (ray_pids, agent_log())
        token = root / "ray_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
        assert "discoveries run on a local Ray (127.0.0.1, token auth)" in agent_log()

        run = await core.gateway.discover("F", src.id)
        assert run.status is RunStatus.RUNNING
        await until(lambda: core.store.get_run(run.run_id).status is not RunStatus.RUNNING,
                    60, "the discovery's result at the core")  # fmt: skip
        done = core.store.get_run(run.run_id)
        assert done.status is RunStatus.SUCCEEDED, (done.errors, agent_log())
        assert [t.name for t in core.store.list_tables(src.id)] == ["turbines"]
        assert done.counters.get("shipped_tables") == 1
        assert "postgresql discovery ran as Ray task" in agent_log()
    finally:
        agent.stop()
    assert agent.proc is not None and agent.proc.returncode == 0, agent_log()
    # The local Ray stopped with the agent.
    await until(lambda: not any(_alive(p) for p in ray_pids), 20, "the agent's Ray stopped")
