"""Sync without the network: the wire checks, edge-side delta planning, and the gateway's
idempotent apply (high-water mark per epoch, gaps, foreign sources) against a SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.edge.delta import apply_delta, plan_delta
from datawave.datasource.edge.gateway import EdgeGateway
from datawave.datasource.edge.protocol import MAX_MESSAGE_BYTES, BadMessage, decode, encode
from datawave.datasource.edge.sources import SourceBook, sources_digest
from datawave.datasource.engines import SourceService
from datawave.datasource.models import (
    ColumnInfo,
    DiscoveryResult,
    Event,
    SchemaInfo,
    SourceSpec,
    TableInfo,
)
from datawave.datasource.store import AesGcmSealer, MetadataStore, load_kek


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    s = MetadataStore.open(
        f"sqlite:///{tmp_path / 'core.db'}",
        sealer=AesGcmSealer(load_kek(tmp_path / "kek", create=True)),
    )
    yield s
    s.close()


def _source(store: MetadataStore, site: str, name: str = "src") -> str:
    svc = SourceService(store, ConnectorRegistry(), shards=1)
    spec = SourceSpec(name=name, type="sqlite", config={"path": "/tmp/x.db"}, edge_site=site)
    return svc.register(spec).id


def _table(name: str, *cols: str, rows: int | None = None) -> TableInfo:
    return TableInfo(
        database="main",
        schema_name="public",
        name=name,
        row_estimate=rows,
        columns=tuple(
            ColumnInfo(name=c, ordinal=i + 1, data_type="text") for i, c in enumerate(cols)
        ),
    )


def _result(*tables: TableInfo) -> DiscoveryResult:
    return DiscoveryResult(
        schemas=(SchemaInfo(database="main", name="public"),),
        tables=tables,
        databases_complete=True,
        complete_databases=frozenset({"main"}),
        complete_schemas=frozenset({("main", "public")}),
    )


# Wire ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1garbage", "not msgpack"),
        (msgpack.packb([1, 2, 3]), "not a map"),
        (msgpack.packb({"node": "n"}), "missing epoch, records"),
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), "oversized"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as err:
        decode(data, required=("node", "epoch", "records"))
    assert err.value.reason == reason


def test_a_message_over_the_limit_is_not_encoded() -> None:
    with pytest.raises(Exception, match="exceeds"):
        encode({"pad": "x" * MAX_MESSAGE_BYTES})


# Delta planning ---------------------------------------------------------------------------------
def test_first_run_ships_everything_then_only_changes() -> None:
    a, b = _table("a", "id"), _table("b", "id", "name")
    full, base = plan_delta(None, _result(a, b))
    assert full["full"] and len(full["tables"]) == 2

    same, base2 = plan_delta(base, _result(a, b))
    assert not same["full"] and same["tables"] == [] and same["removed_tables"] == []
    assert base2 == base

    changed, _ = plan_delta(base, _result(_table("a", "id", "extra")))
    assert [t["name"] for t in changed["tables"]] == ["a"]
    assert changed["removed_tables"] == [["main", "public", "b"]]  # schema listing complete


def test_nothing_is_removed_without_a_complete_listing() -> None:
    _, base = plan_delta(None, _result(_table("a", "id"), _table("b", "id")))
    partial = DiscoveryResult(tables=(_table("a", "id"),), failures=("schema public: timeout",))
    delta, new_base = plan_delta(base, partial)
    assert delta["removed_tables"] == [] and "main\x00public\x00b" in new_base["tables"]


def test_a_delta_lands_on_the_same_rows_as_a_full_result(store: MetadataStore) -> None:
    sid = _source(store, "A")
    first, base = plan_delta(None, _result(_table("a", "id"), _table("b", "id")))
    cs, _, diverged = apply_delta(store, sid, "r1", first, _now())
    store.apply_changes(cs)
    assert not diverged and sorted(t.name for t in store.list_tables(sid)) == ["a", "b"]

    delta, _ = plan_delta(base, _result(_table("a", "id", "note")))
    cs, counters, diverged = apply_delta(store, sid, "r2", delta, _now())
    store.apply_changes(cs)
    assert not diverged
    assert [t.name for t in store.list_tables(sid)] == ["a"]
    assert {e.kind.value for e in cs.drift} == {"column_added", "table_removed"}
    assert counters["removed"] == 1

    # A delta against a baseline the core does not hold asks for a full run.
    stale, _ = plan_delta(base, _result(_table("a", "id", "note")))
    assert apply_delta(store, sid, "r3", stale, _now())[2] is True


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


# Gateway apply ---------------------------------------------------------------------------------
def _synthetic(first: int, n: int) -> list[dict[str, object]]:
    return [
        {"kind": "event", "type": "synthetic", "source_id": None, "seq": s, "rid": f"n1:{s}"}
        for s in range(first, first + n)
    ]


def test_gateway_applies_each_record_once_per_epoch(store: MetadataStore) -> None:
    store.register_edge_node("n1", "A")
    seen: list[Event] = []
    gw = EdgeGateway(store, None, "nats://127.0.0.1:1", sink=seen.append)
    assert gw._apply_batch("A", "n1", "e1", _synthetic(1, 10)) == (10, [])
    assert gw._apply_batch("A", "n1", "e1", _synthetic(5, 10)) == (14, [])  # overlap: redelivery
    assert [e.data["rid"] for e in seen] == [f"n1:{s}" for s in range(1, 15)]
    assert gw.counters["duplicates"] == 6

    # A batch beyond mark + 1 (one was lost on the way) is not applied: the reply is the mark.
    assert gw._apply_batch("A", "n1", "e1", _synthetic(20, 5)) == (14, [])
    assert gw.counters["gaps"] == 1 and len(seen) == 14

    # A new epoch (cache wiped) counts from 1 again; the old one keeps its own mark.
    assert gw._apply_batch("A", "n1", "e2", _synthetic(1, 3)) == (3, [])
    assert store.edge_sync_position("n1", "e1") == 14 and len(seen) == 17

    # The edge's own ack cursor counts as applied (a store restored from a backup).
    assert gw._apply_batch("A", "n1", "e3", _synthetic(101, 2), acked=100) == (102, [])


def test_gateway_refuses_records_for_another_sites_source(store: MetadataStore) -> None:
    store.register_edge_node("n1", "A")
    other = _source(store, "B")
    gw = EdgeGateway(store, None, "nats://127.0.0.1:1")
    record = {"kind": "health", "source_id": other, "seq": 1, "rid": "n1:1",
              "report": {"state": "down"}}  # fmt: skip
    assert gw._apply_batch("A", "n1", "e1", [record]) == (1, [])  # skipped, never blocking
    assert gw.rejected_by_reason == {"source not owned by this site": 1}
    assert store.get_source(other).health == "unknown"


# Source book ------------------------------------------------------------------------------------
def test_source_book_is_private_and_digested_like_the_core(tmp_path: Path) -> None:
    book = SourceBook(tmp_path / "sources.json")
    book.replace([{"id": "s1", "name": "one", "type": "sqlite", "config": {"path": "x"},
                   "version": 3}])  # fmt: skip
    assert (tmp_path / "sources.json").stat().st_mode & 0o777 == 0o600
    assert SourceBook(tmp_path / "sources.json").get("one")["id"] == "s1"
    assert book.digest == sources_digest([("s1", 3)])
