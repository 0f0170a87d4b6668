"""PostgreSQL-specific fixtures for connector tests: a second scratch database, a login role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fixtures.services import (
    PG_HOST,
    PG_PORT,
    PgDatabase,
    pg_admin,
    require_service,
    scratch_pg_database,
)


@pytest.fixture
def pg_other_db() -> Iterator[PgDatabase]:
    """A second fresh PostgreSQL database, dropped afterwards."""
    with scratch_pg_database("dw_t2") as db:
        yield db


@pytest.fixture
def pg_role() -> Iterator[str]:
    """A plain login role (no superuser), dropped afterwards."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"dw_role_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE ROLE "{name}" LOGIN')
    try:
        yield name
    finally:
        pg_admin(f'DROP ROLE IF EXISTS "{name}"')
