"""Fleet scale: 100 edge nodes join one hub, heartbeat, and show up in the fleet view.

    .venv/bin/python bench/edge_fleet.py [--agents 100] [--per-process 10] [--heartbeat-s 0.25]

Set-up: a hub nats-server, a metadata store (SQLite) and the core's EdgeGateway in this
process. Each node is a real edge: its own site, a one-time token, a leaf nats-server (100 leaf
servers) and a lightweight agent; agents run ``--per-process`` to a worker process (asyncio,
no Ray), so 100 agents are 10 processes.

Measured (the fleet view is ``store.list_edge_nodes()``, what ``datawave edge list`` prints):
- ``join_s``: all tokens minted (one hub reload), all nodes joined (10 joins at a time);
- ``all_visible_s``: from starting the agents until every node is ``up`` with a heartbeat;
- ``link_down_visible_s`` / ``link_up_visible_s``: the leaf servers of one group
  (``per_process`` nodes) are stopped, then restarted; time until all of them show
  ``offline``, then ``up`` again;
- ``agents_stopped_visible_s``: that group's worker process is stopped; time until its nodes
  show ``offline``; ``agents_restarted_visible_s``: a new worker starts them; time from its
  agents being connected until they show ``up`` (``agents_respawn_to_visible_s`` counts from
  spawning the process, Python start-up included).

Every "up" counts only heartbeats received after the change (``last_heartbeat_at``).

The final line is one JSON object. Bar: every node joins and heartbeats, and link changes and
stopped and restarted agents are visible within 2 s of the change. Defaults: heartbeats every
0.25 s, ``offline_after_s`` 1.0 s (four missed heartbeats).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datawave.datasource.edge import HubConfig, NatsServer, TokenIssuer
from datawave.datasource.edge.agent import EdgeAgent
from datawave.datasource.edge.cache import EdgeCache
from datawave.datasource.edge.gateway import EdgeGateway
from datawave.datasource.edge.node import NodeFiles, join, leaf_server, leave, read_node
from datawave.datasource.edge.sources import SourceBook
from datawave.datasource.store import MetadataStore


# Worker: many agents in one process ---------------------------------------------------------------
async def worker(dirs: list[Path], heartbeat_s: float, ready: Path | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agents, caches = [], []
    for d in dirs:
        node = read_node(d)
        cache = EdgeCache(NodeFiles(d).cache_dir, node=node["node"])
        caches.append(cache)
        agents.append(EdgeAgent(node["site"], f"nats://127.0.0.1:{node['client_port']}", cache,
                                SourceBook(NodeFiles(d).sources_file), heartbeat_s=heartbeat_s))  # fmt: skip
    await asyncio.gather(*(a.start() for a in agents))
    if ready is not None:
        await asyncio.to_thread(ready.write_text, str(time.time()))
    await stop.wait()
    await asyncio.gather(*(a.stop() for a in agents))
    for c in caches:
        c.close()


def spawn_worker(
    dirs: list[Path], heartbeat_s: float, log: Path, ready: Path | None = None
) -> subprocess.Popen[bytes]:
    extra = ["--ready", str(ready)] if ready is not None else []
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, __file__, "worker", "--heartbeat-s", str(heartbeat_s), *extra,
             *[str(d) for d in dirs]],
            stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "DATAWAVE_LOG_LEVEL": "WARNING"},
        )  # fmt: skip


def stop_pid(pid_file: Path) -> None:
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        try:
            os.waitpid(pid, os.WNOHANG)
            os.kill(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            return
        time.sleep(0.05)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)


# Driver -------------------------------------------------------------------------------------------
async def until(pred: Any, within: float, what: str) -> float:
    t0 = time.monotonic()
    while not await asyncio.to_thread(pred):
        if time.monotonic() - t0 > within:
            raise SystemExit(f"bench: {what} not reached within {within:g}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dw-edge-fleet-"))
    store = MetadataStore.open(f"sqlite:///{tmp / 'core.db'}")
    hub = NatsServer(
        HubConfig(store_dir=tmp / "hub-js", core_password=secrets.token_urlsafe(18)), tmp / "hub"
    )
    await hub.start()
    issuer = TokenIssuer(tmp / "join.key", tmp / "joins.json")
    user, password = hub.core_credentials
    gateway = EdgeGateway(store, issuer, hub.client_url, user=user, password=password,
                          offline_after_s=args.offline_after_s)  # fmt: skip
    await gateway.start()
    dirs = [tmp / f"node{i:03d}" for i in range(args.agents)]
    workers: list[subprocess.Popen[bytes]] = []
    joined: list[Path] = []
    try:
        t0 = time.monotonic()
        tokens = [issuer.create(f"f{i:03d}", 900, hub.leaf_url)[0] for i in range(args.agents)]
        await hub.update_edges(issuer.hub_users())
        gate = asyncio.Semaphore(10)

        async def one(token: str, d: Path) -> None:
            async with gate:
                await join(token, d, timeout_s=120)
                joined.append(d)

        await asyncio.gather(*(one(t, d) for t, d in zip(tokens, dirs, strict=True)))
        join_s = time.monotonic() - t0

        groups = [dirs[i : i + args.per_process] for i in range(0, len(dirs), args.per_process)]
        started = datetime.now(UTC)
        t1 = time.monotonic()
        workers = [
            spawn_worker(g, args.heartbeat_s, tmp / f"worker{i}.log") for i, g in enumerate(groups)
        ]

        def all_up() -> bool:
            nodes = store.list_edge_nodes()
            return len(nodes) == args.agents and all(
                n.link_state == "up" and n.last_heartbeat_at and n.last_heartbeat_at > started
                for n in nodes
            )

        await until(all_up, 120, "every node up")
        all_visible_s = time.monotonic() - t1

        victims = {read_node(d)["node"] for d in groups[0]}

        def shown(state: str, heard_after: datetime | None = None) -> Any:
            def check() -> bool:
                nodes = [n for n in store.list_edge_nodes() if n.node in victims]
                return len(nodes) == len(victims) and all(
                    n.link_state == state
                    and (heard_after is None or (n.last_heartbeat_at or started) > heard_after)
                    for n in nodes
                )

            return check

        # Change 1: the leaf links of one group go down (leaf servers stopped), then come back.
        leaves = [leaf_server(d) for d in groups[0]]
        for d in groups[0]:
            stop_pid(NodeFiles(d).leaf_pid)
        link_down_s = await until(shown("offline"), 30, "cut links shown offline")
        restarted_at = datetime.now(UTC)
        await asyncio.gather(*(leaf.start() for leaf in leaves))
        t2 = time.monotonic()
        await until(shown("up", restarted_at), 30, "restored links shown up")
        link_up_s = time.monotonic() - t2  # from the leaf servers answering /healthz
        for d, leaf in zip(groups[0], leaves, strict=True):
            NodeFiles(d).leaf_pid.write_text(str(leaf.pid))

        # Change 2: the agents of that group stop, then a new worker process starts them.
        stop_worker(workers[0])
        offline_s = await until(shown("offline"), 30, "stopped agents shown offline")
        ready = tmp / "worker0.ready"
        respawned_at = datetime.now(UTC)
        t3 = time.monotonic()
        workers[0] = spawn_worker(groups[0], args.heartbeat_s, tmp / "worker0.log", ready)
        await until(ready.exists, 60, "restarted worker ready")  # until() runs it in a thread
        t4 = time.monotonic()
        await until(shown("up", respawned_at), 60, "restarted agents shown up")
        back_s = time.monotonic() - t4  # from its agents being connected
        respawn_s = time.monotonic() - t3  # from spawning the process
        fleet = store.list_edge_nodes()
    finally:
        for w in workers:
            stop_worker(w)
        for d in joined:
            leave(d)
        await gateway.stop()
        await hub.stop()
        store.close()
    return {
        "agents": args.agents,
        "processes": len(groups),
        "leaf_servers": len(joined),
        "join_s": round(join_s, 2),
        "all_visible_s": round(all_visible_s, 2),
        "link_down_visible_s": round(link_down_s, 2),
        "link_up_visible_s": round(link_up_s, 2),
        "agents_stopped_visible_s": round(offline_s, 2),
        "agents_restarted_visible_s": round(back_s, 2),
        "agents_respawn_to_visible_s": round(respawn_s, 2),
        "heartbeat_s": args.heartbeat_s,
        "offline_after_s": args.offline_after_s,
        "heartbeats": gateway.counters["heartbeats"],
        "up_at_end": sum(1 for n in fleet if n.link_state == "up"),
        "bar_ok": len(joined) == args.agents and max(link_down_s, link_up_s, offline_s) <= 2.0,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        p = argparse.ArgumentParser()
        p.add_argument("worker")
        p.add_argument("--heartbeat-s", type=float, default=0.5)
        p.add_argument("--ready", type=Path, default=None)
        p.add_argument("dirs", nargs="+", type=Path)
        a = p.parse_args()
        asyncio.run(worker(a.dirs, a.heartbeat_s, a.ready))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, default=100)
    p.add_argument("--per-process", type=int, default=10)
    p.add_argument("--heartbeat-s", type=float, default=0.25)
    p.add_argument("--offline-after-s", type=float, default=1.0)
    print(json.dumps(asyncio.run(main_async(p.parse_args()))))


if __name__ == "__main__":
    main()
