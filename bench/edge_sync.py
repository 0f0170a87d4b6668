"""Benchmark edge → core sync over a real leaf link, through an outage of the hub.

    .venv/bin/python bench/edge_sync.py [--records 100000] [--outage-s 60] [--outage-rate 1000]

Set-up (all real processes on loopback): a hub nats-server, a metadata store (SQLite), the
core's EdgeGateway in this process; an edge joined with a real token (leaf nats-server) and its
agent as a separate process (``python -m datawave.datasource.edge.run``), whose outbox is the
LMDB cache with its default durability (an fsync per commit).

Phases:
1. ``records`` synthetic records queued by the agent as fast as it can, synced to the core;
   ``records_per_s`` = records / (time from the first to the last one applied at the core);
   the agent process's start-up is reported apart (``agent_start_to_first_record_s``).
2. The hub is killed (SIGKILL); a new agent process keeps producing ``outage_rate`` records/s
   for ``outage_s`` seconds into its outbox; the hub is restarted on the same ports.
   ``drain_s`` = time from the hub's restart until every record is applied at the core.
3. ``lost`` = records produced but never applied, ``duplicated`` = records applied twice.

Baseline measured in the same run: the same batches as plain NATS requests over the same leaf
link to a responder that only counts (no outbox, no store): ``baseline_records_per_s``.

The final line is one JSON object:
``{"records", "records_per_s", "outage_s", "drain_s", "lost", "duplicated", ...}``.
Bar: >= 20,000 records/s, drain <= 10 s, lost = duplicated = 0.
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
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import nats

from datawave.datasource.edge import HubConfig, NatsServer, TokenIssuer, edge_inbox_prefix
from datawave.datasource.edge.gateway import EdgeGateway
from datawave.datasource.edge.node import NodeFiles, join, leave
from datawave.datasource.models import Event
from datawave.datasource.store import MetadataStore

SITE = "bench"


class Agent:
    def __init__(self, root: Path, *args: str) -> None:
        log = open(root.with_name("agent.log"), "ab")  # noqa: SIM115 - handed to the child
        cmd = [sys.executable, "-m", "datawave.datasource.edge.run", "--state-dir", str(root),
               "--heartbeat-s", "0.5", *args]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "DATAWAVE_LOG_LEVEL": "WARNING"})  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


async def wait_until(pred: Any, within: float, what: str) -> float:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not reached within {within:g}s")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def baseline(leaf_url: str, hub: NatsServer, n: int, batch: int) -> float:
    """Plain NATS requests of the same batches over the same leaf link: the ceiling."""
    user, password = hub.core_credentials
    core = await nats.connect(hub.client_url, user=user, password=password)
    edge = await nats.connect(leaf_url, inbox_prefix=edge_inbox_prefix(SITE))
    got = 0

    async def count(msg: Any) -> None:
        nonlocal got
        got += len(msgpack.unpackb(msg.data)["records"])
        await msg.respond(msgpack.packb({"ack": got}))

    await core.subscribe(f"dw.edge.{SITE}.baseline", cb=count)
    await core.flush()
    rec = {"kind": "event", "type": "synthetic", "source_id": None, "at": time.time(),
           "data": {"i": 0}, "rid": "x:1", "seq": 1}  # fmt: skip
    payload = msgpack.packb({"node": "x", "epoch": "e", "records": [rec] * batch})
    for _ in range(100):  # interest must cross the leaf link first
        try:
            await edge.request(f"dw.edge.{SITE}.baseline", payload, timeout=1)
            break
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            await asyncio.sleep(0.1)
    got = 0
    t0 = time.perf_counter()
    for _ in range(n // batch):
        await edge.request(f"dw.edge.{SITE}.baseline", payload, timeout=10)
    elapsed = time.perf_counter() - t0
    await edge.close()
    await core.close()
    return got / elapsed


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dw-edge-sync-"))
    store = MetadataStore.open(f"sqlite:///{tmp / 'core.db'}")
    hub = NatsServer(
        HubConfig(store_dir=tmp / "hub-js", core_password=secrets.token_urlsafe(18)), tmp / "hub"
    )
    await hub.start()
    issuer = TokenIssuer(tmp / "join.key", tmp / "joins.json")
    seen: Counter[str] = Counter()
    first: list[float] = []

    def sink(e: Event) -> None:
        if e.type == "synthetic":
            if not first:
                first.append(time.monotonic())
            seen[e.data["rid"]] += 1

    user, password = hub.core_credentials
    gateway = EdgeGateway(store, issuer, hub.client_url, user=user, password=password, sink=sink)
    await gateway.start()
    root = tmp / "edge"
    token, _ = issuer.create(SITE, 600, hub.leaf_url)
    await hub.update_edges(issuer.hub_users())
    info = await join(token, root, timeout_s=30)
    leaf_url = f"nats://127.0.0.1:{info['client_port']}"
    agent: Agent | None = None
    try:
        base_rps = await baseline(leaf_url, hub, min(args.records, 50_000), args.batch)

        # Phase 1: steady state.
        t0 = time.monotonic()
        agent = Agent(root, "--synthetic", str(args.records), "--batch-size", str(args.batch))
        t1 = await wait_until(lambda: len(seen) >= args.records, 600, "phase 1 delivery")
        rps = args.records / (t1 - first[0])
        startup_s = first[0] - t0
        agent.stop()

        # Phase 2: outage with the agent producing, then reconnect.
        await hub.kill()
        outage_records = int(args.outage_rate * args.outage_s)
        agent = Agent(root, "--synthetic", str(outage_records), "--synthetic-rate",
                      str(args.outage_rate), "--batch-size", str(args.batch))  # fmt: skip
        await asyncio.sleep(args.outage_s)
        await hub.start()
        restarted = time.monotonic()
        expected = args.records + outage_records
        t2 = await wait_until(lambda: len(seen) >= expected, 600, "drain after the outage")
        drain_s = t2 - restarted
        await asyncio.sleep(1.0)  # anything redelivered late would show up as a duplicate
        agent.stop()
        agent = None
    finally:
        if agent is not None:
            agent.stop()
        await gateway.stop()
        leave(root)
        await hub.stop()
        store.close()
    return {
        "records": args.records,
        "records_per_s": round(rps),
        "agent_start_to_first_record_s": round(startup_s, 2),
        "outage_s": args.outage_s,
        "outage_records": outage_records,
        "drain_s": round(drain_s, 2),
        "lost": expected - len(seen),
        "duplicated": sum(c - 1 for c in seen.values()),
        "baseline_records_per_s": round(base_rps),
        "batch": args.batch,
        "gateway": dict(gateway.counters),
        "node_state_dir_removed": not NodeFiles(root).root.exists(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--outage-s", type=float, default=60.0)
    p.add_argument("--outage-rate", type=float, default=1000.0, help="records/s during the outage")
    p.add_argument("--batch", type=int, default=1000, help="records per sync request")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    ok = (result["records_per_s"] >= 20_000 and result["drain_s"] <= 10
          and result["lost"] == 0 and result["duplicated"] == 0)  # fmt: skip
    result["bar_ok"] = ok
    print(json.dumps(result))


if __name__ == "__main__":
    main()
