"""``datawave edge``: join tokens and the fleet view on the core; join, status, leave, show and
the agent on an edge node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from datawave.datasource.cli.output import console, emit_json, err_console, table
from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.errors import DatawaveError

edge_app = typer.Typer(no_args_is_help=True, help="The edge fleet: tokens, join, status, sync.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="The edge node's directory (default: edge.cache_dir or <data_dir>/edge-node)",
    ),
]


def _fail(exc: Exception) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2 if isinstance(exc, ValueError | PermissionError) else 1)


def _state_dir(settings: DatawaveSettings, given: Path | None) -> Path:
    return given or settings.edge.cache_dir or settings.data_dir / "edge-node"


# -- core side -------------------------------------------------------------------------------
token_app = typer.Typer(no_args_is_help=True, help="One-time join tokens.")
edge_app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    site: Annotated[str, typer.Option("--site", help="The edge site to admit")],
    ttl: Annotated[int, typer.Option("--ttl", help="Seconds the token stays valid")] = 3600,
    leaf_url: Annotated[
        str | None, typer.Option("--leaf-url", help="The hub's leaf URL as the edge dials it")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Mint a one-time join token for SITE and admit its hub user until the token expires.

    With leaf TLS the token also carries the core's CA and an enrollment certificate for SITE
    that expires with it; the edge swaps it for a certificate of its own key at join.
    """
    from datawave.datasource.cli.core import read_state
    from datawave.datasource.edge.hub import create_token, reload_hub

    settings = load_settings()
    state = read_state(settings) or {}
    url = leaf_url or state.get("nats_leaf_url")
    if not url:
        _fail(
            DatawaveError("no hub leaf URL: start the core with `datawave up` or pass --leaf-url")
        )
    try:
        tls = bool(state.get("nats_leaf_tls")) if leaf_url is None else None
        token, creds = create_token(settings, site, ttl, url, tls=tls)
        if state.get("nats_pid"):
            reload_hub(settings, state)
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json({"token": token, "site": site, "node": creds.node, "expires_in_s": ttl})
        return
    err_console.print(f"join token for site {escape(site)} (node {creds.node}), valid {ttl}s; "
                      "on the edge run: datawave edge join TOKEN")  # fmt: skip
    print(token)


@edge_app.command("list")
def edge_list(json_out: JsonOpt = False) -> None:
    """The fleet: every edge node, its link, lag, queue and version (from the core store)."""
    from datawave.datasource.store import MetadataStore

    settings = load_settings()
    store = MetadataStore.open(settings.resolved_store_url, migrate=False)
    try:
        nodes = store.list_edge_nodes()
    except DatawaveError as exc:
        _fail(exc)
    finally:
        store.close()
    if json_out:
        emit_json(nodes)
        return
    now = time.time()
    rows = [
        (n.site, n.node, n.link_state, n.version,
         f"{now - n.last_heartbeat_at.timestamp():.1f}s ago" if n.last_heartbeat_at else "never",
         n.queue_depth, f"{n.lag_s:.1f}s" if n.lag_s is not None else "", n.applied_seq)
        for n in nodes
    ]  # fmt: skip
    table("edge fleet", ["site", "node", "link", "version", "heartbeat", "queue", "lag", "synced"],
          rows)  # fmt: skip


@edge_app.command("revoke")
def edge_revoke(
    site: Annotated[str, typer.Option("--site", help="The edge site to lock out")],
    json_out: JsonOpt = False,
) -> None:
    """Lock SITE out: forget its hub user, pending tokens and sealing key, mark its nodes left,
    and restart the hub so its open leaf connection drops (other edges reconnect in ~1s)."""
    from datawave.datasource.cli.core import read_state
    from datawave.datasource.edge.hub import issuer_for, restart_hub
    from datawave.datasource.edge.tokens import validate_site
    from datawave.datasource.store import MetadataStore

    settings = load_settings()
    state = read_state(settings) or {}
    try:
        validate_site(site)
        forgot = issuer_for(settings).revoke(site)
        store = MetadataStore.open(settings.resolved_store_url, migrate=False)
        try:
            left = store.mark_edge_left(site)
            key = store.delete_edge_key(site)
            store.append_audit("edge.revoke", principal="system:cli", target=f"site:{site}",
                               detail={"nodes": left, "sealing_key": key})  # fmt: skip
        finally:
            store.close()
        restarted = False
        if state.get("nats_pid"):
            settings.state_file.write_text(json.dumps(restart_hub(settings, state), indent=2))
            restarted = True
    except DatawaveError as exc:
        _fail(exc)
    info = {"site": site, "hub_user_removed": forgot, "nodes_left": left,
            "sealing_key_removed": key, "hub_restarted": restarted}  # fmt: skip
    if json_out:
        emit_json(info)
        return
    console.print(f"revoked edge site {escape(site)}: {left} node(s) left"
                  + ("; hub restarted" if restarted else
                     "; no embedded hub: remove the site's user from your NATS deployment"))  # fmt: skip


# -- edge side -------------------------------------------------------------------------------
@edge_app.command("join")
def edge_join(
    token: str,
    state_dir: StateDirOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds")
    ] = 60.0,
    agent: Annotated[bool, typer.Option(help="Start the agent in the background")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Join the fleet with TOKEN: leaf server, hub link, token redeemed; all or nothing."""
    from datawave.datasource.edge.node import join

    settings = load_settings()
    root = _state_dir(settings, state_dir)
    try:
        info = asyncio.run(join(token, root, timeout_s=timeout,
                                echo=lambda m: err_console.print(escape(m))))  # fmt: skip
    except DatawaveError as exc:
        _fail(exc)
    if agent:
        info["agent_pid"] = _spawn_agent(root)
    if json_out:
        emit_json(info)
        return
    console.print(f"joined site [bold]{escape(info['site'])}[/bold] as node {info['node']}; "
                  f"state in {root}")  # fmt: skip


def _spawn_agent(root: Path) -> int:
    log = open(root / "agent.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "datawave.datasource.edge.run", "--state-dir", str(root)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return proc.pid


@edge_app.command("status")
def edge_status(state_dir: StateDirOpt = None, json_out: JsonOpt = False) -> None:
    """This edge node: hub link, leaf and agent processes, outbox depth."""
    from datawave.datasource.edge.node import node_status

    try:
        info = asyncio.run(node_status(_state_dir(load_settings(), state_dir)))
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(info)
        return
    table(f"edge node {info['node']} (site {info['site']})", ["what", "value"], info.items())
    if info["link"] != "up":
        raise typer.Exit(3)


@edge_app.command("renew")
def edge_renew(
    state_dir: StateDirOpt = None,
    restart_leaf: Annotated[
        bool, typer.Option(help="Start the leaf again here (off when systemd runs it)")
    ] = True,
) -> None:
    """Get a certificate for a new key of this node (the agent also does it on its own once a
    third of the lifetime is left) and restart the leaf with it."""
    from datawave.datasource.edge.node import renew_certificate

    try:
        not_after = asyncio.run(renew_certificate(_state_dir(load_settings(), state_dir),
                                                  restart_leaf=restart_leaf))  # fmt: skip
    except DatawaveError as exc:
        _fail(exc)
    console.print(f"renewed this node's leaf certificate, valid until {not_after:%Y-%m-%d %H:%M}Z")


@edge_app.command("leave")
def edge_leave(
    state_dir: StateDirOpt = None,
    keep_cache: Annotated[bool, typer.Option(help="Keep the LMDB cache for `edge show`")] = False,
) -> None:
    """Stop this node's agent and leaf server and delete its state."""
    from datawave.datasource.edge.node import leave

    try:
        info = leave(_state_dir(load_settings(), state_dir), keep_cache=keep_cache)
    except DatawaveError as exc:
        _fail(exc)
    console.print(f"left site {escape(info['site'])} (node {info['node']})")


@edge_app.command("show")
def edge_show(source: str, state_dir: StateDirOpt = None, json_out: JsonOpt = False) -> None:
    """Cached metadata of SOURCE from this node's LMDB cache; works with the hub unreachable."""
    from datawave.datasource.edge.agent import cached_result
    from datawave.datasource.edge.cache import EdgeCache
    from datawave.datasource.edge.node import NodeFiles

    root = _state_dir(load_settings(), state_dir)
    cache_dir = NodeFiles(root).cache_dir
    if not cache_dir.exists():
        _fail(DatawaveError(f"no edge cache in {root}"))
    try:
        with EdgeCache(cache_dir) as cache:
            hit = cached_result(cache, source)
    except DatawaveError as exc:
        _fail(exc)
    if hit is None:
        _fail(DatawaveError(f"nothing cached for source {source!r} on this edge"))
    if json_out:
        emit_json(hit)
        return
    tables = hit["result"]["tables"]
    table(f"{hit['source']['name']} ({hit['source']['type']}), discovered {hit['at']}",
          ["database", "schema", "table", "kind", "columns", "rows"],
          [(t["database"], t["schema"], t["name"], t["kind"], len(t["columns"]), t.get("row_estimate"))
           for t in tables])  # fmt: skip


@edge_app.command("run")
def edge_run(
    state_dir: StateDirOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Run discoveries on Ray")] = False,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="With --full: attach to this Ray (default: "
                                           "edge.ray_address, else start a local one)"),
    ] = None,
    health_interval: Annotated[
        float | None, typer.Option("--health-interval", help="Seconds between health rounds")
    ] = 60.0,
) -> None:  # fmt: skip
    """Run this node's agent in the foreground (what the systemd unit starts)."""
    from datawave.datasource.edge.node import read_node
    from datawave.datasource.edge.run import run_agent

    logging.basicConfig(level=os.environ.get("DATAWAVE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    settings = load_settings()
    root = _state_dir(settings, state_dir)
    try:
        runner = None
        if full:
            read_node(root)  # not a node: the same error as a light agent's, before Ray starts
            runner = start_ray_runner(root, ray_address or settings.edge.ray_address)
        asyncio.run(run_agent(root, health_interval_s=health_interval, discover_runner=runner,
                              mode="full" if full else "light", environ=os.environ))  # fmt: skip
    except DatawaveError as exc:
        _fail(exc)
    finally:
        if full:
            _stop_ray()


# -- full agents: discoveries on Ray ---------------------------------------------------------
#: The namespace of an edge's Ray jobs (a shared cluster keeps them apart from the core's).
EDGE_RAY_NAMESPACE = "datawave-edge"


def start_ray_runner(root: Path, address: str | None = None) -> Any:
    """Join Ray for a full agent and return its discover runner (an ``edge.agent.DiscoverRunner``).

    With no ``address`` (the default for a site) a local Ray starts now, before the agent:
    single-machine mode (every listener on 127.0.0.1), token auth with a token in
    ``<root>/ray_token`` (0600, made on first use), no dashboard, one CPU left to the agent.
    With ``address`` the agent attaches to that cluster; its token comes from the environment
    (``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN_PATH``) like any Ray client's.

    Raises:
        EdgeError: Ray did not start or the cluster did not answer.
    """
    import ray

    from datawave.datasource.actors.client import apply_ray_auth
    from datawave.datasource.actors.raynet import LOCAL_ONLY_ENV
    from datawave.datasource.errors import EdgeError

    try:
        if address:
            ray.init(address=address, namespace=EDGE_RAY_NAMESPACE, log_to_driver=False)
        else:
            apply_ray_auth({"RAY_AUTH_MODE": "token", LOCAL_ONLY_ENV: "0",
                            "RAY_AUTH_TOKEN_PATH": str(_ray_token(root))})  # fmt: skip
            ray.init(address="local", namespace=EDGE_RAY_NAMESPACE, include_dashboard=False,
                     log_to_driver=False, num_cpus=max(1, (os.cpu_count() or 2) - 1))  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
        what = f"reach Ray at {address}" if address else "start a local Ray"
        raise EdgeError(f"full agent: cannot {what}: {exc}") from exc
    log = logging.getLogger(__name__)
    where = address or "a local Ray (127.0.0.1, token auth)"
    log.info("full agent: discoveries run on %s, node %s", where,
             ray.get_runtime_context().get_node_id())  # fmt: skip
    task = ray.remote(num_cpus=1, max_retries=2)(_discover_task)

    async def runner(type_: str, config: Mapping[str, Any]) -> Any:
        ref = task.remote(type_, dict(config))
        try:
            result = await ref
            log.info("full agent: %s discovery ran as Ray task %s", type_, ref.task_id().hex())
            return result
        except ray.exceptions.RayTaskError as exc:  # the connector's own error, as it raised it
            if isinstance(exc.cause, DatawaveError):
                raise exc.cause from None
            raise EdgeError(
                f"discovery task failed: {type(exc.cause).__name__}: {exc.cause}"
            ) from None
        except ray.exceptions.RayError as exc:  # a worker or the cluster went away
            raise EdgeError(f"Ray could not run the discovery: {type(exc).__name__}") from None

    return runner


def _discover_task(type_: str, config: Mapping[str, Any]) -> Any:
    """Runs in a Ray worker: one connector discovery, in its own event loop."""
    from datawave.datasource.connectors import ConnectorRegistry

    async def go() -> Any:
        async with ConnectorRegistry().create(type_, config) as conn:
            return await conn.discover()

    return asyncio.run(go())


def _ray_token(root: Path) -> Path:
    path = root / "ray_token"
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return path


def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()  # a local Ray stops with it; an attached cluster carries on
