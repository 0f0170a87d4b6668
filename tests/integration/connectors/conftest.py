"""PostgreSQL-specific fixtures for connector tests: a second scratch database, a login role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fixtures.services import PG_HOST, PG_PORT, PG_USER, PgDatabase, require_service


def pg_admin(*statements: str, dbname: str = "postgres") -> None:
    """Run statements as the PostgreSQL superuser, each in autocommit."""
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True
    ) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture
def pg_other_db() -> Iterator[PgDatabase]:
    """A second fresh PostgreSQL database, dropped afterwards."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"dw_t2_{uuid.uuid4().hex[:10]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PgDatabase(PG_HOST, PG_PORT, PG_USER, name)
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
