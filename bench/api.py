"""API benchmark: the Ray Serve app vs. the same FastAPI app under plain uvicorn, one run.

Builds (if absent) the 5,000-table PostgreSQL database ``dw_bench_5000``, starts a core with
``core_up`` (Ray head, owners, Serve API), registers and discovers the database through the API,
then drives 32 concurrent keep-alive HTTP/1.1 clients for 20 s at each target on a mix of
table-metadata reads (one table by qualified name, with columns, keys and indexes) and list
endpoints (a page of 50 tables, a page of sources):
  (a) the Serve app (proxy + ``--replicas`` replicas, 2 by default; `datawave up` deploys 1);
  (b) the same ``create_app`` object under one plain uvicorn process, on the same store.
The load generator is raw asyncio sockets in 2 processes so it costs little CPU.
Prints one JSON line last: {"p50_ms", "p99_ms", "rps", "baseline_rps", ...}.

Usage: python bench/api.py [--seconds 20] [--clients 32] [--store sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pgbench_db import admin, ensure_database

HOST = os.environ.get("DATAWAVE_BENCH_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("DATAWAVE_BENCH_PG_PORT", "5432"))
USER = os.environ.get("DATAWAVE_BENCH_PG_USER", "postgres")
BIG = "dw_bench_5000"


# -- load generator ----------------------------------------------------------------------------
async def _client(host: str, port: int, paths: list[str], stop_at: float, lat: list[float],
                  errors: list[int], key: str) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    auth = f"Authorization: Bearer {key}\r\n"
    i = random.randrange(len(paths))
    try:
        while time.perf_counter() < stop_at:
            path = paths[i % len(paths)]
            i += 1
            t0 = time.perf_counter()
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Accept: */*\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = head.decode("latin-1").lower()
            if "content-length:" in headers:
                n = int(headers.split("content-length:", 1)[1].split("\r\n", 1)[0])
                await reader.readexactly(n)
            else:  # chunked
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            lat.append((time.perf_counter() - t0) * 1000)
            if status >= 400:
                errors.append(status)
    finally:
        writer.close()


def _worker(
    host: str, port: int, paths: list[str], conns: int, seconds: float, out: mp.Queue, key: str
) -> None:  # type: ignore[type-arg]
    lat: list[float] = []
    errors: list[int] = []

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(
            *(_client(host, port, paths, stop_at, lat, errors, key) for _ in range(conns))
        )

    asyncio.run(main())
    out.put((lat, errors))


def drive(
    url: str, paths: list[str], *, key: str, clients: int, seconds: float, procs: int = 2
) -> dict[str, float]:
    host, port = url.removeprefix("http://").split(":")
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ps = [
        mp.Process(target=_worker, args=(host, int(port), paths, n, seconds, q, key)) for n in per
    ]
    for p in ps:
        p.start()
    lat: list[float] = []
    errs: list[int] = []
    for _ in ps:
        a, e = q.get()
        lat += a
        errs += e
    for p in ps:
        p.join()
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)

    return {"requests": len(lat), "errors": len(errs), "rps": round(len(lat) / seconds, 1),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99)}  # fmt: skip


# -- baseline server ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_baseline(port: int) -> None:
    """Child process: the same app, RayBackend included, under one uvicorn process."""
    import uvicorn

    from datawave.datasource.actors.client import connect
    from datawave.datasource.config import load_settings
    from datawave.datasource.serve.app import create_app
    from datawave.datasource.serve.deployment import RayBackend

    settings = load_settings()
    connect(settings=settings)
    app = create_app(RayBackend(settings), api=settings.api, auth=settings.auth)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _wait_http(url: str, timeout_s: float = 120, path: str = "/readyz") -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} never became ready")


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--replicas", type=int, default=2, help="Serve replicas (datawave up: 1)")
    ap.add_argument("--baseline-port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_port:
        run_baseline(args.baseline_port)
        return

    from datawave.datasource.cli.core import core_down, core_up
    from datawave.datasource.config import load_settings
    from datawave.datasource.serve.client import HttpClient

    ensure_database(HOST, PORT, USER, BIG, 5, 1000)
    tmp = Path(tempfile.mkdtemp(prefix="dw-bench-api-"))
    store_db = None
    overrides: dict[str, object] = {"data_dir": tmp, "api": {"port": 0},
                                    "ray": {"namespace": "dw-bench-api", "include_dashboard": False}}  # fmt: skip
    if args.store == "postgresql":
        store_db = f"dw_bench_store_{uuid.uuid4().hex[:6]}"
        with admin(HOST, PORT, USER) as a:
            a.execute(f'CREATE DATABASE "{store_db}"')
        overrides["store_url"] = f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{store_db}"
    settings = load_settings(**overrides)  # type: ignore[arg-type]
    baseline = None
    try:
        state = core_up(settings, echo=lambda *_: None)
        url = str(state["api_url"])
        if args.replicas != 1:  # what `datawave up` deployed
            from datawave.datasource.serve.deployment import deploy_api

            deploy_api(settings, port=int(url.rsplit(":", 1)[1]), num_replicas=args.replicas)
        _wait_http(url)
        key = (tmp / "admin.key").read_text().strip()  # the bootstrap admin key of `up`
        with HttpClient(url, api_key=key, timeout=900) as api:
            src = api.create_source(f"bench-{uuid.uuid4().hex[:6]}", "postgresql", {
                "host": HOST, "port": PORT, "user": USER, "auth": "none", "database": BIG,
                "databases": [BIG]})  # fmt: skip
            t0 = time.perf_counter()
            view = api.wait_job(api.discover(src.id).id, timeout_s=900)
            discover_s = time.perf_counter() - t0
            counts = api.stats(src.id)
        assert view.done == 1 and counts["tables"] == 5000, (view, counts)
        rnd = random.Random(7)
        paths = []
        for _ in range(400):
            s, t = rnd.randrange(5), rnd.randrange(1000)
            paths.append(f"/v1/sources/{src.id}/tables/{BIG}.bench_{s}.t{t}")
            if rnd.random() < 0.5:
                paths.append(
                    f"/v1/sources/{src.id}/tables?database={BIG}&schema=bench_{s}&limit=50&columns=false"
                )
            else:
                paths.append("/v1/sources?limit=50")
        env = {**os.environ, "DATAWAVE_DATA_DIR": str(tmp), "DATAWAVE_RAY__NAMESPACE": "dw-bench-api",
               **({"DATAWAVE_STORE_URL": str(overrides["store_url"])} if store_db else {})}  # fmt: skip
        bport = _free_port()
        baseline = subprocess.Popen(
            [sys.executable, __file__, "--baseline-port", str(bport)], env=env
        )
        burl = f"http://127.0.0.1:{bport}"
        _wait_http(burl)
        for target in (url, burl):  # warm up both: connections, caches, JIT-free but fair
            drive(target, paths, key=key, clients=args.clients, seconds=2)
        serve_r = drive(url, paths, key=key, clients=args.clients, seconds=args.seconds)
        base_r = drive(burl, paths, key=key, clients=args.clients, seconds=args.seconds)
    finally:
        if baseline is not None:
            baseline.terminate()
            baseline.wait(30)
        core_down(settings)
        if store_db:
            with admin(HOST, PORT, USER) as a:
                a.execute(f'DROP DATABASE "{store_db}" WITH (FORCE)')
    out = {
        "p50_ms": serve_r["p50_ms"],
        "p99_ms": serve_r["p99_ms"],
        "rps": serve_r["rps"],
        "baseline_rps": base_r["rps"],
        "baseline_p50_ms": base_r["p50_ms"],
        "baseline_p99_ms": base_r["p99_ms"],
        "serve": serve_r,
        "baseline": base_r,
        "clients": args.clients,
        "seconds": args.seconds,
        "store": args.store,
        "replicas": args.replicas,
        "tables": counts["tables"],
        "columns": counts["columns"],
        "discover_s": round(discover_s, 2),
        "cpus": os.cpu_count(),
        "bar_met": serve_r["p50_ms"] <= 10
        and serve_r["p99_ms"] <= 50
        and serve_r["rps"] >= 0.5 * base_r["rps"]
        and serve_r["errors"] == 0,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
