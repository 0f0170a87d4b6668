"""The edge fleet end to end with real processes: a hub nats-server, leaf nats-servers, agents as
separate processes, real PostgreSQL / MariaDB sources, and the core's gateway in-process.

What must hold: a join succeeds only with a valid, unused, genuine token and leaves nothing
behind otherwise; an edge discovery lands in the core store exactly as a core one would; an
outage of the hub loses nothing and duplicates nothing; a SIGKILLed agent replays its outbox.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import nats
import pytest

from datawave.datasource.edge import parse_unverified
from datawave.datasource.edge.node import NodeFiles, join, leave, node_status
from datawave.datasource.edge.protocol import encode
from datawave.datasource.errors import EdgeError, TokenRejected
from datawave.datasource.models import RunStatus
from tests.integration.edge.fleet import (  # noqa: F401  (fixtures: core, agents)
    AgentProcess,
    CoreSide,
    agent_processes,
    core_side,
    join_site,
    node_id,
    start_core,
    stop_core,
    stop_leaf,
    until,
)

pytestmark = pytest.mark.timeout(240)


async def _wait_sources(core: CoreSide, node: str, site: str) -> None:
    """Until the agent reports the core's source definitions (sources.set was delivered)."""
    digest = await core.gateway._site_digest(site)

    def synced() -> bool:
        n = core.store.get_edge_node(node)
        return n is not None and n.sources_digest == digest

    await until(synced, 30, "source definitions on the edge")


async def _finished(core: CoreSide, run_id: str) -> bool:
    return core.store.get_run(run_id).status is not RunStatus.RUNNING


# Join ---------------------------------------------------------------------------------------------
async def test_join_with_a_valid_token_registers_the_node(core: CoreSide, tmp_path: Path) -> None:
    info = await join_site(core, "A", tmp_path / "edgeA")
    assert "password" not in info
    assert core.store.get_edge_node(info["node"]).site == "A"  # type: ignore[union-attr]
    status = await node_status(tmp_path / "edgeA")
    assert status["link"] == "up" and status["leaf_pid"]
    left = leave(tmp_path / "edgeA")
    assert left["leaf"] and not (tmp_path / "edgeA").exists()


async def test_an_expired_token_is_refused_before_anything_is_written(
    core: CoreSide, tmp_path: Path
) -> None:
    token, _ = core.issuer.create("A", 1, core.hub.leaf_url)
    await asyncio.sleep(1.1)
    with pytest.raises(TokenRejected) as err:
        await join(token, tmp_path / "edgeA", timeout_s=10)
    assert err.value.context["reason"] == "expired"
    assert not (tmp_path / "edgeA").exists()


async def test_a_reused_token_is_refused_and_rolled_back(core: CoreSide, tmp_path: Path) -> None:
    token = await core.token("A")
    await join(token, tmp_path / "first", timeout_s=30)
    with pytest.raises(TokenRejected) as err:
        await join(token, tmp_path / "second", timeout_s=30)
    assert err.value.context["reason"] == "already used"
    assert not (tmp_path / "second").exists()  # config, leaf process and cache: all gone
    leave(tmp_path / "first")


async def test_a_forged_token_is_refused_and_rolled_back(core: CoreSide, tmp_path: Path) -> None:
    token = await core.token("A")
    prefix, payload, _mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["exp"] += 3600  # a longer-lived token, same credentials: only the MAC can tell
    forged_payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    forged = f"{prefix}.{forged_payload}.{_mac}"
    parse_unverified(forged)  # the edge cannot tell
    with pytest.raises(TokenRejected) as err:
        await join(forged, tmp_path / "edgeA", timeout_s=30)
    assert err.value.context["reason"] == "signature invalid"
    assert not (tmp_path / "edgeA").exists()
    # Made-up credentials never get a leaf link: refused at the hub, also rolled back.
    fake = token.replace(
        payload, payload[:-6] + ("A" if payload[-6] != "A" else "B") + payload[-5:]
    )
    with pytest.raises((TokenRejected, EdgeError)):
        await join(fake, tmp_path / "edgeB", timeout_s=5)
    assert not (tmp_path / "edgeB").exists()


async def test_an_unreachable_hub_times_out_with_nothing_left(
    core: CoreSide, tmp_path: Path
) -> None:
    token = await core.token("A")
    await core.hub.stop()
    messages: list[str] = []
    try:
        with pytest.raises(EdgeError, match="not reachable"):
            await join(token, tmp_path / "edgeA", timeout_s=3, echo=messages.append)
    finally:
        await core.hub.start()
    assert not (tmp_path / "edgeA").exists()
    assert any("waiting for the hub" in m for m in messages)


# Discovery and sync -------------------------------------------------------------------------------
async def test_edge_discovery_lands_in_the_core_store(
    core: CoreSide, tmp_path: Path, agents: list[AgentProcess], pg_db
) -> None:
    pg_db.execute("CREATE TABLE orders (id int primary key, total numeric(10,2));"
                  "CREATE TABLE customers (id int primary key, name text)")  # fmt: skip
    root = tmp_path / "edgeA"
    await join_site(core, "A", root)  # first: secrets are sealed to the key the edge sends
    src = core.add_source("pg-edge", "postgresql", pg_db.config(password="pw-edge"), "A")
    agents.append(AgentProcess(root).start())
    await _wait_sources(core, node_id(root), "A")

    run = await core.gateway.discover("A", src.id)
    await until(lambda: _finished(core, run.run_id), 60, "edge discovery")
    done = core.store.get_run(run.run_id)
    assert done.status is RunStatus.SUCCEEDED, (done.errors, agents[0].log())
    names = {t.name for t in core.store.list_tables(src.id)}
    assert {"orders", "customers"} <= names
    assert any(e.type == "discovery.finished" and e.run_id == run.run_id for e in core.events)

    # A second run of an unchanged source ships no table and writes nothing.
    again = await core.gateway.discover("A", src.id)
    await until(lambda: _finished(core, again.run_id), 60, "second edge discovery")
    second = core.store.get_run(again.run_id)
    assert second.counters["shipped_tables"] == 0 and second.counters["rows_written"] == 0

    # A change ships only the changed table; a dropped table is removed on positive evidence.
    pg_db.execute("ALTER TABLE orders ADD COLUMN note text; DROP TABLE customers")
    third = await core.gateway.discover("A", src.id)
    await until(lambda: _finished(core, third.run_id), 60, "third edge discovery")
    assert core.store.get_run(third.run_id).counters["shipped_tables"] == 1
    assert {t.name for t in core.store.list_tables(src.id)} == names - {"customers"}
    kinds = {
        e.data.get("kind") for e in core.events if e.type == "drift" and e.run_id == third.run_id
    }
    assert {"column_added", "table_removed"} <= kinds

    # The cached metadata is readable on the edge, offline.
    from datawave.datasource.edge.agent import cached_result
    from datawave.datasource.edge.cache import EdgeCache

    agents[0].stop()
    with EdgeCache(NodeFiles(root).cache_dir) as cache:
        cached = cached_result(cache, "pg-edge")
    assert cached is not None and {t["name"] for t in cached["result"]["tables"]} == {"orders"}


async def test_a_hub_outage_during_discovery_and_health_loses_and_duplicates_nothing(
    core: CoreSide, tmp_path: Path, agents: list[AgentProcess], my_db
) -> None:
    my_db.execute("CREATE TABLE items (id int primary key, sku varchar(32))")
    root = tmp_path / "edgeA"
    await join_site(core, "A", root)
    src = core.add_source(
        "my-edge", "mysql", my_db.config(auth="none", schemas=[my_db.dbname]), "A"
    )
    node = node_id(root)
    agent = AgentProcess(root, "--health-interval-s", "0.1", "--synthetic", "-1",
                         "--synthetic-rate", "300")  # fmt: skip
    agents.append(agent.start())
    await _wait_sources(core, node, "A")
    run = await core.gateway.discover("A", src.id)

    await core.hub.kill()  # the link is gone; the agent keeps checking, discovering, producing
    await asyncio.sleep(3)
    await core.hub.start()

    await until(lambda: _finished(core, run.run_id), 60, "discovery across the outage")
    assert core.store.get_run(run.run_id).status is RunStatus.SUCCEEDED, agent.log()
    agent.stop()  # no more production; what is in the outbox must still arrive

    def drained() -> bool:
        n = core.store.get_edge_node(node)
        return n is not None and n.applied_seq > 0 and n.queue_depth == 0

    # The agent is stopped, so drain with a fresh one (same outbox) and check exactly-once.
    agents.append(AgentProcess(root).start())
    await until(drained, 60, "outbox drained")
    seq = core.store.get_edge_node(node).applied_seq  # type: ignore[union-attr]
    rids = core.synthetic_rids()
    health = [e for e in core.events if e.type == "health.checked"]
    assert all(c == 1 for c in rids.values()), "a record was applied twice"
    assert len({e.data["rid"] for e in health}) == len(health), "a health sample was applied twice"
    applied = set(rids) | {e.data["rid"] for e in health}
    # Every sequence number is accounted for: synthetic, health, or the discovery/test records.
    assert len(applied) + 1 >= seq - 2 and len(rids) > 300 and health
    assert core.store.get_source(src.id).health in ("healthy", "degraded", "down")


async def test_sigkill_mid_write_replays_the_outbox(
    core: CoreSide, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    root = tmp_path / "edgeA"
    await join_site(core, "A", root)
    node = node_id(root)
    await core.hub.stop()  # queue while offline, so the kill hits a full, growing outbox
    writer = AgentProcess(root, "--synthetic", "-1").start()
    agents.append(writer)
    await asyncio.sleep(2.0)
    writer.kill()

    await core.hub.start()
    agents.append(AgentProcess(root).start())

    def drained() -> bool:
        n = core.store.get_edge_node(node)
        return n is not None and n.applied_seq > 0 and n.queue_depth == 0

    try:
        await until(drained, 90, "replayed outbox drained")
    except AssertionError:
        n = core.store.get_edge_node(node)
        raise AssertionError(
            f"not drained: {n}, gateway {core.gateway.counters}, "
            f"{core.gateway.rejected_by_reason}\n{agents[-1].log()}"
        ) from None
    seq = core.store.get_edge_node(node).applied_seq  # type: ignore[union-attr]
    rids = core.synthetic_rids()
    assert all(c == 1 for c in rids.values())
    assert sorted(int(r.split(":")[1]) for r in rids) == list(range(1, seq + 1))
    assert seq > 1000


# Bad input ----------------------------------------------------------------------------------------
async def test_corrupt_and_oversized_messages_are_rejected_and_counted(
    core: CoreSide, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    root = tmp_path / "edgeA"
    info = await join_site(core, "A", root)
    agents.append(AgentProcess(root, "--synthetic", "50").start())
    await until(lambda: len(core.synthetic_rids()) == 50, 30, "first records")

    edge = await nats.connect(f"nats://127.0.0.1:{info['client_port']}",
                              inbox_prefix="_INBOX.edge.A")  # fmt: skip
    try:
        for junk in (b"\xc1\xc1not msgpack", encode({"node": info["node"]}), b"\x93\x01\x02\x03"):
            reply = await edge.request("dw.edge.A.sync", junk, timeout=10)
            assert b"rejected" in reply.data
        await edge.publish("dw.edge.A.heartbeat", b"\xff" * 100)
        # A big record of an unknown kind, in a stray epoch: rejected, acked, never blocking.
        big = {
            "node": info["node"],
            "epoch": "stray",
            "records": [{"seq": 1, "pad": "x" * 900_000}],
        }
        reply = await edge.request("dw.edge.A.sync", encode(big), timeout=10)
        assert b"ack" in reply.data
        with pytest.raises(nats.errors.MaxPayloadError):  # over 1 MiB: refused before the wire
            await edge.publish("dw.edge.A.sync", b"x" * (2 << 20))
    finally:
        await edge.close()
    assert core.gateway.counters["rejected"] >= 5

    # The core's commands reach the agent; garbage there is counted by the agent, which goes on.
    core_nc = await nats.connect(core.hub.client_url, user="core",
                                 password=core.hub.core_credentials[1])  # fmt: skip
    try:
        reply = await core_nc.request("dw.edge.A.cmd", b"\x00garbage", timeout=10)
        assert b"rejected" in reply.data
    finally:
        await core_nc.close()
    assert agents[0].proc is not None and agents[0].proc.poll() is None  # still running
    node = info["node"]
    await until(lambda: (n := core.store.get_edge_node(node)) and n.queue_depth == 0, 10)
    assert sorted(core.synthetic_rids().values()) == [1] * 50
