"""A real core side (hub nats-server with leaf TLS, metadata store, in-process EdgeGateway, the
core's CA) and real edge nodes (leaf nats-servers, agents as separate processes), for the edge
fleet tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.edge import HubConfig, NatsServer, TokenIssuer
from datawave.datasource.edge.gateway import EdgeGateway
from datawave.datasource.edge.node import NodeFiles, join, read_node
from datawave.datasource.edge.tls import ensure_hub_certificate, issue_enrollment, sign_edge_csr
from datawave.datasource.edge.tokens import Enrollment
from datawave.datasource.engines import SourceService
from datawave.datasource.models import Event, SourceRecord, SourceSpec
from datawave.datasource.security.certs import CertificateAuthority
from datawave.datasource.store import AesGcmSealer, MetadataStore, load_kek

T = TypeVar("T")


@dataclass
class CoreSide:
    root: Path
    store: MetadataStore
    hub: NatsServer
    issuer: TokenIssuer
    gateway: EdgeGateway
    ca: CertificateAuthority
    events: list[Event] = field(default_factory=list)

    def enrollment(self, site: str, expires_at: int) -> Enrollment:
        return issue_enrollment(self.ca, site, expires_at)

    async def token(self, site: str, ttl_s: int = 600) -> str:
        """`datawave edge token create`: mint, add the hub user, reload the hub."""
        token, _ = self.issuer.create(site, ttl_s, self.hub.leaf_url, enrollment=self.enrollment)
        await self.hub.update_edges(self.issuer.hub_users())
        return token

    def add_source(self, name: str, type_: str, config: dict[str, Any], site: str) -> SourceRecord:
        svc = SourceService(self.store, ConnectorRegistry(), shards=1)
        return svc.register(SourceSpec(name=name, type=type_, config=config, edge_site=site))

    def synthetic_rids(self) -> Counter[str]:
        return Counter(e.data["rid"] for e in self.events if e.type == "synthetic")


async def start_core(root: Path) -> CoreSide:
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    store = MetadataStore.open(
        f"sqlite:///{root / 'core.db'}", sealer=AesGcmSealer(load_kek(root / "kek", create=True))
    )
    ca = await asyncio.to_thread(CertificateAuthority.init, root / "ca")
    tls = await asyncio.to_thread(
        ensure_hub_certificate, ca, root / "hub-tls", ["127.0.0.1", "localhost"]
    )
    hub = NatsServer(
        HubConfig(store_dir=root / "hub-js", core_password=secrets.token_urlsafe(18), leaf_tls=tls),
        root / "hub",
    )
    await hub.start()
    issuer = TokenIssuer(root / "join.key", root / "joins.json")
    events: list[Event] = []
    user, password = hub.core_credentials
    gateway = EdgeGateway(store, issuer, hub.client_url, user=user, password=password,
                          sink=events.append, offline_after_s=2.0,
                          cert_signer=lambda site, csr: sign_edge_csr(ca, csr, site))  # fmt: skip
    await gateway.start()
    return CoreSide(root, store, hub, issuer, gateway, ca, events)


async def stop_core(core: CoreSide) -> None:
    await core.gateway.stop()
    await core.hub.stop()
    core.store.close()


async def join_site(core: CoreSide, site: str, root: Path) -> dict[str, Any]:
    return await join(await core.token(site), root, timeout_s=30)


class AgentProcess:
    """``python -m datawave.datasource.edge.run`` as a child process (no Ray in it)."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root.with_name(root.name + "-agent.log")

    def start(self) -> AgentProcess:
        cmd = [sys.executable, "-m", "datawave.datasource.edge.run", "--state-dir", str(self.root),
               "--heartbeat-s", "0.2", *self.args]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "DATAWAVE_LOG_LEVEL": "INFO"})  # fmt: skip
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def stop_leaf(root: Path) -> None:
    pid_file = NodeFiles(root).leaf_pid
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # a leaf we started: reap it
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def node_id(root: Path) -> str:
    return str(read_node(root)["node"])


async def until(
    check: Callable[[], Any], within: float = 30.0, what: str = "condition", step: float = 0.1
) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within:g}s")
        await asyncio.sleep(step)


# -- fixtures shared by the edge test modules (import them by these names) ----------------------


@pytest.fixture(name="core")
async def core_side(tmp_path: Path) -> AsyncIterator[CoreSide]:
    """A real core side in ``tmp_path/core``; leaf servers the test left behind are stopped."""
    side = await start_core(tmp_path / "core")
    try:
        yield side
    finally:
        await stop_core(side)
        # Leaf servers outlive a join by design: stop the ones the test left behind.
        for pid_file in await asyncio.to_thread(lambda: list(tmp_path.glob("*/leaf.pid"))):
            await asyncio.to_thread(stop_leaf, pid_file.parent)


@pytest.fixture(name="agents")
def agent_processes() -> Iterator[list[AgentProcess]]:
    """Agent processes a test starts; stopped at the end."""
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.stop()
