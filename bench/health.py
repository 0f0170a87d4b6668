"""Health benchmark: one full sweep of 10,000 real sources on a real core.

Registers N sources (default 10,000) split over the local PostgreSQL (trust auth, user
postgres, db ``test``), the local MariaDB (root, no password) and SQLite files (one file per
source, so each of those checks opens its own file), then starts a core as a user does:
``datawave up`` (the CLI, in a temp data dir, configured only through ``DATAWAVE_*`` settings:
the health loop off so the timed sweep is the only one, the API on a free port, and the Ray
dashboard UI off unless ``--dashboard``). This process then joins it as a driver
(``datawave.datasource.connect()``) and times in ONE run:
  (a) baseline_checks_per_s  naive checks: one new connector per source, no sharing, 32 at a
                             time, over a sample of 300 sources (in the helper process);
  (b) sweep_s                the scheduler's full sweep through the owners (real checks, probes
                             shared per target and bounded per host), states and history written
                             to the store;
  (c) api_p99_ms_during      p99 of GET /v1/sources?limit=20 on the core's API (Ray Serve) while
                             the sweep runs, or null when the API does not answer;
  (d) rss_mb_total           summed RSS of everything datawave runs: the Ray head tree (every
                             Ray process and worker: core actor, owners, Serve), the NATS hub,
                             the mTLS front if any, and this driver; ``pss_mb_total`` and
                             ``rss_by_process`` (RSS and PSS of each) are printed as detail.
Registration and the baseline run in a helper process that exits before the core starts, so
their memory is not counted as the driver's. Prints one JSON line last.
Usage: python bench/health.py [--sources 10000] [--shards 4] [--dashboard]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from datawave.datasource.config import load_settings
from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.engines import SourceService
from datawave.datasource.store import MetadataStore

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "auth": "none", "database": "test"}
MY = {"host": "127.0.0.1", "port": 3306, "user": "root", "auth": "none"}


def ensure_pg_test_db() -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'test'").fetchone():
            c.execute('CREATE DATABASE "test"')


def register_all(settings, n: int, files: Path) -> dict[str, int]:  # type: ignore[no-untyped-def]
    store = MetadataStore.open(settings.resolved_store_url)
    svc = SourceService(store, ConnectorRegistry(), shards=settings.owners.shards)
    counts = {"postgresql": 0, "mysql": 0, "sqlite": 0}
    files.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        kind = ("postgresql", "mysql", "sqlite")[i % 3]
        if kind == "postgresql":
            cfg = PG
        elif kind == "mysql":
            cfg = MY
        else:
            path = files / f"s{i}.sqlite"
            con = sqlite3.connect(path)
            con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)")
            con.close()
            cfg = {"path": str(path)}
        svc.register({"name": f"bench-{i}", "type": kind, "config": cfg})
        counts[kind] += 1
    store.close()
    return counts


async def baseline(settings, sample: int = 300) -> float:  # type: ignore[no-untyped-def]
    """Checks/s without sharing: a fresh connector (and so a fresh connection) per source."""
    store = MetadataStore.open(settings.resolved_store_url)
    reg = ConnectorRegistry()
    recs = store.list_sources(limit=sample)
    sem = asyncio.Semaphore(32)

    async def one(rec):  # type: ignore[no-untyped-def]
        async with sem:
            conn = reg.create(rec.type, rec.config)
            try:
                return await conn.check_health()
            finally:
                await conn.close()

    t0 = time.perf_counter()
    reports = await asyncio.gather(*(one(r) for r in recs))
    dt = time.perf_counter() - t0
    store.close()
    bad = [r for r in reports if r.state.value != "healthy"]
    if bad:
        print(f"baseline: {len(bad)} not healthy, e.g. {bad[0].error}", file=sys.stderr)
    return len(recs) / dt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: ``Authorization`` of every API call: the bootstrap admin key ``datawave up`` wrote.
AUTH: dict[str, str] = {}


def use_admin_key(data_dir: Path) -> None:
    AUTH["Authorization"] = "Bearer " + (data_dir / "admin.key").read_text().strip()


def serve_url(url: str | None) -> str | None:
    """The core's own API (Ray Serve), if it answers."""
    import httpx

    if not url:
        return None
    try:
        ok = httpx.get(url + "/v1/sources?limit=20", headers=AUTH, timeout=5).status_code == 200
    except httpx.HTTPError:
        ok = False
    return url if ok else None


def hammer(url: str, stop: threading.Event, lat: list[float]) -> None:
    import httpx

    with httpx.Client(timeout=10, headers=AUTH) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                c.get(url + "/v1/sources?limit=20")
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc (psutil is not in this venv)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return out


def _kb(pid: int, path: str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kb(pid: int) -> int:
    return _kb(pid, "status", "VmRSS:")


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes that map them."""
    return _kb(pid, "smaps_rollup", "Pss:")


def rss_mb(*roots: int) -> float:
    pids = {p for r in roots for p in _tree(r)}
    return round(sum(_rss_kb(p) for p in pids) / 1024, 1)


def pss_mb(*roots: int) -> float:
    pids = {p for r in roots for p in _tree(r)}
    return round(sum(_pss_kb(p) for p in pids) / 1024, 1)


def rss_by_process(*roots: int) -> list[tuple[str, float, float]]:
    """Every process measured: (command line, RSS MB, PSS MB), largest RSS first."""
    rows = []
    for pid in {p for r in roots for p in _tree(r)}:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                name = fh.read().replace(b"\0", b" ").decode()[:60].strip()
        except OSError:
            continue
        rows.append((name, round(_rss_kb(pid) / 1024, 1), round(_pss_kb(pid) / 1024, 1)))
    return sorted(rows, key=lambda r: -r[1])


def setup(data_dir: Path, shards: int, n: int) -> dict[str, object]:
    """Register the sources and measure the baseline (run in a helper process, see main)."""
    ensure_pg_test_db()
    settings = load_settings(data_dir=data_dir, owners={"shards": shards})
    MetadataStore.open(settings.resolved_store_url, migrate=True).close()
    t0 = time.perf_counter()
    counts = register_all(settings, n, data_dir / "sqlite")
    register_s = time.perf_counter() - t0
    base = asyncio.run(baseline(settings))
    return {"registered": counts, "register_s": round(register_s, 1),
            "baseline_checks_per_s": round(base, 1)}  # fmt: skip


def datawave_cli(env: dict[str, str], *args: str) -> str:
    exe = Path(sys.executable).with_name("datawave")
    out = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"datawave {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", type=int, default=10_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--dashboard", action="store_true",
                    help="start the core with the Ray dashboard UI (ray.include_dashboard)")  # fmt: skip
    ap.add_argument("--setup", type=Path, help=argparse.SUPPRESS)  # the helper process
    args = ap.parse_args()
    if args.setup is not None:
        print(json.dumps(setup(args.setup, args.shards, args.sources)))
        return
    data_dir = Path(tempfile.mkdtemp(prefix="dw-bench-health-"))
    # The core as a user starts it: `datawave up` (its CLI process exits once the core is up),
    # configured only through documented settings. The health loop is off so that the one
    # sweep timed here is the only one, and the API gets a free port.
    env = {
        **os.environ,
        "DATAWAVE_DATA_DIR": str(data_dir),
        "DATAWAVE_RAY__NAMESPACE": f"bench-{uuid.uuid4().hex[:6]}",
        "DATAWAVE_RAY__INCLUDE_DASHBOARD": "true" if args.dashboard else "false",
        "DATAWAVE_OWNERS__SHARDS": str(args.shards),
        "DATAWAVE_HEALTH__ENABLED": "false",
        "DATAWAVE_API__PORT": str(free_port()),
    }
    # Registration and the baseline run in a helper process that exits before the core
    # starts: their memory is the benchmark's, not the driver's.
    helper = [sys.executable, __file__, "--setup", str(data_dir), "--shards", str(args.shards),
              "--sources", str(args.sources)]  # fmt: skip
    prepared = json.loads(subprocess.run(helper, check=True, capture_output=True).stdout)

    os.environ.update({k: v for k, v in env.items() if k.startswith("DATAWAVE_")})
    settings = load_settings()
    datawave_cli(env, "up")
    state = json.loads((data_dir / "core.json").read_text())
    use_admin_key(data_dir)
    api_url = serve_url(state.get("api_url"))
    try:
        import ray

        import datawave.datasource as dw
        from datawave.datasource.actors.factory import HEALTH_NAME

        client = dw.connect(settings=settings)  # this process: a driver of the running core
        sched = ray.get_actor(HEALTH_NAME, namespace=settings.ray.namespace)
        ray.get(sched.refresh.remote())
        lat: list[float] = []
        stop = threading.Event()
        th = None
        if api_url:
            th = threading.Thread(target=hammer, args=(api_url, stop, lat), daemon=True)
            th.start()
        t0 = time.perf_counter()
        summary = ray.get(sched.sweep.remote(False))
        sweep_s = time.perf_counter() - t0
        stop.set()
        if th:
            th.join(15)
        # Everything datawave runs: this driver, the Ray head tree (GCS, raylet, agents, every
        # worker: the core actor, owner processes, Serve controller, proxy and replicas), the
        # NATS hub and the mTLS front when there is one.
        roots = (os.getpid(), int(state["ray_pid"]),
                 *(int(state[k]) for k in ("nats_pid", "front_pid") if state.get(k)))  # fmt: skip
        rss, pss = rss_mb(*roots), pss_mb(*roots)
        probes = [ray.get(client.owner_actor(i).call.remote(i, "ping"))["health_probes"]
                  for i in range(args.shards)]  # fmt: skip
        p99 = None
        if lat:
            lat.sort()
            p99 = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1)
        detail = {
            **prepared, "sweep": summary, "api_requests_during": len(lat),
            "probe_targets": sum(p["targets"] for p in probes),
            "real_probes": sum(p["probes"] for p in probes),
            "shared_checks": sum(p["shared"] for p in probes),
            "api": "serve" if api_url else None,
            "dashboard": bool(state.get("dashboard_url")),
            "owner_processes": settings.owners.process_count,
            "pss_mb_total": pss, "rss_by_process": rss_by_process(*roots),
        }  # fmt: skip
        print(json.dumps(detail), file=sys.stderr)
        print(json.dumps({
            "sources": args.sources, "sweep_s": round(sweep_s, 2),
            "checks_per_s": round(summary["checked"] / sweep_s, 1),
            "api_p99_ms_during": p99, "rss_mb_total": rss,
        }))  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        datawave_cli(env, "down")


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
