"""The floor under the API benchmark: what 32 closed-loop clients see from servers that do nothing.

``bench/api.py``'s bar asks for p50 ≤ 10 ms with 32 concurrent keep-alive clients. By Little's
law a closed loop of N clients at median latency W needs about N / W requests per second, so
p50 ≤ 10 ms at N = 32 needs ≈ 3,200 requests/s. This benchmark measures, with the same load
generator and the same 32 clients, in one run:
  (a) floor_serve     a no-op Ray Serve deployment (2 replicas, the proxy `datawave up` runs),
                      answering ``{}`` — the least any Serve app can cost per request here,
                      next to the idle datawave core (owners, scheduler, hub);
  (a') floor_serve_bare the same deployment on a Ray session of its own with nothing else
                      (``--bare``, a separate run: one Ray session per process);
  (b) floor_uvicorn   a no-op raw-ASGI app under one plain uvicorn process;
  (c) floor_fastapi   a no-op FastAPI route under one plain uvicorn process.
  (d) floor_direct    (``--direct-ingress [--replicas N]``, a separate run) Serve's experimental
                      direct ingress (RAY_SERVE_ENABLE_DIRECT_INGRESS=1): no proxy at all, each
                      no-op replica serves HTTP on its own port and the clients are split evenly
                      over the replicas' ports — the fastest path into a Serve replica.
If (a)'s p50 is above 10 ms, no Serve-hosted API can meet that bar on this machine; if (d)'s is
too, not even without the proxy.
Prints one JSON line last.

Usage: python bench/api_floor.py [--seconds 15] [--clients 32] [--bare | --direct-ingress
       [--replicas 2]]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import _free_port, _wait_http, drive

_RAW_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})
"""

_FASTAPI_APP = """
from fastapi import FastAPI
app = FastAPI()

@app.get("/readyz")
@app.get("/floor")
async def floor() -> dict:
    return {}
"""


def _uvicorn(source: str, tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    (tmp / f"{name}.py").write_text(source)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"{name}:app", "--port", str(port), "--log-level",
         "warning", "--no-access-log"], cwd=tmp,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


class _Floor:
    async def __call__(self, request: object) -> object:
        from starlette.responses import Response

        return Response(b"{}", media_type="application/json")


def bare(seconds: float, clients: int) -> None:
    """Serve alone: a fresh local Ray session, the proxy, two no-op replicas."""
    import ray
    from ray import serve

    port = _free_port()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(serve.deployment(num_replicas=2, max_ongoing_requests=256)(_Floor).bind(),
                  name="floor", route_prefix="/floor")  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        drive(url, ["/floor"], key="unused", clients=clients, seconds=2)
        r = drive(url, ["/floor"], key="unused", clients=clients, seconds=seconds)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps({"clients": clients, "seconds": seconds, "cpus": os.cpu_count(),
                      "floor_serve_bare_p50_ms": r["p50_ms"], "floor_serve_bare_rps": r["rps"],
                      "detail": r, "serve_floor_meets_p50_10ms": r["p50_ms"] <= 10}))  # fmt: skip


def direct_ingress(seconds: float, clients: int, replicas: int) -> None:
    """No-op replicas hit on their own direct-ingress ports, no proxy in between."""
    import concurrent.futures

    import httpx

    flag = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
    os.environ[flag] = "1"  # read when ray.serve is imported
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             runtime_env={"env_vars": {flag: "1"}})  # fmt: skip
    http_port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        serve.run(serve.deployment(num_replicas=replicas, max_ongoing_requests=256)(_Floor)
                  .bind(), name="floor", route_prefix="/floor")  # fmt: skip
        urls: list[str] = []
        deadline = time.monotonic() + 60
        while len(urls) < replicas and time.monotonic() < deadline:
            urls = []
            for port in range(30000, 30050):  # RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT upwards
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/floor", timeout=0.5).status_code == 200:
                        urls.append(f"http://127.0.0.1:{port}")
                except httpx.HTTPError:
                    pass
            if len(urls) < replicas:
                time.sleep(1)
        if len(urls) < replicas:
            raise SystemExit(f"found {len(urls)} direct-ingress replica ports, wanted {replicas}")
        per = [clients // replicas + (1 if i < clients % replicas else 0) for i in range(replicas)]

        def load(secs: float) -> list[dict[str, float]]:
            with concurrent.futures.ThreadPoolExecutor(replicas) as pool:
                jobs = [pool.submit(drive, u, ["/floor"], key="unused", clients=n, seconds=secs,
                                    procs=max(1, 2 // replicas))
                        for u, n in zip(urls, per, strict=True)]  # fmt: skip
                return [j.result() for j in jobs]

        load(2)  # warm up
        parts = load(seconds)
    finally:
        serve.shutdown()
        ray.shutdown()
    rps = round(sum(p["rps"] for p in parts), 1)
    # The clients are split evenly, so the median of the per-port medians weighs them alike.
    p50 = max(p["p50_ms"] for p in parts)
    print(json.dumps({"clients": clients, "seconds": seconds, "cpus": os.cpu_count(),
                      "replicas": replicas, "rps_needed_for_p50_10ms": round(clients / 0.010),
                      "floor_direct_p50_ms_worst_replica": p50, "floor_direct_rps": rps,
                      "detail": parts, "direct_floor_meets_p50_10ms": p50 <= 10}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--bare", action="store_true", help="Serve alone, without the datawave core")
    ap.add_argument(
        "--direct-ingress",
        action="store_true",
        help="no-op replicas on Serve's direct-ingress ports, no proxy",
    )
    ap.add_argument("--replicas", type=int, default=2, help="with --direct-ingress")
    args = ap.parse_args()
    if args.direct_ingress:
        direct_ingress(args.seconds, args.clients, args.replicas)
        return
    if args.bare:
        bare(args.seconds, args.clients)
        return

    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    from datawave.datasource.cli.core import core_down, core_up
    from datawave.datasource.config import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="dw-bench-floor-"))
    settings = load_settings(data_dir=tmp, api={"port": 0},
                             ray={"namespace": "dw-bench-floor", "include_dashboard": False})  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        state = core_up(settings, echo=lambda *_: None)
        url = str(state["api_url"])

        @serve.deployment(num_replicas=2, max_ongoing_requests=256)
        class Floor:
            async def __call__(self, request: Request) -> Response:
                return Response(b"{}", media_type="application/json")

        serve.run(Floor.bind(), name="floor", route_prefix="/floor")
        _wait_http(url)
        results: dict[str, dict[str, float]] = {}
        targets = {"floor_serve": url}
        for name, source in (("floor_uvicorn", _RAW_APP), ("floor_fastapi", _FASTAPI_APP)):
            proc, turl = _uvicorn(source, tmp, name)
            procs.append(proc)
            targets[name] = turl
        for name, turl in targets.items():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the raw app answers any path, /floor included
                import httpx

                try:
                    if httpx.get(f"{turl}/floor", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            drive(turl, ["/floor"], key="unused", clients=args.clients, seconds=2)  # warm up
            results[name] = drive(turl, ["/floor"], key="unused", clients=args.clients,
                                  seconds=args.seconds)  # fmt: skip
        serve.delete("floor")
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        core_down(settings)
    need_rps = args.clients / 0.010
    out = {
        "clients": args.clients,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "rps_needed_for_p50_10ms": round(need_rps),
        **{f"{k}_p50_ms": v["p50_ms"] for k, v in results.items()},
        **{f"{k}_rps": v["rps"] for k, v in results.items()},
        "detail": results,
        "serve_floor_meets_p50_10ms": results["floor_serve"]["p50_ms"] <= 10,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
