"""Forged edges against a real core: a hub nats-server whose leaf listener requires TLS with a
client certificate from the core's CA, the in-process gateway with its audit log, and real leaf
nats-servers joined with real tokens.

What must hold: a token with a bad MAC, an expired one or a replayed one is refused with its
reason and an ``edge.join`` audit entry (outcome ``denied``); a leaf with the right user and
password but a certificate from another CA, an expired one or none never gets a link; a joined
edge cannot publish into another site's or the core's subjects nor read another site's
commands; a revoked site cannot come back; a node renews its certificate, a stranger cannot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from datawave.datasource.edge.natsproc import (
    LeafConfig,
    TlsFiles,
    edge_inbox_prefix,
    find_nats_server,
    free_port,
    render_config,
)
from datawave.datasource.edge.node import NodeFiles, join, read_node, renew_certificate
from datawave.datasource.edge.protocol import decode, encode
from datawave.datasource.edge.tls import make_csr, sign_edge_csr
from datawave.datasource.errors import Conflict, TokenRejected
from datawave.datasource.models import SourceSpec
from datawave.datasource.security.certs import CertificateAuthority
from datawave.datasource.security.edgekeys import EdgeSealingKey
from tests.integration.edge.fleet import (  # noqa: F401  (fixture: core)
    CoreSide,
    core_side,
    stop_leaf,
    until,
)

pytestmark = pytest.mark.timeout(240)

RETRYABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError)


async def core_client(core: CoreSide) -> Client:
    user, password = core.hub.core_credentials
    return await nats.connect(core.hub.client_url, user=user, password=password)


async def edge_client(root: Path) -> Client:
    node = read_node(root)
    return await nats.connect(f"nats://127.0.0.1:{node['client_port']}",
                              inbox_prefix=edge_inbox_prefix(node["site"]))  # fmt: skip


def denied_joins(core: CoreSide) -> list[str]:
    entries = core.store.query_audit(action="edge.join")
    return [str(e.detail.get("reason")) for e in entries if e.outcome == "denied"]


def hub_log(core: CoreSide) -> str:
    return core.hub.log_path.read_text(errors="replace")


def _with_payload(token: str, **changes: object) -> str:
    prefix, payload, mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**body, **changes}).encode()).rstrip(b"=")
    return f"{prefix}.{forged.decode()}.{mac}"


# (a) join tokens ---------------------------------------------------------------------------------
async def test_bad_mac_expired_and_replayed_tokens_are_refused_and_audited(
    core: CoreSide, tmp_path: Path
) -> None:
    token = await core.token("A")
    forged = _with_payload(token, exp=4_000_000_000)  # a longer life, the same MAC
    with pytest.raises(TokenRejected) as err:
        await join(forged, tmp_path / "forged", timeout_s=30)
    assert err.value.context["reason"] == "signature invalid"
    assert not (tmp_path / "forged").exists()

    await join(token, tmp_path / "edgeA", timeout_s=30)  # the genuine one, once
    with pytest.raises(TokenRejected) as err:
        await join(token, tmp_path / "replay", timeout_s=30)
    assert err.value.context["reason"] == "already used" and "single-use" in str(err.value)
    assert not (tmp_path / "replay").exists()

    # The edge refuses an expired token itself; a forged edge sends one anyway, over a link it
    # holds (the joined node's), and the core refuses it as well.
    expired, _ = core.issuer.create("A", 1, core.hub.leaf_url, enrollment=core.enrollment)
    await asyncio.sleep(1.1)
    edge = await edge_client(tmp_path / "edgeA")
    try:
        probe = {"seal_key": EdgeSealingKey.generate().public_key, "csr": b"-"}
        for bad in (expired, "dw1.garbage.garbage"):
            msg = await edge.request("dw.edge.A.register", encode({"token": bad, **probe}), 10)
            reply = decode(msg.data)
            assert reply["ok"] is False and reply["reason"] in ("expired", "malformed")
            assert "Traceback" not in reply["error"]
    finally:
        await edge.close()

    assert denied_joins(core) == ["signature invalid", "already used", "expired", "malformed"]
    joined = [e for e in core.store.query_audit(action="edge.join") if e.outcome == "ok"]
    assert len(joined) == 1 and joined[0].principal == "edge:A"
    everything = json.dumps([e.model_dump(mode="json") for e in core.store.query_audit()])
    assert token.split(".")[1][:40] not in everything  # no token material in the log
    assert core.store.verify_audit().ok


# (b) certificates --------------------------------------------------------------------------------
@contextlib.contextmanager
def raw_leaf(tmp_path: Path, config: LeafConfig, drop: tuple[str, ...] = ()) -> Iterator[Path]:
    """A leaf nats-server from a rendered config minus the ``drop`` lines; yields its log."""
    config = replace(config, client_port=free_port(), http_port=free_port())
    text = "\n".join(
        line for line in render_config(config).splitlines() if not line.strip().startswith(drop)
    )
    workdir = tmp_path / f"raw-{config.credentials.node}"
    workdir.mkdir()
    conf, log = workdir / "leaf.conf", workdir / "leaf.log"
    conf.write_text(text)
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(find_nats_server()), "-c", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield log
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_right_password_without_a_certificate_of_the_core_ca_never_connects(
    core: CoreSide, tmp_path: Path
) -> None:
    await join(await core.token("A"), tmp_path / "edgeA", timeout_s=30)
    real = next(e for e in core.issuer.edges() if e.site == "A")  # user + password: valid
    ca_file = NodeFiles(tmp_path / "edgeA").tls.ca_file  # trusts the hub, as the edge does
    rogue = CertificateAuthority.init(tmp_path / "rogue-ca")
    now = dt.datetime.now(dt.UTC)

    def pair(name: str, ca: CertificateAuthority, **sign: object) -> TlsFiles:
        key = tmp_path / f"{name}.key"
        cert = tmp_path / f"{name}.pem"
        cert.write_bytes(sign_edge_csr(ca, make_csr(key, "A"), "A", **sign))  # type: ignore[arg-type]
        return TlsFiles(cert_file=cert, key_file=key, ca_file=ca_file)

    attempts = {
        "other-ca": pair("other-ca", rogue),
        "expired": pair("expired", core.ca, days=1, now=now - dt.timedelta(days=3)),
        "no-cert": pair("no-cert", core.ca),  # its cert and key lines are dropped below
    }
    before = hub_log(core).count("TLS leafnode handshake error")
    for node, tls in attempts.items():
        config = LeafConfig(replace(real, node=node), tmp_path / f"{node}-js", reconnect_s=0.2,
                            tls=tls)  # fmt: skip
        drop = ("cert_file", "key_file") if node == "no-cert" else ()
        with raw_leaf(tmp_path, config, drop):
            await until(lambda n=before: hub_log(core).count("TLS leafnode handshake error") > n + 2,
                        15, f"{node}: refused handshakes")  # fmt: skip
            names = await core.hub.leaf_names()
            assert not any(n.startswith("dw-edge-A-") and n.endswith(node) for n in names), node
        before = hub_log(core).count("TLS leafnode handshake error")
    log = hub_log(core)
    assert "certificate has expired" in log
    assert "client didn't provide a certificate" in log
    assert real.password not in log


# (c) subjects ------------------------------------------------------------------------------------
async def test_a_joined_edge_cannot_reach_other_sites_or_core_subjects(
    core: CoreSide, tmp_path: Path
) -> None:
    await join(await core.token("A"), tmp_path / "edgeA", timeout_s=30)
    await join(await core.token("B"), tmp_path / "edgeB", timeout_s=30)
    hub = await core_client(core)
    a = await edge_client(tmp_path / "edgeA")
    b = await edge_client(tmp_path / "edgeB")
    try:
        forbidden = ["dw.edge.B.sync", "dw.edge.B.heartbeat", "dw.edge.B.cmd", "dw.alerts.down",
                     "dw.core.anything", "_INBOX.edge.B.reply"]  # fmt: skip
        spies = [await hub.subscribe(subj) for subj in forbidden]
        marker = await hub.subscribe("dw.edge.A.marker")
        await hub.flush()

        async def attempt() -> Msg:
            for subj in forbidden:
                await a.publish(subj, b"from A")
            await a.publish("dw.edge.A.marker", b"after")  # the same link, sent after
            await a.flush()
            return await marker.next_msg(timeout=0.2)

        await _eventually(attempt)  # A's own subject arrives: the link carries its traffic ...
        for spy in spies:  # ... and none of the forbidden ones got through
            with pytest.raises(nats.errors.TimeoutError):
                await spy.next_msg(timeout=0.3)
        assert core.gateway.counters["rejected"] == 0  # nothing forged even reached the gateway

        # The core's JetStream API is not reachable from an edge (its own domain answers).
        with pytest.raises(RETRYABLE):
            await a.request("$JS.core.API.INFO", b"", timeout=1.0)

        # A cannot read B's commands; B gets them.
        spy_cmd = await a.subscribe("dw.edge.B.cmd")
        spy_all = await a.subscribe("dw.edge.*.cmd")
        at_b = await b.subscribe("dw.edge.B.cmd")
        await a.flush()
        await b.flush()

        async def to_b() -> Msg:
            await hub.publish("dw.edge.B.cmd", b"for B only")
            await hub.flush()
            return await at_b.next_msg(timeout=0.2)

        assert (await _eventually(to_b)).data == b"for B only"
        with pytest.raises(nats.errors.TimeoutError):
            await spy_cmd.next_msg(timeout=0.5)
        with pytest.raises(nats.errors.TimeoutError):
            await spy_all.next_msg(timeout=0.3)
    finally:
        for client in (a, b, hub):
            await client.close()


async def _eventually(op: object, within: float = 15.0) -> Msg:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await op()  # type: ignore[operator,no-any-return]
        except RETRYABLE:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


# (d) revocation ------------------------------------------------------------------------------------
async def test_a_revoked_site_cannot_reconnect_nor_be_sealed_to(
    core: CoreSide, tmp_path: Path
) -> None:
    await join(await core.token("A"), tmp_path / "edgeA", timeout_s=30)
    await join(await core.token("B"), tmp_path / "edgeB", timeout_s=30)
    leaf_a = read_node(tmp_path / "edgeA")
    name_a = f"dw-edge-A-{leaf_a['node']}"
    name_b = f"dw-edge-B-{read_node(tmp_path / 'edgeB')['node']}"
    await core.hub.wait_for_leaf(name_a)

    # `datawave edge revoke --site A`: user, key and nodes gone, the hub restarted.
    assert core.issuer.revoke("A")
    core.store.mark_edge_left("A")
    assert core.store.delete_edge_key("A")
    await core.hub.update_edges(core.issuer.hub_users())

    await core.hub.wait_for_leaf(name_b, within_s=20)  # B comes back ...
    log_a = NodeFiles(tmp_path / "edgeA").nats_dir / "nats-leaf-A.log"
    refusals = log_a.read_text().count("Authorization Violation")
    await until(lambda: log_a.read_text().count("Authorization Violation") > refusals + 2, 15,
                "A refused again and again")  # fmt: skip
    assert name_a not in await core.hub.leaf_names()  # ... A does not

    spec = SourceSpec(name="pg-a", type="postgresql", edge_site="A",
                      config={"host": "10.0.0.1", "user": "u", "password": "p-revoked"})  # fmt: skip
    with pytest.raises(Conflict, match="edge site A has not joined"):
        core.add_source(spec.name, spec.type, spec.config, "A")


# Renewal -----------------------------------------------------------------------------------------
async def test_a_node_renews_its_certificate_and_a_stranger_cannot(
    core: CoreSide, tmp_path: Path
) -> None:
    root = tmp_path / "edgeA"
    await join(await core.token("A"), root, timeout_s=30)
    await join(await core.token("B"), tmp_path / "edgeB", timeout_s=30)
    files = NodeFiles(root)
    old_cert, old_key = files.tls.cert_file.read_bytes(), files.tls.key_file.read_bytes()

    await renew_certificate(root)
    assert files.tls.cert_file.read_bytes() != old_cert
    assert files.tls.key_file.read_bytes() != old_key  # a new key, made here
    await core.hub.wait_for_leaf(f"dw-edge-A-{read_node(root)['node']}", within_s=20)
    renewed = core.store.query_audit(action="edge.cert.renew")
    assert [(e.principal, e.outcome) for e in renewed] == [("edge:A", "ok")]

    # Site B asks for a certificate naming A's node: refused (and audited).
    b = await edge_client(tmp_path / "edgeB")
    try:
        csr = make_csr(tmp_path / "stranger.key", "B")
        msg = await b.request("dw.edge.B.renew", encode({"node": read_node(root)["node"],
                                                          "csr": csr}), timeout=10)  # fmt: skip
        assert decode(msg.data)["ok"] is False
    finally:
        await b.close()
    denied = [e for e in core.store.query_audit(action="edge.cert.renew") if e.outcome != "ok"]
    assert [(e.principal, e.detail["reason"]) for e in denied] == [
        ("edge:B", "unknown node for this site")
    ]


# The core's commands, without Ray: `datawave up`'s hub, `edge token create`, `edge revoke` -------
def _dw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "datawave.datasource.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


async def test_the_cli_mints_tls_tokens_and_revokes_a_site(tmp_path: Path) -> None:
    import os

    from datawave.datasource.config import load_settings
    from datawave.datasource.edge.hub import build_gateway, start_hub, stop_hub
    from datawave.datasource.store import MetadataStore

    env = {**os.environ, "DATAWAVE_DATA_DIR": str(tmp_path / "core-home")}
    settings = load_settings(data_dir=tmp_path / "core-home")
    MetadataStore.open(settings.resolved_store_url).close()  # migrated, as `datawave up` does
    state = await asyncio.to_thread(start_hub, settings)
    assert state["nats_leaf_tls"] and state["nats_leaf_url"].startswith("tls://127.0.0.1:")
    settings.state_file.write_text(json.dumps(state))
    gateway = build_gateway(settings, state)
    await gateway.start()
    try:
        made = _dw(env, "edge", "token", "create", "--site", "A", "--json")
        assert made.returncode == 0, made.stderr
        await join(json.loads(made.stdout)["token"], tmp_path / "edgeA", timeout_s=30)
        name = f"dw-edge-A-{read_node(tmp_path / 'edgeA')['node']}"
        monitor = f"{state['nats_monitor_url']}/leafz"

        async def linked() -> bool:
            import httpx

            async with httpx.AsyncClient(trust_env=False) as http:
                leafs = (await http.get(monitor, timeout=2)).json().get("leafs") or []
            return any(leaf.get("name") == name for leaf in leafs)

        await until(linked, 15, "the edge's link")
        assert gateway.store.get_edge_key("A") is not None
        leaf_log = NodeFiles(tmp_path / "edgeA").nats_dir / "nats-leaf-A.log"
        refused = leaf_log.read_text().count("Authorization Violation")

        revoked = _dw(env, "edge", "revoke", "--site", "A", "--json")
        assert revoked.returncode == 0, revoked.stderr
        info = json.loads(revoked.stdout)
        assert info["hub_restarted"] and info["nodes_left"] == 1 and info["sealing_key_removed"]
        state = json.loads(settings.state_file.read_text())  # the restarted hub's pid
        await until(lambda: leaf_log.read_text().count("Authorization Violation") > refused + 1,
                    15, "the revoked leaf refused by the restarted hub")  # fmt: skip
        assert not await linked()
        assert gateway.store.get_edge_key("A") is None
        assert [e.action for e in gateway.store.query_audit(action="edge.revoke")] == [
            "edge.revoke"
        ]
    finally:
        await gateway.stop()
        gateway.store.close()
        stop_hub(state)
        await asyncio.to_thread(stop_leaf, tmp_path / "edgeA")
