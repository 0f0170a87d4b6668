"""The core's hub: started by ``datawave up``, re-keyed by ``datawave edge token create``.

The hub is a ``nats-server`` with JetStream and a leaf-node listener (ports from
``settings.nats``; 0 picks free ones, recorded in the core state file). It runs in its own
session so it outlives the ``datawave up`` command; ``datawave down`` stops it by pid. With
``settings.nats.url`` set, an existing NATS deployment is used instead and nothing is
started; its operator then adds edge users (see docs/edge.md).

Files under ``<data_dir>/hub``: the rendered config and log, ``js/`` (JetStream),
``core.secret`` (the core user's password, 0600), ``join.key`` and ``joins.json`` (the token
issuer's key and its record of issued and redeemed tokens), ``tls/`` (the leaf listener's
certificate). With ``settings.nats.leaf_tls`` (the default) the CA in ``<data_dir>/ca`` (the
one ``datawave certs`` manages; created here if missing) signs the hub's certificate, the
enrollment certificates join tokens carry, and every edge's own certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from datawave.datasource.config import DatawaveSettings
from datawave.datasource.edge.gateway import EdgeGateway
from datawave.datasource.edge.natsproc import HubConfig, NatsServer, TlsFiles, render_config
from datawave.datasource.edge.tls import (
    CsrSigner,
    ensure_hub_certificate,
    issue_enrollment,
    sign_edge_csr,
)
from datawave.datasource.edge.tokens import EdgeCredentials, TokenIssuer
from datawave.datasource.errors import EdgeError
from datawave.datasource.models import Event
from datawave.datasource.security.certs import CertificateAuthority
from datawave.datasource.store import EdgeNode, MetadataStore

__all__ = [
    "build_gateway",
    "ca_dir",
    "create_token",
    "csr_signer",
    "hub_dir",
    "issuer_for",
    "leaf_tls",
    "reload_hub",
    "restart_hub",
    "start_hub",
    "stop_hub",
]

log = logging.getLogger(__name__)


def hub_dir(settings: DatawaveSettings) -> Path:
    return settings.data_dir / "hub"


def issuer_for(settings: DatawaveSettings) -> TokenIssuer:
    root = hub_dir(settings)
    return TokenIssuer(root / "join.key", root / "joins.json")


def ca_dir(settings: DatawaveSettings) -> Path:
    """The core's CA (the one ``datawave certs`` manages)."""
    return settings.data_dir / "ca"


def _ca(settings: DatawaveSettings, *, create: bool = False) -> CertificateAuthority:
    directory = ca_dir(settings)
    if create and not (directory / "ca.pem").exists():
        log.info("creating the core's CA in %s (leaf TLS)", directory)
        return CertificateAuthority.init(directory)
    return CertificateAuthority.load(directory)


def leaf_tls(settings: DatawaveSettings) -> TlsFiles | None:
    """The hub's leaf-listener TLS files (issued on first use), or None without leaf TLS."""
    if not settings.nats.leaf_tls:
        return None
    hosts = {"127.0.0.1", "localhost"}
    if settings.nats.host not in ("0.0.0.0", "::", ""):
        hosts.add(settings.nats.host)
    return ensure_hub_certificate(_ca(settings, create=True), hub_dir(settings) / "tls",
                                  sorted(hosts))  # fmt: skip


def create_token(
    settings: DatawaveSettings, site: str, ttl_s: int, leaf_url: str, *,
    tls: bool | None = None,
) -> tuple[str, EdgeCredentials]:  # fmt: skip
    """Mint a join token; with leaf TLS it carries the CA and an enrollment certificate.

    Args:
        tls: Whether the hub's leaf listener requires TLS; by default from the URL scheme.
    """
    with_tls = leaf_url.startswith("tls://") if tls is None else tls
    enroll = partial(issue_enrollment, _ca(settings)) if with_tls else None
    return issuer_for(settings).create(site, ttl_s, leaf_url, enrollment=enroll)


def csr_signer(settings: DatawaveSettings) -> CsrSigner:
    """Signs edges' certificate requests with the core's CA (``nats.edge_cert_days``)."""
    ca = _ca(settings)
    days = settings.nats.edge_cert_days

    def sign(site: str, csr: bytes) -> bytes:
        return sign_edge_csr(ca, csr, site, days=days)

    return sign


def _core_password(settings: DatawaveSettings) -> str:
    path = hub_dir(settings) / "core.secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
        return path.read_text().strip()


def _hub_config(settings: DatawaveSettings, ports: dict[str, Any] | None = None) -> HubConfig:
    config = HubConfig.from_settings(
        settings.nats, store_dir=hub_dir(settings) / "js",
        core_password=_core_password(settings), edges=issuer_for(settings).hub_users(),
        leaf_tls=leaf_tls(settings),
    )  # fmt: skip
    if ports:
        from dataclasses import replace

        config = replace(config, client_port=int(ports["nats_client_port"]),
                         leaf_port=int(ports["nats_leaf_port"]),
                         http_port=int(ports["nats_http_port"]))  # fmt: skip
    return config


def start_hub(settings: DatawaveSettings) -> dict[str, Any]:
    """Start the embedded hub (or adopt ``settings.nats.url``); returns the state-file keys."""
    if settings.nats.url:
        return {"nats_url": settings.nats.url, "nats_embedded": False}
    server = NatsServer(_hub_config(settings), hub_dir(settings))
    _run(server.start())
    config = server.config
    assert isinstance(config, HubConfig)
    return {
        "nats_embedded": True,
        "nats_pid": server.pid,
        "nats_url": server.client_url,
        "nats_leaf_url": server.leaf_url,
        "nats_monitor_url": server.monitor_url,
        "nats_client_port": config.client_port,
        "nats_leaf_port": config.leaf_port,
        "nats_http_port": config.http_port,
        "nats_leaf_tls": config.leaf_tls is not None,
    }


def restart_hub(settings: DatawaveSettings, state: dict[str, Any]) -> dict[str, Any]:
    """Stop the embedded hub and start it again on the same ports with the current users:
    what drops a revoked edge (a reload would keep its open leaf connection).

    Returns:
        The state-file keys of the new process.

    Raises:
        EdgeError: No embedded hub runs.
    """
    if not state.get("nats_pid"):
        raise EdgeError("no embedded hub: remove the edge's user from your NATS deployment")
    stop_hub(state)
    server = NatsServer(_hub_config(settings, state), hub_dir(settings))
    _run(server.start())
    return {**state, "nats_pid": server.pid}


def _run(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even under a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def stop_hub(state: dict[str, Any], grace_s: float = 10.0) -> bool:
    """Stop the embedded hub recorded in ``state``; idempotent."""
    pid = int(state.get("nats_pid") or 0)
    if not pid:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    return True


def reload_hub(
    settings: DatawaveSettings, state: dict[str, Any], *, timeout_s: float = 10.0
) -> None:
    """Re-render the hub config with the current edge users and make the running hub load it.

    Raises:
        EdgeError: No embedded hub runs, the config does not parse, or it was not loaded.
    """
    pid = int(state.get("nats_pid") or 0)
    if not pid:
        raise EdgeError(
            "no embedded hub: with settings.nats.url, add the edge's user to your NATS "
            "deployment (docs/edge.md)"
        )
    server = NatsServer(_hub_config(settings, state), hub_dir(settings))
    text = render_config(server.config)
    server._check_syntax(text)  # same package: a bad render never replaces a working one
    monitor = f"{state['nats_monitor_url']}/varz"
    before = httpx.get(monitor, timeout=2, trust_env=False).json().get("config_load_time")
    tmp = server.config_path.with_name(server.config_path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, server.config_path)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        with contextlib.suppress(httpx.HTTPError):
            if (
                httpx.get(monitor, timeout=2, trust_env=False).json().get("config_load_time")
                != before
            ):
                return
    raise EdgeError("the hub did not reload its config in time", pid=pid)


def build_gateway(
    settings: DatawaveSettings,
    state: dict[str, Any],
    *,
    sink: Callable[[Event], None] | None = None,
    on_fleet_change: Callable[[list[EdgeNode]], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> EdgeGateway:
    """The core's gateway for this deployment: what the Ray actor hosts.

    ``environ`` is the hosting process's environment (an ``env`` key-encryption key).
    """
    store = MetadataStore.open(settings.resolved_store_url, migrate=False)
    store.attach_keyring(settings, environ=environ or {})  # proven to open the stored secrets
    embedded = bool(state.get("nats_embedded", True)) and not settings.nats.url
    return EdgeGateway(
        store, issuer_for(settings), str(state["nats_url"]),
        user="core" if embedded else None,
        password=_core_password(settings) if embedded else None,
        sink=sink, on_fleet_change=on_fleet_change,
        cert_signer=csr_signer(settings) if embedded and state.get("nats_leaf_tls") else None,
    )  # fmt: skip
