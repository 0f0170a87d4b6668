"""An edge node on disk: ``datawave edge join`` / ``status`` / ``leave`` and the agent runner.

A node's state directory holds::

    node.json       site, node id, hub credentials, leaf ports      (0600)
    sources.json    source definitions sent by the core             (0600, see sources.py)
    nats/           the leaf nats-server's config, log and JetStream store
    cache/          the LMDB cache (snapshots, health, outbox, cursors)
    leaf.pid, agent.pid

Join is all-or-nothing: the token is checked before anything is written; then the leaf
server is started, its link to the hub awaited (bounded, with a status line while it waits),
and the token redeemed by the core over that link. Any refusal or failure stops what was
started and deletes what was created, then raises with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from datawave.datasource.edge.cache import EdgeCache
from datawave.datasource.edge.natsproc import LeafConfig, NatsServer, edge_inbox_prefix
from datawave.datasource.edge.protocol import BadMessage, decode, encode, subject
from datawave.datasource.edge.tokens import EdgeCredentials, parse_unverified
from datawave.datasource.errors import EdgeError, TokenRejected

__all__ = ["NodeFiles", "join", "leaf_server", "leave", "node_status", "read_node"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeFiles:
    root: Path

    @property
    def node_file(self) -> Path:
        return self.root / "node.json"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def sources_file(self) -> Path:
        return self.root / "sources.json"

    @property
    def leaf_pid(self) -> Path:
        return self.root / "leaf.pid"

    @property
    def agent_pid(self) -> Path:
        return self.root / "agent.pid"


def read_node(root: Path | str) -> dict[str, Any]:
    """The joined node's record.

    Raises:
        EdgeError: This directory holds no joined node.
    """
    files = NodeFiles(Path(root))
    try:
        return dict(json.loads(files.node_file.read_text()))
    except FileNotFoundError:
        raise EdgeError(f"no edge node in {files.root}; run `datawave edge join TOKEN`") from None
    except (OSError, ValueError) as exc:
        raise EdgeError(f"cannot read {files.node_file}: {exc}") from exc


def _credentials(node: dict[str, Any]) -> EdgeCredentials:
    return EdgeCredentials(site=node["site"], node=node["node"], user=node["user"],
                           password=node["password"], leaf_url=node["leaf_url"])  # fmt: skip


def leaf_server(root: Path | str, node: dict[str, Any] | None = None) -> NatsServer:
    """The node's leaf server object, with the ports chosen at join."""
    files = NodeFiles(Path(root))
    node = node or read_node(root)
    config = LeafConfig(
        _credentials(node), files.nats_dir / "js", client_port=int(node.get("client_port", 0)),
        http_port=int(node.get("http_port", 0)), reconnect_s=1.0,
    )  # fmt: skip
    return NatsServer(config, files.nats_dir)


async def join(
    token: str,
    root: Path | str,
    *,
    timeout_s: float = 60.0,
    echo: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Join the fleet with a one-time token; see the module docstring.

    Returns:
        The node record (without its password).

    Raises:
        TokenRejected: The token is malformed or expired (nothing was touched), or the core
            refused it (``reason``: signature invalid, already used, ...).
        EdgeError: The hub was not reachable within ``timeout_s``, or this directory is
            already a node.
    """
    parsed = parse_unverified(token)  # refuse a bad token before anything is written
    files = NodeFiles(Path(root))
    if files.node_file.exists():
        site = read_node(files.root).get("site")
        raise EdgeError(
            f"{files.root} is already edge site {site}; run `datawave edge leave` first"
        )
    created_root = not files.root.exists()
    files.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    creds = parsed.credentials
    leaf = NatsServer(LeafConfig(creds, files.nats_dir / "js", reconnect_s=1.0), files.nats_dir)
    try:
        await leaf.start()
        _write_pid(files.leaf_pid, leaf.pid)
        await _wait_for_hub(leaf, creds.leaf_url, timeout_s, echo)
        reply = await _register(leaf, creds.site, creds.node, token, timeout_s, echo)
        if not reply.get("ok"):
            reason = str(reply.get("reason") or "refused")
            raise TokenRejected(str(reply.get("error") or f"join refused: {reason}"), reason=reason)
        EdgeCache(files.cache_dir, node=creds.node).close()  # fixes the node id of the outbox
        config = leaf.config
        assert isinstance(config, LeafConfig)
        node = {
            **creds.to_dict(), "client_port": config.client_port, "http_port": config.http_port,
            "joined_at": time.time(),
        }  # fmt: skip
        _write_private(files.node_file, json.dumps(node, indent=1))
    except BaseException:
        await leaf.stop(grace_s=5.0)
        _rollback(files, created_root)
        raise
    echo(f"joined edge site {creds.site} as node {creds.node}")
    return {k: v for k, v in node.items() if k != "password"}


async def _wait_for_hub(
    leaf: NatsServer, hub: str, timeout_s: float, echo: Callable[[str], None]
) -> None:
    deadline = time.monotonic() + timeout_s
    next_note = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await leaf.leaf_names():
                return
        if "authorization violation" in leaf.log_path.read_text(errors="replace").lower():
            raise TokenRejected(
                "join refused: the hub does not accept this edge's credentials "
                "(the token was forged, revoked or re-issued)", reason="hub refused credentials",
            )  # fmt: skip
        if time.monotonic() >= next_note:
            left = max(0, int(deadline - time.monotonic()))
            echo(f"waiting for the hub at {hub} (retrying; giving up in {left}s)")
            next_note = time.monotonic() + 5.0
        await asyncio.sleep(0.1)
    raise EdgeError(f"hub at {hub} not reachable within {timeout_s:g}s; nothing was changed",
                    url=hub)  # fmt: skip


async def _register(
    leaf: NatsServer, site: str, node: str, token: str, timeout_s: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    nc = await nats.connect(
        leaf.client_url, inbox_prefix=edge_inbox_prefix(site), connect_timeout=5
    )
    try:
        deadline = time.monotonic() + timeout_s
        data = encode({"token": token, "node": node})
        while True:
            try:
                msg = await nc.request(subject(site, "register"), data, timeout=5.0)
                return decode(msg.data, required=("ok",))
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                if time.monotonic() > deadline:
                    raise EdgeError(f"the core did not answer the join within {timeout_s:g}s; "
                                    "is its edge gateway running?") from None  # fmt: skip
                echo("waiting for the core's edge gateway")
                await asyncio.sleep(0.5)
            except BadMessage as exc:
                raise EdgeError(f"the core sent a bad join reply: {exc.reason}") from exc
    finally:
        await nc.close()


def _rollback(files: NodeFiles, created_root: bool) -> None:
    if created_root:
        shutil.rmtree(files.root, ignore_errors=True)
        return
    for path in (files.nats_dir, files.cache_dir):
        shutil.rmtree(path, ignore_errors=True)
    for path in (files.node_file, files.leaf_pid, files.sources_file):
        path.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_pid(path: Path, pid: int | None) -> None:
    if pid is not None:
        path.write_text(str(pid))


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _terminate(path: Path, grace_s: float = 10.0) -> bool:
    pid = _pid(path)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _pid(path) is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _pid(path) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True


def leave(root: Path | str, *, keep_cache: bool = False) -> dict[str, Any]:
    """Stop the agent and the leaf server and delete the node's state (optionally not the cache).

    The core keeps the node in its registry as ``left`` once it is revoked there.
    """
    files = NodeFiles(Path(root))
    node = read_node(files.root)
    stopped = {"agent": _terminate(files.agent_pid), "leaf": _terminate(files.leaf_pid)}
    if keep_cache:
        for path in files.root.iterdir():
            if path != files.cache_dir:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
    else:
        shutil.rmtree(files.root, ignore_errors=True)
    return {"site": node["site"], "node": node["node"], **stopped}


async def node_status(root: Path | str) -> dict[str, Any]:
    """What ``datawave edge status`` shows: link, processes, outbox, sources."""
    files = NodeFiles(Path(root))
    node = read_node(files.root)
    leaf = leaf_server(files.root, node)
    link = "down"
    with contextlib.suppress(Exception):
        link = "up" if await leaf.leaf_names() else "down"
    out: dict[str, Any] = {
        "site": node["site"], "node": node["node"], "hub": node["leaf_url"],
        "leaf_pid": _pid(files.leaf_pid), "agent_pid": _pid(files.agent_pid), "link": link,
        "local_url": f"nats://127.0.0.1:{node.get('client_port')}",
    }  # fmt: skip
    if files.cache_dir.exists():

        def read_cache() -> dict[str, Any]:
            with EdgeCache(files.cache_dir) as cache:
                return {"outbox_depth": cache.outbox_depth(), "acked_seq": cache.outbox_acked()}

        out.update(await asyncio.to_thread(read_cache))
    with contextlib.suppress(OSError, ValueError):
        out["sources"] = len(json.loads(files.sources_file.read_text()).get("sources", []))
    return out
