"""An owner audits every use of a source's credentials: each test and discovery, and health
checks at most once per source per hour. Real owner (no Ray), real store, real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from datawave.datasource.actors.owner import (
    CREDENTIAL_AUDIT_HEALTH_EVERY_S,
    SourceOwner,
    open_store,
)
from datawave.datasource.config import load_settings


@pytest.fixture
async def owner(tmp_path):
    settings = load_settings(data_dir=tmp_path, owners={"shards": 1})
    open_store(settings, migrate=True).close()
    o = SourceOwner(0, settings)
    yield o
    await o.close()


def uses(owner: SourceOwner, purpose: str | None = None) -> list:
    entries = owner.store.query_audit(action="credential.use", limit=1000)
    return [e for e in entries if purpose is None or e.detail["purpose"] == purpose]


async def test_tests_discoveries_and_health_checks_are_audited(owner, pg_db, tmp_path):
    password = f"pw-{uuid.uuid4().hex}"
    pg = await owner.register(
        {"name": "pg", "type": "postgresql", "config": pg_db.config(password=password)},
        str(uuid.uuid4()),
    )
    lite = await owner.register(
        {"name": "lite", "type": "sqlite", "config": {"path": str(tmp_path / "x.sqlite")}},
        str(uuid.uuid4()),
    )
    assert pg.secret_fields == ("password",) and lite.secret_fields == ()

    assert (await owner.test(pg.id)).ok
    await owner.test(lite.id)  # no secret: nothing to account for
    (test_use,) = uses(owner)
    assert test_use.principal == "system:owner-0"
    assert test_use.source_id == pg.id
    assert test_use.detail == {"purpose": "test", "fields": ["password"]}

    await owner.test(pg.id)
    await owner.discover(pg.id)
    assert len(uses(owner, "test")) == 2
    assert [e.source_id for e in uses(owner, "discover")] == [pg.id]

    for _ in range(3):  # a sweep every few seconds: one entry, not three
        await owner.check_health([pg.id, lite.id])
    assert [e.source_id for e in uses(owner, "health")] == [pg.id]

    start = owner.clock()
    owner.clock = lambda: start + CREDENTIAL_AUDIT_HEALTH_EVERY_S + 1  # an hour later
    await owner.check_health([pg.id, lite.id])
    await owner.check_health([pg.id])
    assert len(uses(owner, "health")) == 2

    await owner.update(pg.id, {"config": {"password": password + "-new"}})
    await owner.check_health([pg.id])  # new credentials: their first use is recorded at once
    assert len(uses(owner, "health")) == 3

    assert owner.store.verify_audit().ok
    with owner.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_log")).all()
    assert password not in " ".join(str(v) for row in rows for v in row)
