"""An edge node on disk: ``datawave edge join`` / ``status`` / ``leave`` and the agent runner.

A node's state directory holds::

    node.json       site, node id, hub credentials, leaf ports      (0600)
    sources.json    source definitions sent by the core             (0600, see sources.py)
    keys/seal.key   the node's X25519 sealing key                   (0600, never leaves)
    tls/            ca.pem, edge.pem, edge.key (0600, generated here, never leaves)
    nats/           the leaf nats-server's config, log and JetStream store
    cache/          the LMDB cache (snapshots, health, outbox, cursors)
    leaf.pid, agent.pid

Join is all-or-nothing: the token is checked before anything is written; then the node's
sealing key is generated, the leaf server started (over TLS with the token's enrollment
certificate when the hub requires it), its link to the hub awaited (bounded, with a status
line while it waits), and the token redeemed by the core over that link, together with the
sealing public key and a CSR for the node's own TLS key. The core's reply carries the signed
certificate; the leaf restarts with it and the enrollment files are deleted. Any refusal or
failure stops what was started and deletes what was created, then raises with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats

from datawave.datasource.edge.cache import EdgeCache
from datawave.datasource.edge.natsproc import LeafConfig, NatsServer, TlsFiles, edge_inbox_prefix
from datawave.datasource.edge.protocol import BadMessage, decode, encode, subject
from datawave.datasource.edge.tls import (
    accept_certificate,
    certificate_not_after,
    make_csr,
    write_enrollment,
)
from datawave.datasource.edge.tokens import EdgeCredentials, parse_unverified
from datawave.datasource.errors import EdgeError, TokenRejected
from datawave.datasource.security.edgekeys import EdgeSealingKey

__all__ = [
    "NodeFiles",
    "join",
    "leaf_server",
    "leave",
    "node_status",
    "read_node",
    "renew_certificate",
    "sealing_key",
]

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
    def seal_key(self) -> Path:
        return self.root / "keys" / "seal.key"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def tls(self) -> TlsFiles:
        """The node's own certificate and key, and the core's CA."""
        d = self.tls_dir
        return TlsFiles(cert_file=d / "edge.pem", key_file=d / "edge.key", ca_file=d / "ca.pem")

    @property
    def enrollment_tls(self) -> TlsFiles:
        """The token's enrollment pair: used only until the core signed the node's own."""
        d = self.tls_dir
        return TlsFiles(cert_file=d / "enroll.pem", key_file=d / "enroll.key",
                        ca_file=d / "ca.pem")  # fmt: skip

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
        tls=files.tls if node.get("tls") else None,
    )  # fmt: skip
    return NatsServer(config, files.nats_dir)


def sealing_key(root: Path | str) -> EdgeSealingKey:
    """The node's sealing key: what opens the secrets the core sealed to this site.

    Raises:
        EdgeError: The node has none (it joined before edge sealing: re-join).
    """
    return EdgeSealingKey.load(NodeFiles(Path(root)).seal_key)


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
    leaf = None
    try:
        shutil.rmtree(files.tls_dir, ignore_errors=True)  # leftovers of an interrupted join
        files.seal_key.unlink(missing_ok=True)
        seal = EdgeSealingKey.load_or_create(files.seal_key)
        request: dict[str, Any] = {"token": token, "node": creds.node,
                                   "seal_key": seal.public_key}  # fmt: skip
        tls = None
        if parsed.enrollment is not None:
            enroll = files.enrollment_tls
            tls = write_enrollment(parsed.enrollment, ca_file=enroll.ca_file,
                                   cert_file=enroll.cert_file, key_file=enroll.key_file)  # fmt: skip
            request["csr"] = make_csr(files.tls.key_file, creds.site)
        leaf = NatsServer(LeafConfig(creds, files.nats_dir / "js", reconnect_s=1.0, tls=tls),
                          files.nats_dir)  # fmt: skip
        await leaf.start()
        _write_pid(files.leaf_pid, leaf.pid)
        await _wait_for_hub(leaf, creds.leaf_url, timeout_s, echo)
        reply = await _register(leaf, creds.site, request, timeout_s, echo)
        if not reply.get("ok"):
            reason = str(reply.get("reason") or "refused")
            raise TokenRejected(str(reply.get("error") or f"join refused: {reason}"), reason=reason)
        if tls is not None:
            leaf = await _switch_to_own_certificate(leaf, files, reply, timeout_s, echo)
        EdgeCache(files.cache_dir, node=creds.node).close()  # fixes the node id of the outbox
        config = leaf.config
        assert isinstance(config, LeafConfig)
        node = {
            **creds.to_dict(), "client_port": config.client_port, "http_port": config.http_port,
            "joined_at": time.time(), "tls": tls is not None, "seal_key_id": seal.key_id,
        }  # fmt: skip
        _write_private(files.node_file, json.dumps(node, indent=1))
    except BaseException:
        if leaf is not None:
            await leaf.stop(grace_s=5.0)
        _rollback(files, created_root)
        raise
    echo(f"joined edge site {creds.site} as node {creds.node}")
    return {k: v for k, v in node.items() if k != "password"}


async def _switch_to_own_certificate(
    leaf: NatsServer, files: NodeFiles, reply: dict[str, Any], timeout_s: float,
    echo: Callable[[str], None],
) -> NatsServer:  # fmt: skip
    """Install the certificate the core signed for our key and restart the leaf with it; the
    enrollment pair (whose key came in the token) is deleted and never used again."""
    cert = reply.get("cert")
    if not isinstance(cert, bytes):
        raise EdgeError("the core accepted the join but signed no certificate for this edge")
    own = files.tls
    accept_certificate(cert, own.key_file, own.ca_file, own.cert_file)
    config = leaf.config
    assert isinstance(config, LeafConfig)
    await leaf.stop(grace_s=5.0)
    for path in (files.enrollment_tls.cert_file, files.enrollment_tls.key_file):
        path.unlink(missing_ok=True)
    leaf = NatsServer(replace(config, tls=own), files.nats_dir)
    await leaf.start()
    _write_pid(files.leaf_pid, leaf.pid)
    await _wait_for_hub(leaf, config.credentials.leaf_url, timeout_s, echo)
    return leaf


async def _wait_for_hub(
    leaf: NatsServer, hub: str, timeout_s: float, echo: Callable[[str], None]
) -> None:
    deadline = time.monotonic() + timeout_s
    next_note = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await leaf.leaf_names():
                return
        text = leaf.log_path.read_text(errors="replace")
        if "x509:" in text:  # the edge does not trust the hub's certificate
            detail = text[text.index("x509:") :].splitlines()[0][:200]
            raise EdgeError(f"TLS with the hub at {hub} failed: {detail}", url=hub)
        if "authorization violation" in text.lower():
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
    leaf: NatsServer, site: str, request: dict[str, Any], timeout_s: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    nc = await nats.connect(
        leaf.client_url, inbox_prefix=edge_inbox_prefix(site), connect_timeout=5
    )
    try:
        deadline = time.monotonic() + timeout_s
        data = encode(request)
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


async def renew_certificate(
    root: Path | str, *, restart_leaf: bool = True, timeout_s: float = 30.0
) -> dt.datetime:
    """Get a new certificate for a new key of this node, over the current link.

    The new key is generated here; the core signs its CSR if the node is still in its fleet.
    The pair replaces the old one only once the certificate checks out, then the leaf server is
    stopped so it dials with the new pair: started again here with ``restart_leaf``, or by its
    supervisor (systemd's ``Restart=always``) without.

    Returns:
        When the new certificate expires.

    Raises:
        EdgeError: No TLS on this node's link, no answer, or the core refused.
    """
    files = NodeFiles(Path(root))
    node = read_node(files.root)
    if not node.get("tls"):
        raise EdgeError("this node's link to the hub has no TLS: there is no certificate to renew")
    own = files.tls
    new_key = own.key_file.with_name("edge.key.new")
    new_cert = own.cert_file.with_name("edge.pem.new")
    new_key.unlink(missing_ok=True)
    csr = await asyncio.to_thread(make_csr, new_key, node["site"])
    site = node["site"]
    nc = await nats.connect(f"nats://127.0.0.1:{node['client_port']}",
                            inbox_prefix=edge_inbox_prefix(site), connect_timeout=5)  # fmt: skip
    try:
        msg = await nc.request(subject(site, "renew"), encode({"node": node["node"], "csr": csr}),
                               timeout=timeout_s)  # fmt: skip
        reply = decode(msg.data, required=("ok",))
    except (nats.errors.Error, BadMessage) as exc:
        new_key.unlink(missing_ok=True)
        raise EdgeError(f"certificate renewal got no valid answer from the core: {exc}") from exc
    finally:
        await nc.close()
    if not reply["ok"] or not isinstance(reply.get("cert"), bytes):
        new_key.unlink(missing_ok=True)
        raise EdgeError(str(reply.get("error") or "the core refused to renew the certificate"))
    accept_certificate(reply["cert"], new_key, own.ca_file, new_cert)
    os.replace(new_key, own.key_file)
    os.replace(new_cert, own.cert_file)
    not_after = certificate_not_after(own.cert_file)
    assert not_after is not None
    await asyncio.to_thread(_terminate, files.leaf_pid)
    if restart_leaf:
        leaf = leaf_server(files.root, node)
        await leaf.start()
        _write_pid(files.leaf_pid, leaf.pid)
    log.info("edge %s: renewed the leaf certificate, valid until %s", site, not_after)
    return not_after


def _rollback(files: NodeFiles, created_root: bool) -> None:
    if created_root:
        shutil.rmtree(files.root, ignore_errors=True)
        return
    for path in (files.nats_dir, files.cache_dir, files.tls_dir, files.seal_key.parent):
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
        "tls": bool(node.get("tls")), "seal_key_id": node.get("seal_key_id"),
    }  # fmt: skip
    if node.get("tls"):
        not_after = certificate_not_after(files.tls.cert_file)
        out["cert_expires_at"] = not_after.isoformat() if not_after else None
    if files.cache_dir.exists():

        def read_cache() -> dict[str, Any]:
            with EdgeCache(files.cache_dir) as cache:
                return {"outbox_depth": cache.outbox_depth(), "acked_seq": cache.outbox_acked()}

        out.update(await asyncio.to_thread(read_cache))
    with contextlib.suppress(OSError, ValueError):
        out["sources"] = len(json.loads(files.sources_file.read_text()).get("sources", []))
    return out
