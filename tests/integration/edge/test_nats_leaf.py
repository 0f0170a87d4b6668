"""A real hub and real leaf nats-servers on free loopback ports, joined with real tokens.

What must hold: an edge talks to the core on ``dw.edge.<site>.>`` (request/reply both ways,
pub/sub), never reaches another edge's subjects or inboxes, cannot log in with a wrong password,
cannot use its credentials as a client of the hub, and reconnects by itself after the hub dies.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from datawave.datasource.edge import (
    EdgeCredentials,
    HubConfig,
    LeafConfig,
    NatsServer,
    TokenIssuer,
    edge_inbox_prefix,
    parse_unverified,
)

pytestmark = pytest.mark.timeout(240)

T = TypeVar("T")
RETRYABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError)


@dataclass
class Fleet:
    root: Path
    hub: NatsServer
    issuer: TokenIssuer
    leaves: dict[str, NatsServer]


async def start_hub(root: Path) -> NatsServer:
    hub = NatsServer(
        HubConfig(store_dir=root / "hub-js", core_password=secrets.token_urlsafe(18)), root / "hub"
    )
    await hub.start()
    return hub


async def join(root: Path, hub: NatsServer, issuer: TokenIssuer, site: str) -> NatsServer:
    """What `datawave edge token create` + `datawave edge join` will do, minus the CLI."""
    token, _ = issuer.create(site, 600, hub.leaf_url)
    creds = parse_unverified(token).credentials  # on the edge: checked before anything runs
    issuer.redeem(token)  # on the core: one-time, signature, expiry
    await hub.update_edges(issuer.edges())  # the hub learns the new leaf user (SIGHUP reload)
    leaf = NatsServer(
        LeafConfig(creds, root / f"leaf-{site}-js", reconnect_s=0.5), root / f"leaf-{site}"
    )
    await leaf.start()
    await hub.wait_for_leaf(leaf_name(leaf))
    return leaf


def leaf_name(leaf: NatsServer) -> str:
    assert isinstance(leaf.config, LeafConfig)
    return leaf.config.server_name


async def core_client(hub: NatsServer) -> Client:
    user, password = hub.core_credentials
    return await nats.connect(hub.client_url, user=user, password=password, connect_timeout=5)


async def edge_client(leaf: NatsServer) -> Client:
    assert isinstance(leaf.config, LeafConfig)
    return await nats.connect(
        leaf.client_url, inbox_prefix=edge_inbox_prefix(leaf.config.site), connect_timeout=5
    )


async def eventually(op: Callable[[], Awaitable[T]], within: float = 15.0) -> T:
    """Retry while subject interest propagates across the leaf link."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await op()
        except RETRYABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def publish_until_received(
    pub: Client, subject: str, sub: Subscription, within: float = 15.0
) -> Msg:
    async def once() -> Msg:
        await pub.publish(subject, b"probe")
        await pub.flush()
        return await sub.next_msg(timeout=0.2)

    return await eventually(once, within)


async def nothing_on(sub: Subscription, wait: float = 0.5) -> bool:
    try:
        msg = await sub.next_msg(timeout=wait)
    except nats.errors.TimeoutError:
        return True
    pytest.fail(f"unexpected message on {msg.subject}: {msg.data!r}")


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    issuer = TokenIssuer(root / "join.key", root / "joins.json")
    hub = await start_hub(root)
    leaves: dict[str, NatsServer] = {}
    try:
        for site in ("A", "B"):
            leaves[site] = await join(root, hub, issuer, site)
        yield Fleet(root, hub, issuer, leaves)
    finally:
        for leaf in leaves.values():
            await leaf.stop()
        await hub.stop()


async def test_edge_and_core_talk_on_the_edge_subjects(fleet: Fleet) -> None:
    core = await core_client(fleet.hub)
    a = await edge_client(fleet.leaves["A"])
    try:

        async def pong(msg: Msg) -> None:
            await msg.respond(b"pong:" + msg.data)

        async def status(msg: Msg) -> None:
            await msg.respond(b"edge A ok")

        await core.subscribe("dw.edge.A.ping", cb=pong)
        await a.subscribe("dw.edge.A.cmd.status", cb=status)
        await core.flush()
        await a.flush()

        # edge -> core and core -> edge request/reply
        reply = await eventually(lambda: a.request("dw.edge.A.ping", b"1", timeout=0.5))
        assert reply.data == b"pong:1"
        reply = await eventually(lambda: core.request("dw.edge.A.cmd.status", b"", timeout=0.5))
        assert reply.data == b"edge A ok"

        # pub/sub both ways
        at_core = await core.subscribe("dw.edge.A.health.>")
        at_edge = await a.subscribe("dw.edge.A.sync.>")
        msg = await publish_until_received(a, "dw.edge.A.health.pg1", at_core)
        assert msg.subject == "dw.edge.A.health.pg1"
        msg = await publish_until_received(core, "dw.edge.A.sync.cursor", at_edge)
        assert msg.subject == "dw.edge.A.sync.cursor"
    finally:
        await a.close()
        await core.close()


async def test_an_edge_cannot_publish_into_another_edges_subjects(fleet: Fleet) -> None:
    core = await core_client(fleet.hub)
    a = await edge_client(fleet.leaves["A"])
    try:
        intrusions = await core.subscribe("dw.edge.B.>")
        marker = await core.subscribe("dw.edge.A.marker")
        await core.flush()

        async def attempt() -> Msg:
            await a.publish("dw.edge.B.cmd.wipe", b"from A")
            await a.publish("dw.edge.A.marker", b"after")  # same link, sent after the intrusion
            await a.flush()
            return await marker.next_msg(timeout=0.2)

        await eventually(attempt)  # A's own traffic arrives, so the link is up ...
        assert await nothing_on(intrusions)  # ... and B's subject got nothing from A

        # Nor can A call a service that B offers.
        b = await edge_client(fleet.leaves["B"])
        try:

            async def wipe(msg: Msg) -> None:
                await msg.respond(b"wiped")

            await b.subscribe("dw.edge.B.svc.wipe", cb=wipe)
            await b.flush()
            reply = await eventually(lambda: core.request("dw.edge.B.svc.wipe", b"", timeout=0.5))
            assert reply.data == b"wiped"  # the service is reachable from the core
            with pytest.raises(RETRYABLE):
                await a.request("dw.edge.B.svc.wipe", b"", timeout=1.0)
        finally:
            await b.close()
    finally:
        await a.close()
        await core.close()


async def test_an_edge_cannot_subscribe_to_another_edges_subjects_or_inboxes(
    fleet: Fleet,
) -> None:
    core = await core_client(fleet.hub)
    a = await edge_client(fleet.leaves["A"])
    b = await edge_client(fleet.leaves["B"])
    try:
        spy_b = await a.subscribe("dw.edge.B.>")
        spy_all = await a.subscribe("dw.edge.>")
        spy_inbox = await a.subscribe("_INBOX.>")
        own = await a.subscribe("dw.edge.A.notice")
        at_b = await b.subscribe("dw.edge.B.notice")
        await a.flush()
        await b.flush()

        async def both() -> Msg:
            await core.publish("dw.edge.B.notice", b"for B only")
            await core.publish("dw.edge.A.notice", b"for A")
            await core.flush()
            return await own.next_msg(timeout=0.2)

        await eventually(both)
        assert (await at_b.next_msg(timeout=5)).data == b"for B only"  # it exists, for B

        # B asks the core something; the reply goes to B's inbox, which A cannot see.
        async def answer(msg: Msg) -> None:
            await msg.respond(b"secret answer for B")

        await core.subscribe("dw.edge.B.ask", cb=answer)
        await core.flush()
        reply = await eventually(lambda: b.request("dw.edge.B.ask", b"?", timeout=0.5))
        assert reply.data == b"secret answer for B"
        assert reply.subject.startswith("_INBOX.edge.B.")

        assert await nothing_on(spy_b)
        assert await nothing_on(spy_inbox)
        while True:  # the broad spy only ever sees A's own subjects
            try:
                seen = await spy_all.next_msg(timeout=0.3)
            except nats.errors.TimeoutError:
                break
            assert seen.subject.startswith("dw.edge.A.")
    finally:
        await b.close()
        await a.close()
        await core.close()


async def test_edge_credentials_do_not_open_client_connections(fleet: Fleet) -> None:
    edge = next(e for e in fleet.issuer.edges() if e.site == "A")
    with pytest.raises(nats.errors.Error):
        await nats.connect(
            fleet.hub.client_url,
            user=edge.user,
            password=edge.password,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )


async def test_a_leaf_with_a_wrong_password_never_connects(fleet: Fleet) -> None:
    real = next(e for e in fleet.issuer.edges() if e.site == "A")
    bad = replace(real, node="intruder", password="guessed-" + secrets.token_urlsafe(12))
    leaf = NatsServer(
        LeafConfig(bad, fleet.root / "intruder-js", reconnect_s=0.2), fleet.root / "intruder"
    )
    async with leaf:
        await asyncio.sleep(2.0)  # ~10 attempts
        assert leaf_name(leaf) not in await fleet.hub.leaf_names()
        assert await leaf.leaf_names() == set()
        assert "Authorization Violation" in leaf.log_path.read_text()
    assert bad.password not in leaf.log_path.read_text()
    assert leaf_name(fleet.leaves["A"]) in await fleet.hub.leaf_names()  # the real A stays


async def test_the_leaf_reconnects_after_the_hub_is_killed_and_restarted(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path / "join.key", tmp_path / "joins.json")
    hub = await start_hub(tmp_path)
    try:
        leaf = await join(tmp_path, hub, issuer, "R")
        async with leaf:
            a = await edge_client(leaf)  # the edge's local client never notices the outage
            try:
                client_port = hub.config.client_port
                await hub.kill()
                assert leaf_name(leaf) not in await _names_or_empty(leaf, hub)
                await asyncio.sleep(1.0)  # the leaf retries against a closed port
                await hub.start()
                assert hub.config.client_port == client_port  # same ports after restart
                await hub.wait_for_leaf(leaf_name(leaf), within_s=20)

                core = await core_client(hub)
                try:
                    at_core = await core.subscribe("dw.edge.R.after")
                    msg = await publish_until_received(a, "dw.edge.R.after", at_core)
                    assert msg.subject == "dw.edge.R.after"
                finally:
                    await core.close()
                assert a.is_connected
            finally:
                await a.close()
    finally:
        await hub.stop()


async def _names_or_empty(leaf: NatsServer, hub: NatsServer) -> set[str]:
    del hub  # dead: ask the leaf, whose remote list empties when the link drops
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not await leaf.leaf_names():
            return set()
        await asyncio.sleep(0.05)
    pytest.fail("the leaf still lists the killed hub")


async def test_hub_reload_admits_a_new_edge_and_revocation_locks_it_out(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path / "join.key", tmp_path / "joins.json")
    hub = await start_hub(tmp_path)
    try:
        token, _ = issuer.create("N", 600, hub.leaf_url)
        creds: EdgeCredentials = parse_unverified(token).credentials
        leaf = NatsServer(LeafConfig(creds, tmp_path / "n-js", reconnect_s=0.2), tmp_path / "n")
        async with leaf:
            await asyncio.sleep(1.0)
            assert leaf_name(leaf) not in await hub.leaf_names()  # not redeemed: unknown user

            issuer.redeem(token)
            pid = hub.pid
            await hub.update_edges(issuer.edges())
            assert hub.pid == pid  # reloaded in place, not restarted
            await hub.wait_for_leaf(leaf_name(leaf))

            refusals = leaf.log_path.read_text().count("Authorization Violation")
            issuer.revoke("N")
            await hub.update_edges(issuer.edges())  # a reload alone would not drop the link
            await asyncio.sleep(1.5)  # the leaf retries every 0.2s and is refused each time
            assert leaf_name(leaf) not in await hub.leaf_names()
            assert leaf.log_path.read_text().count("Authorization Violation") > refusals
    finally:
        await hub.stop()
