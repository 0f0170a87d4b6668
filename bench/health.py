"""Health benchmark: one full sweep of 10,000 real sources on a real core.

Registers N sources (default 10,000) split over the local PostgreSQL (trust auth, user
postgres, db ``test``), the local MariaDB (root, no password) and SQLite files (one file per
source, so each of those checks opens its own file), starts a core (`datawave up` in a temp data
dir: Ray head, owner shards, health scheduler), and times in ONE run:
  (a) baseline_checks_per_s  naive checks in this process: one new connector per source, no
                             sharing, 32 at a time, over a sample of 300 sources;
  (b) sweep_s                the scheduler's full sweep through the owner actors (real checks,
                             probes shared per target and bounded per host), states and history
                             written to the store;
  (c) api_p99_ms_during      p99 of GET /v1/sources?limit=20 against the API app
                             (``serve.app.create_app`` on ``LocalBackend``) while the sweep runs,
                             or null when the API cannot be started;
  (d) rss_mb_total           summed RSS of the core's processes (Ray head tree) + this driver.
Prints one JSON line last. Usage: python bench/health.py [--sources 10000] [--shards 4]
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


def start_api(data_dir: Path, shards: int) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    port = free_port()
    code = (
        "import uvicorn\n"
        "from datawave.datasource.config import load_settings\n"
        "from datawave.datasource.serve.app import create_app\n"
        "from datawave.datasource.serve.local import LocalBackend\n"
        f"s = load_settings(data_dir={str(data_dir)!r}, owners={{'shards': {shards}}}, "
        "health={'enabled': False})\n"
        f"uvicorn.run(create_app(LocalBackend(s)), host='127.0.0.1', port={port}, log_level='warning')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    import httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else b"").decode()[-500:]
            print(f"API did not start: {err}", file=sys.stderr)
            return None, None
        try:
            if httpx.get(url + "/v1/sources?limit=20", headers=AUTH, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    return None, None


def serve_url(settings) -> str | None:  # type: ignore[no-untyped-def]
    import httpx

    url = f"http://{settings.api.host}:{settings.api.port}"
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


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(*roots: int) -> float:
    pids = {p for r in roots for p in _tree(r)}
    return round(sum(_rss_kb(p) for p in pids) / 1024, 1)


def top_rss(*roots: int) -> list[tuple[str, float]]:
    rows = []
    for pid in {p for r in roots for p in _tree(r)}:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                name = fh.read().replace(b"\0", b" ").decode()[:60]
        except OSError:
            continue
        rows.append((name, round(_rss_kb(pid) / 1024, 1)))
    return sorted(rows, key=lambda r: -r[1])[:12]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", type=int, default=10_000)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    ensure_pg_test_db()
    data_dir = Path(tempfile.mkdtemp(prefix="dw-bench-health-"))
    settings = load_settings(
        data_dir=data_dir,
        ray={"include_dashboard": False, "namespace": f"bench-{uuid.uuid4().hex[:6]}"},
        owners={"shards": args.shards},
        health={"enabled": False},  # no background loop: we time one cold sweep
    )
    from datawave.datasource.store import MetadataStore as _S

    _S.open(settings.resolved_store_url).close()  # migrate
    t0 = time.perf_counter()
    counts = register_all(settings, args.sources, data_dir / "sqlite")
    register_s = time.perf_counter() - t0
    base = asyncio.run(baseline(settings))

    import ray

    from datawave.datasource.actors.factory import HEALTH_NAME
    from datawave.datasource.cli.core import core_down, core_up

    state = core_up(settings, echo=lambda *_: None)
    use_admin_key(data_dir)
    api_proc, api_url = None, serve_url(settings)  # the core's own API (Ray Serve), if up
    if api_url is None:
        api_proc, api_url = start_api(data_dir, args.shards)
    try:
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
        rss = rss_mb(os.getpid(), int(state["ray_pid"]), *([api_proc.pid] if api_proc else []))
        probes = [ray.get(ray.get_actor(f"datawave-owner-{i}", namespace=settings.ray.namespace)
                          .ping.remote())["health_probes"] for i in range(args.shards)]  # fmt: skip
        p99 = None
        if lat:
            lat.sort()
            p99 = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1)
        detail = {
            "registered": counts, "register_s": round(register_s, 1),
            "baseline_checks_per_s": round(base, 1), "sweep": summary,
            "api_requests_during": len(lat),
            "probe_targets": sum(p["targets"] for p in probes),
            "real_probes": sum(p["probes"] for p in probes),
            "shared_checks": sum(p["shared"] for p in probes),
            "api": "serve" if api_proc is None and api_url else ("local" if api_url else None),
            "rss_by_process": top_rss(os.getpid(), int(state["ray_pid"])),
        }  # fmt: skip
        print(json.dumps(detail), file=sys.stderr)
        print(json.dumps({
            "sources": args.sources, "sweep_s": round(sweep_s, 2),
            "checks_per_s": round(summary["checked"] / sweep_s, 1),
            "api_p99_ms_during": p99, "rss_mb_total": rss,
        }))  # fmt: skip
    finally:
        if api_proc is not None:
            api_proc.kill()
        ray.shutdown()
        core_down(settings)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
