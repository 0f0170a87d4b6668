"""Run a joined node's agent in the foreground: ``python -m datawave.datasource.edge.run``.

This is what ``datawave edge run`` and the ``datawave-edge-agent`` systemd unit start. It makes
sure the node's leaf server is up (starting it with the ports chosen at join when it is not),
opens the LMDB cache (a cache left by a SIGKILL opens as is: committed transactions are whole),
loads the node's sealing key and runs :class:`EdgeAgent` until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datawave.datasource.edge.agent import DiscoverRunner, EdgeAgent
from datawave.datasource.edge.cache import EdgeCache
from datawave.datasource.edge.node import (
    NodeFiles,
    _pid,
    _write_pid,
    leaf_server,
    read_node,
    renew_certificate,
)
from datawave.datasource.edge.sources import SourceBook
from datawave.datasource.edge.tls import renewal_due
from datawave.datasource.security.edgekeys import EdgeSealingKey
from datawave.datasource.security.secrets import SecretResolver

__all__ = ["main", "run_agent"]

log = logging.getLogger(__name__)


async def run_agent(
    root: Path | str,
    *,
    batch_size: int = 1000,
    heartbeat_s: float = 1.0,
    health_interval_s: float | None = None,
    cache_sync: bool = True,
    start_leaf: bool = True,
    discover_runner: DiscoverRunner | None = None,
    mode: str = "light",
    stop: asyncio.Event | None = None,
    synthetic: int = 0,
    synthetic_rate: float = 0.0,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run the agent of the node in ``root`` until ``stop`` is set (or a signal arrives).

    ``environ`` is the process environment the entry point read: ``env:`` secret references
    of this edge's sources resolve against it.
    """
    files = NodeFiles(Path(root))
    node = read_node(files.root)
    if start_leaf and _pid(files.leaf_pid) is None:
        leaf = leaf_server(files.root, node)
        await leaf.start()
        _write_pid(files.leaf_pid, leaf.pid)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _write_pid(files.agent_pid, os.getpid())
    # A node that joined before edge sealing has no key: its sources then fail with the reason.
    seal = EdgeSealingKey.load(files.seal_key) if files.seal_key.exists() else None
    cache = EdgeCache(files.cache_dir, node=node["node"], sync=cache_sync)
    try:
        agent = EdgeAgent(
            node["site"], f"nats://127.0.0.1:{node['client_port']}", cache,
            SourceBook(files.sources_file), batch_size=batch_size, heartbeat_s=heartbeat_s,
            health_interval_s=health_interval_s, discover_runner=discover_runner, mode=mode,
            sealing_key=seal, resolver=SecretResolver(environ=environ),
        )  # fmt: skip
        async with agent:
            tasks: list[asyncio.Task[Any]] = []
            if synthetic:
                tasks.append(asyncio.create_task(produce(agent, synthetic, synthetic_rate)))
            if node.get("tls"):
                tasks.append(asyncio.create_task(renew_when_due(files.root, start_leaf)))
            await stop.wait()
            for task in tasks:
                task.cancel()
    finally:
        cache.close()
        files.agent_pid.unlink(missing_ok=True)


async def renew_when_due(root: Path, restart_leaf: bool, check_s: float = 3600.0) -> None:
    """Renew the node's leaf certificate once less than a third of its lifetime is left.

    Checked at start and every ``check_s``; a failed attempt (link down, core refused) is
    logged and tried again at the next check. Without ``restart_leaf`` the leaf's supervisor
    (systemd) starts it again with the new pair.
    """
    cert_file = NodeFiles(root).tls.cert_file
    while True:
        if await asyncio.to_thread(renewal_due, cert_file):
            try:
                await renew_certificate(root, restart_leaf=restart_leaf)
            except Exception as exc:  # the agent outlives a failed renewal
                log.warning("leaf certificate renewal failed (retrying later): %s", exc)
        await asyncio.sleep(check_s)


async def produce(agent: EdgeAgent, total: int, rate: float = 0.0, batch: int = 1000) -> int:
    """Queue ``total`` synthetic event records (benchmarks, tests), at ``rate`` per second or
    as fast as the outbox takes them; ``total < 0`` produces until cancelled."""
    t0 = time.monotonic()
    done = 0
    while total < 0 or done < total:
        n = batch if total < 0 else min(batch, total - done)
        now = time.time()
        await agent.enqueue([{"kind": "event", "type": "synthetic", "source_id": None,
                              "at": now, "data": {"i": done + k}} for k in range(n)])  # fmt: skip
        done += n
        if rate > 0:
            ahead = done / rate - (time.monotonic() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
    return done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="datawave-edge-agent", description=__doc__)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--heartbeat-s", type=float, default=1.0)
    p.add_argument("--health-interval-s", type=float, default=None)
    p.add_argument("--no-fsync", action="store_true", help="benchmarks only: see edge/cache.py")
    p.add_argument("--no-leaf", action="store_true", help="the leaf runs under its own unit")
    p.add_argument(
        "--synthetic", type=int, default=0, help="tests: queue N synthetic records (-1: forever)"
    )
    p.add_argument("--synthetic-rate", type=float, default=0.0, help="records per second (0: max)")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("DATAWAVE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    asyncio.run(
        run_agent(
            args.state_dir,
            batch_size=args.batch_size,
            heartbeat_s=args.heartbeat_s,
            health_interval_s=args.health_interval_s,
            cache_sync=not args.no_fsync,
            start_leaf=not args.no_leaf,
            synthetic=args.synthetic,
            synthetic_rate=args.synthetic_rate,
            environ=os.environ,
        )
    )


if __name__ == "__main__":
    main()
