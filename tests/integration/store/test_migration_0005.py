"""Migration 0005 moves columns into one document per table and back, on both store backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.engines import DiscoveryEngine, SourceService
from datawave.datasource.models import ColumnInfo, KeyInfo, TableInfo
from datawave.datasource.store import AesGcmSealer, MetadataStore
from datawave.datasource.store.base import MIGRATIONS
from tests.fixtures.static_connector import StaticConnector, result


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield request.getfixturevalue("pg_store_url")


def _alembic(store: MetadataStore, action: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", store.url.replace("%", "%%"))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


RICH = TableInfo(  # type: ignore[call-arg]  # "schema" is the field's alias
    database="db",
    schema="app",
    name="rich",
    columns=(
        ColumnInfo(name="id", ordinal=1, data_type="bigint", nullable=False, identity=True),
        ColumnInfo(
            name="mood",
            ordinal=2,
            data_type="mood",
            enum_values=("sad", "it's ok"),
            default="'sad'::mood",
            comment="how it feels",
        ),
        ColumnInfo(name="tags", ordinal=3, data_type="text[]", is_array=True),
        ColumnInfo(name="total", ordinal=5, data_type="numeric", generated="(a * b)"),
        ColumnInfo(name='Ünï "q"', ordinal=6, data_type="text"),
    ),
    primary_key=KeyInfo(name="rich_pkey", columns=("id",)),
)
PLAIN = TableInfo(  # type: ignore[call-arg]
    database="db", schema="app", name="plain",
    columns=(ColumnInfo(name="x", ordinal=1, data_type="int"),),
)  # fmt: skip


async def test_columns_round_trip_through_downgrade_and_upgrade(url: str) -> None:
    store = MetadataStore.open(url, sealer=AesGcmSealer(b"k" * 32))
    try:
        reg = ConnectorRegistry()
        reg.register(StaticConnector)
        rec = SourceService(store, reg, shards=1).register({"name": "m", "type": "static"})
        conn = StaticConnector.create({})
        signatures = {RICH.qualified_name: "a" * 32, PLAIN.qualified_name: "b" * 32}
        conn.result = result([RICH, PLAIN]).model_copy(update={"signatures": signatures})
        await DiscoveryEngine(store).run(rec.id, conn)
        assert {s.signature for s in store.load_table_state(rec.id).values()} == {
            "a" * 32,
            "b" * 32,
        }
        before = store.list_tables(rec.id)
        assert [t.columns for t in before] == [PLAIN.columns, RICH.columns]

        _alembic(store, "downgrade", "0004")
        with store.engine.connect() as c:
            rows = c.execute(
                sa.text(
                    'SELECT t.name, c.ordinal, c.name, c.nullable, c."default", c.comment,'
                    " c.identity, c.is_array, c.is_primary_key, c.generated"
                    " FROM columns c JOIN tables t ON t.id = c.table_id"
                    " ORDER BY t.name, c.ordinal"
                )
            ).all()
            names = {col["name"] for col in sa.inspect(c).get_columns("tables")}
        assert "column_doc" not in names and "signature" not in names
        assert [tuple(r) for r in rows] == [
            ("plain", 1, "x", True, None, None, False, False, False, None),
            ("rich", 1, "id", False, None, None, True, False, True, None),
            ("rich", 2, "mood", True, "'sad'::mood", "how it feels", False, False, False, None),
            ("rich", 3, "tags", True, None, None, False, True, False, None),
            ("rich", 5, "total", True, None, None, False, False, False, "(a * b)"),
            ("rich", 6, 'Ünï "q"', True, None, None, False, False, False, None),
        ]

        _alembic(store, "upgrade", "head")
        with store.engine.connect() as c:
            assert "columns" not in sa.inspect(c).get_table_names()
        after = store.list_tables(rec.id)
        assert after == before
        assert store.get_table(rec.id, "db", "app", "rich").columns[1].enum_values == (
            "sad",
            "it's ok",
        )
        # Migrated rows carry no signature yet: the next discovery rebuilds and signs them.
        assert {s.signature for s in store.load_table_state(rec.id).values()} == {None}
    finally:
        store.close()
