"""Edge sources' secrets end to end: sealed on the core to the edge's key, opened only by the
agent process on the edge, right before it connects to a real PostgreSQL role and a real
MariaDB user that have passwords.

What must hold: the core's store row does not open with the core's KEK; no file, event or
audit entry of the core (nor any file of the edge) holds a password in clear; the edge tests
and discovers with them (MariaDB proves the password is really used: a wrong one fails at
``authenticate``); every use is in the core's audit log as ``edge:<site>``; a node holding
another key cannot open them and says so.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from datawave.datasource.edge.node import NodeFiles
from datawave.datasource.errors import StoreError
from datawave.datasource.models import RunStatus
from datawave.datasource.security.edgekeys import EdgeSealingKey, is_edge_sealed
from tests.fixtures.services import MY_HOST, MY_PORT, MY_USER, pg_admin
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


@pytest.fixture
def pg_role(pg_db) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """A PostgreSQL login role with a password, allowed to read ``pg_db``."""
    role, password = f"dw_edge_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    pg_admin(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    pg_db.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"; '
                  f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{role}"')  # fmt: skip
    try:
        yield role, password
    finally:
        pg_db.execute(f'DROP OWNED BY "{role}"')
        pg_admin(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def my_user(my_db) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """A MariaDB user with a password, allowed to read ``my_db``: here the password matters."""
    user, password = f"dw_edge_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)

    def admin(sql: str) -> None:
        conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    admin(f"GRANT SELECT ON `{my_db.dbname}`.* TO '{user}'@'%'")
    try:
        yield user, password
    finally:
        admin(f"DROP USER IF EXISTS '{user}'@'%'")


def _files_holding(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n[:4]!r}..." for n in needles if n in data]
    return hits


async def test_secrets_open_only_on_the_edge_and_every_use_is_audited(
    core: CoreSide, tmp_path: Path, agents: list[AgentProcess], pg_db, my_db, pg_role, my_user
) -> None:
    role, pg_password = pg_role
    user, my_password = my_user
    wrong = secrets.token_urlsafe(18)
    pg_db.execute("CREATE TABLE plants (id int primary key, city text)")
    my_db.execute("CREATE TABLE items (id int primary key, sku varchar(32))")

    root = tmp_path / "edgeA"
    await join_site(core, "A", root)  # the edge's public key reaches the core first
    pg = core.add_source("pg-sealed", "postgresql", pg_db.config(user=role, password=pg_password),
                         "A")  # fmt: skip
    my = core.add_source("my-sealed", "mysql",
                         my_db.config(user=user, password=my_password, schemas=[my_db.dbname]),
                         "A")  # fmt: skip
    my_bad = core.add_source("my-wrong", "mysql",
                             my_db.config(user=user, password=wrong, schemas=[my_db.dbname]),
                             "A")  # fmt: skip

    # The core holds blobs it cannot open: not with its KEK, not through the store.
    assert core.store.sealer is not None
    for src in (pg, my, my_bad):
        blob = core.store.get_sealed_secrets(src.id)
        assert blob is not None and is_edge_sealed(blob)
        with pytest.raises(StoreError):
            core.store.sealer.open(blob, context=src.id.encode())
        with pytest.raises(StoreError, match="only that edge can open them"):
            core.store.get_secrets(src.id)

    agents.append(AgentProcess(root).start())
    digest = await core.gateway._site_digest("A")
    node = node_id(root)
    await until(lambda: (n := core.store.get_edge_node(node)) and n.sources_digest == digest,
                30, "source definitions on the edge")  # fmt: skip

    # The edge opens them and connects: MariaDB checks the password, so a wrong one fails.
    assert (await core.gateway.test("A", pg.id)).ok, agents[0].log()
    report = await core.gateway.test("A", my.id)
    assert report.ok, (report.failed_step, agents[0].log())
    bad = await core.gateway.test("A", my_bad.id)
    steps = {s.name: s for s in bad.steps}
    assert not bad.ok and steps["authenticate"].error_code == "authentication_failed"

    for src, table in ((pg, "plants"), (my, "items")):
        run = await core.gateway.discover("A", src.id)
        await until(lambda r=run: core.store.get_run(r.run_id).status is not RunStatus.RUNNING,
                    60, f"discovery of {src.name}")  # fmt: skip
        done = core.store.get_run(run.run_id)
        assert done.status is RunStatus.SUCCEEDED, (done.errors, agents[0].log())
        assert [t.name for t in core.store.list_tables(src.id)] == [table]

    # Every opening is a credential.use of the edge in the core's audit log.
    def uses() -> set[tuple[str | None, str]]:
        return {(e.source_id, str(e.detail.get("purpose")))
                for e in core.store.query_audit(action="credential.use", limit=1000)
                if e.principal == "edge:A"}  # fmt: skip

    want = {(pg.id, "test"), (my.id, "test"), (my_bad.id, "test"), (pg.id, "discover"),
            (my.id, "discover")}  # fmt: skip
    await until(lambda: want <= uses(), 30, "credential uses in the audit log")
    assert core.store.verify_audit().ok

    # Nowhere in clear: not in the core's files (store, WAL, hub, joins), events, audit log; not
    # in the edge's files either (sources.json holds them sealed; cache, logs, keys).
    agents[0].stop()
    needles = [p.encode() for p in (pg_password, my_password, wrong)]
    assert _files_holding(core.root, needles) == []
    assert _files_holding(root, needles) == []
    assert not any(n in agents[0].log_path.read_bytes() for n in needles)
    shown = json.dumps([e.model_dump(mode="json") for e in core.events]) + json.dumps(
        [e.model_dump(mode="json") for e in core.store.query_audit(limit=1000)]
    )
    assert not any(n.decode() in shown for n in needles)

    # A node holding another key cannot open them, and says why.
    seal = NodeFiles(root).seal_key
    seal.unlink()
    EdgeSealingKey.generate().save(seal)
    agents.append(AgentProcess(root).start())

    async def answered() -> object:
        r = await core.gateway.test("A", my.id)
        return r.steps[0].name != "reach_edge" and r

    report = await until(answered, 30, "an answer from the restarted agent")
    assert not report.ok
    assert "sealed to edge key" in (report.steps[0].error or ""), report
