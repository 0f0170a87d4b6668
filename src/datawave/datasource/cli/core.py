"""Starting and stopping the local core: a Ray head, the owner actors, Serve, the NATS hub.

The Ray head runs in its own process group, so ``down`` stops exactly the processes ``up``
started and never another Ray on the machine: a small supervisor (:data:`SUPERVISOR`) runs
``ray start --head`` and stays as the parent of every head process. Token auth is on: the token
lives in ``<data_dir>/ray_token`` (0600) and every client is pointed at it.

A one-machine head starts only what a single node uses (``actors/README.md``, "Process
layout"): no autoscaler monitor (nothing to scale), no log monitor (drivers run with
``log_to_driver=False``; worker logs stay in the session's log files, which the dashboard
shows), no Ray Client server (datawave never uses ``ray://``; ``ray.client_server`` keeps it),
every process with ``MALLOC_ARENA_MAX`` = ``ray.malloc_arena_max``.

API auth is on by default too. On the first start (no API key in the store yet) ``up`` creates
a global ``admin`` key named ``bootstrap-admin`` and writes its token to ``<data_dir>/admin.key``
(0600); the token is never printed or logged, only the file's path and how to use it.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datawave.datasource.actors.raynet import ray_bind_env
from datawave.datasource.config import DatawaveSettings
from datawave.datasource.errors import DatawaveError

__all__ = [
    "ADMIN_KEY_FILE",
    "CoreState",
    "admin_key_hint",
    "bootstrap_admin_key",
    "check_keys",
    "core_down",
    "core_up",
    "ray_head_command",
    "ray_head_env",
    "ray_token_env",
    "read_state",
]

CoreState = dict[str, Any]
ADMIN_KEY_FILE = "admin.key"

#: The parent of the head's processes: runs ``ray start --head`` (the arguments after ``--``),
#: which returns once the head is up, and stays as a child subreaper, so every process Ray
#: started is re-parented to it and the head stays one tree under one pid: ~11 MB instead of
#: the ~150 MB Python process ``ray start --block`` keeps. It exits when the last head process
#: is gone. With ``--stop-client-server`` it then stops the Ray Client server that ``ray start``
#: always starts (``ray.client_server``).
SUPERVISOR = """\
import ctypes, os, signal, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
opts, cmd = sys.argv[1:sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1:]
rc = subprocess.call(cmd)
if rc:
    sys.exit(rc)
if "--stop-client-server" in opts:  # our children now: ray start has exited
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = fh.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\\0")
        except OSError:
            continue
        if ppid == me and b"ray.util.client.server" in argv:
            os.kill(int(pid), signal.SIGTERM)
while True:
    try:
        os.wait()
    except ChildProcessError:
        sys.exit(0)
"""


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
    # Loopback binding (ray.bind_host) needs the same Ray networking mode in every process.
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path), **ray_bind_env(settings)}


def ray_head_command(settings: DatawaveSettings, *, port: int, dashboard_port: int) -> list[str]:
    """The supervised ``ray start --head`` of ``datawave up``: every listener on ``ray.bind_host``.

    With a loopback ``bind_host`` (the default) the environment from :func:`ray_token_env`
    puts Ray in single-machine mode, so the GCS, raylet, object manager, workers, dashboard
    agent, metrics exporter and Ray Client server listen on 127.0.0.1 only; the dashboard
    listens on ``ray.dashboard_host``. Token auth (``RAY_AUTH_MODE=token``) guards them all.
    No autoscaler monitor, no log monitor and (unless ``ray.client_server``) no Ray Client
    server: see the module docstring.
    """
    ray_bin = Path(sys.executable).with_name("ray")
    stop = [] if settings.ray.client_server else ["--stop-client-server"]
    cmd = [
        sys.executable, "-I", "-S", "-c", SUPERVISOR, *stop, "--",
        str(ray_bin if ray_bin.exists() else shutil.which("ray") or "ray"),
        "start", "--head", f"--port={port}",
        f"--node-ip-address={settings.ray.bind_host}",
        f"--dashboard-host={settings.ray.dashboard_host}", f"--dashboard-port={dashboard_port}",
        f"--include-dashboard={'true' if settings.ray.include_dashboard else 'false'}",
        "--disable-usage-stats", "--no-monitor", "--include-log-monitor=false",
    ]  # fmt: skip
    if settings.ray.num_cpus:
        cmd.append(f"--num-cpus={settings.ray.num_cpus}")
    return cmd


def ray_head_env(settings: DatawaveSettings) -> dict[str, str]:
    """What the head's processes (and so every Ray worker) get on top of this environment."""
    env = {**ray_token_env(settings), "RAY_USAGE_STATS_ENABLED": "0"}
    if settings.ray.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(settings.ray.malloc_arena_max)
    return env


def check_keys(settings: DatawaveSettings) -> None:
    """Migrate the store and prove the key-encryption key opens its secrets, before Ray starts.

    In the dev profile a first start creates the file key; a missing or wrong key is a
    :class:`ConfigError` naming the setting (and kek ids), never a silent fresh key.
    """
    from datawave.datasource.actors.owner import open_store

    open_store(settings, migrate=True, environ=os.environ).close()


def read_state(settings: DatawaveSettings) -> CoreState | None:
    try:
        return dict(json.loads(settings.state_file.read_text()))
    except (OSError, ValueError):
        return None


def _exists(send: Callable[[int, int], None], target: int) -> bool:
    """Signal 0 to a process (``os.kill``) or a group (``os.killpg``): is it there?"""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but not ours
        return True
    return True


def _alive(pid: int) -> bool:
    return _exists(os.kill, pid)


def _group_alive(pgid: int) -> bool:
    return _exists(os.killpg, pgid)


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


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600 from the first byte)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def bootstrap_admin_key(settings: DatawaveSettings) -> Path | None:
    """Create the first admin API key when the store has none; return the key file, if any.

    Idempotent: once any key exists (revoked ones included) nothing is created, so revoking
    the bootstrap key does not bring a new one back on the next start.
    """
    if not settings.auth.enabled:
        return None
    from datawave.datasource.security import Grant
    from datawave.datasource.store import MetadataStore

    path = settings.data_dir / ADMIN_KEY_FILE
    store = MetadataStore.open(settings.resolved_store_url, migrate=True)
    try:
        if store.list_api_keys(include_revoked=True):
            return path if path.exists() else None
        rec, token = store.create_api_key(name="bootstrap-admin", grants=[Grant(role="admin")],
                                          created_by="system:datawave-up")  # fmt: skip
        _write_private(path, token + "\n")
        store.append_audit("apikey.create", principal="system:datawave-up", target=rec.id,
                           detail={"name": rec.name, "grants": ["admin@*"], "file": str(path)})  # fmt: skip
    finally:
        store.close()
    return path


def admin_key_hint(settings: DatawaveSettings) -> str | None:
    """How to use the bootstrap key, when its file exists (never the key itself)."""
    path = settings.data_dir / ADMIN_KEY_FILE
    if not settings.auth.enabled or not path.exists():
        return None
    return (f"First admin API key written to {path} — "
            f"export DATAWAVE_API_KEY=$(cat {path}); "
            "create personal keys with `datawave apikeys create`")  # fmt: skip


def core_up(settings: DatawaveSettings, *, echo: Any = print, api: bool = True) -> CoreState:
    """Start the core in the background and return once every part answers.

    With ``api`` (the default) the HTTP API is deployed on Ray Serve once the owners are ready.
    With ``auth.enabled`` (the default) the first start creates the bootstrap admin key.
    """
    state = read_state(settings)
    if state and _alive(int(state.get("ray_pid", 0))):
        echo(f"core already running (ray pid {state['ray_pid']})")
        if hint := admin_key_hint(settings):
            echo(hint)
        return state
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    check_keys(settings)
    bootstrap_admin_key(settings)
    env = {**os.environ, **ray_head_env(settings)}
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    port = settings.ray.port or free_port()
    dash_port = settings.ray.dashboard_port or free_port()
    cmd = ray_head_command(settings, port=port, dashboard_port=dash_port)
    log = open(logs / "ray-head.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    address = f"{settings.ray.bind_host}:{port}"
    try:
        _wait_port(settings.ray.bind_host, port, 90, proc)
        import ray

        from datawave.datasource.actors import factory
        from datawave.datasource.actors.client import apply_ray_auth

        apply_ray_auth(ray_token_env(settings))

        ray.init(address=address, namespace=settings.ray.namespace, log_to_driver=False)
        from datawave.datasource.edge.hub import build_gateway, start_hub
        from datawave.datasource.serve.events import EventHub

        hub = start_hub(settings)  # the NATS hub first: the core hosts the edge gateway
        handles = factory.deploy(settings, detached=True, hub=EventHub,
                                 gateway=(hub, build_gateway))  # fmt: skip
        pings = factory.wait_ready(handles)
        from datawave.datasource.serve import front as mtls_front

        api_settings = mtls_front.with_front_key(settings)  # replicas trust the front's key
        api_url = _start_api(api_settings) if api else None
        front = mtls_front.start_front(api_settings, upstream=api_url,
                                       log_file=logs / "front.log") if api_url else {}  # fmt: skip
    except BaseException:
        _stop_front(locals().get("front") or {})
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
        **front,
    }
    settings.state_file.write_text(json.dumps(state, indent=2))
    if api_url:
        echo(f"API at {api_url} (docs {api_url}/docs)")
    if front:
        echo(f"mTLS front at {front['front_url']} (client certificates: docs/mtls.md)")
    if hint := admin_key_hint(settings):
        echo(hint)
    elif settings.auth.enabled:
        echo("API auth is on: use an API key (`datawave apikeys create`) as DATAWAVE_API_KEY")
    return state


def _stop_edge(state: dict[str, Any]) -> None:
    from datawave.datasource.edge.hub import stop_hub

    stop_hub(state)


def _stop_front(state: dict[str, Any]) -> None:
    from datawave.datasource.serve.front import stop_front

    stop_front(state)


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
    if pid and (_alive(pid) or _group_alive(pid)):  # head processes outlive a killed supervisor
        _kill_group(pid)
    _stop_front(state)
    _stop_edge(state)
    settings.state_file.unlink(missing_ok=True)
    return True
