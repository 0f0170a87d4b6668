"""Starting and stopping the local core: a Ray head, the owner actors, Serve, the NATS hub.

The Ray head runs as ``ray start --head --block`` in its own process group, so ``down`` stops
exactly the processes ``up`` started and never another Ray on the machine. Token auth is on: the
token lives in ``<data_dir>/ray_token`` (0600) and every client is pointed at it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from datawave.datasource.config import DatawaveSettings
from datawave.datasource.errors import DatawaveError
from datawave.datasource.store import load_kek

__all__ = ["CoreState", "core_down", "core_up", "ray_token_env", "read_state"]

CoreState = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_token_env(settings: DatawaveSettings) -> dict[str, str]:
    path = settings.data_dir / "ray_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def read_state(settings: DatawaveSettings) -> CoreState | None:
    try:
        return dict(json.loads(settings.state_file.read_text()))
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DatawaveError(f"ray head exited with code {proc.returncode}; see its log")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise DatawaveError(f"ray head did not open {host}:{port} within {timeout_s:g}s")


def core_up(settings: DatawaveSettings, *, echo: Any = print, api: bool = True) -> CoreState:
    """Start the core in the background and return once every part answers.

    With ``api`` (the default) the HTTP API is deployed on Ray Serve once the owners are ready.
    """
    state = read_state(settings)
    if state and _alive(int(state.get("ray_pid", 0))):
        echo(f"core already running (ray pid {state['ray_pid']})")
        return state
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    load_kek(settings.resolved_key_file, create=settings.profile == "dev")
    env = {**os.environ, **ray_token_env(settings), "RAY_USAGE_STATS_ENABLED": "0"}
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    port = settings.ray.port or free_port()
    dash_port = settings.ray.dashboard_port or free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [
        str(ray_bin if ray_bin.exists() else shutil.which("ray") or "ray"),
        "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
        f"--dashboard-host={settings.ray.dashboard_host}", f"--dashboard-port={dash_port}",
        f"--include-dashboard={'true' if settings.ray.include_dashboard else 'false'}",
        "--disable-usage-stats",
    ]  # fmt: skip
    if settings.ray.num_cpus:
        cmd.append(f"--num-cpus={settings.ray.num_cpus}")
    log = open(logs / "ray-head.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    address = f"127.0.0.1:{port}"
    try:
        _wait_port("127.0.0.1", port, 90, proc)
        import ray

        from datawave.datasource.actors import factory
        from datawave.datasource.actors.client import apply_ray_auth

        apply_ray_auth(ray_token_env(settings))

        ray.init(address=address, namespace=settings.ray.namespace, log_to_driver=False)
        handles = factory.deploy(settings, detached=True)
        pings = factory.wait_ready(handles)
        hub = _start_edge(settings)
        api_url = _start_api(settings) if api else None
    except BaseException:
        _stop_edge(locals().get("hub") or {})
        _kill_group(proc.pid)
        raise
    state = {
        "ray_pid": proc.pid,
        "ray_address": address,
        "dashboard_url": f"http://{settings.ray.dashboard_host}:{dash_port}"
        if settings.ray.include_dashboard
        else None,
        "store_url": _safe_url(settings.resolved_store_url),
        "data_dir": str(settings.data_dir),
        "namespace": settings.ray.namespace,
        "shards": len(pings),
        "started_at": time.time(),
        "logs": str(logs),
        "api_url": api_url,
        **hub,
    }
    settings.state_file.write_text(json.dumps(state, indent=2))
    if api_url:
        echo(f"API at {api_url} (docs {api_url}/docs)")
    return state


def _start_edge(settings: DatawaveSettings) -> dict[str, Any]:
    """The NATS hub (embedded unless ``settings.nats.url``) and the edge gateway actor."""
    from datawave.datasource.actors.gateway import deploy_gateway
    from datawave.datasource.edge.hub import build_gateway, start_hub

    hub = start_hub(settings)
    try:
        deploy_gateway(settings, hub, build_gateway)
    except BaseException:
        _stop_edge(hub)
        raise
    return hub


def _stop_edge(state: dict[str, Any]) -> None:
    from datawave.datasource.edge.hub import stop_hub

    stop_hub(state)


def _start_api(settings: DatawaveSettings) -> str:
    from datawave.datasource.serve.deployment import deploy_api

    return deploy_api(settings, port=settings.api.port or free_port())


def _safe_url(url: str) -> str:
    from datawave.datasource.errors import redact

    return redact(url)


def _kill_group(pid: int, timeout_s: float = 30) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def core_down(settings: DatawaveSettings) -> bool:
    state = read_state(settings)
    if not state:
        return False
    pid = int(state.get("ray_pid", 0))
    if pid and _alive(pid):
        _kill_group(pid)
    _stop_edge(state)
    settings.state_file.unlink(missing_ok=True)
    return True
