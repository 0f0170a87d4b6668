"""EdgeCache on real LMDB files in tmp_path: batching, map growth, the outbox, reopening."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from datawave.datasource.edge.cache import DATABASES, EdgeCache, OutboxEntry
from datawave.datasource.errors import EdgeError

KiB = 1024


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[EdgeCache]:
    with EdgeCache(tmp_path / "cache", node="n1") as c:
        yield c


def test_values_round_trip_through_msgpack_with_str_or_bytes_keys(cache: EdgeCache) -> None:
    value = {"table": "orders", "rows": 12, "ok": True, "cols": ["id", "amount"], "blob": b"\x00"}
    assert cache.put_many("snapshots", [("pg/orders", value), (b"pg/items", [1, 2.5, None])]) == 2

    assert cache.get("snapshots", b"pg/orders") == value
    assert cache.get("snapshots", "pg/items") == [1, 2.5, None]
    assert cache.get("snapshots", "missing") is None
    assert cache.get("snapshots", "missing", default=0) == 0
    assert cache.get("health", "pg/orders") is None  # databases are separate namespaces
    assert cache.count("snapshots") == 2


def test_get_many_keeps_request_order_and_marks_missing_keys(cache: EdgeCache) -> None:
    cache.put_many("health", [(f"k{i}", i) for i in range(5)])

    assert cache.get_many("health", ["k3", "k1", "k3"]) == [3, 1, 3]
    assert cache.get_many("health", ["k4", "nope", "k0"]) == [4, None, 0]
    assert cache.get_many("health", []) == []
    # bytes keys take the one-pass path; a missing one falls back to key by key
    assert cache.get_many("health", [b"k2", b"k0"]) == [2, 0]
    assert cache.get_many("health", iter([b"k2", b"gone", "k1"])) == [2, None, 1]


def test_stored_bytes_are_msgpack_as_the_gateway_reads_them(cache: EdgeCache) -> None:
    """The outbox ships records as stored and the core decodes them with msgpack; caches
    written by msgpack's Packer (earlier versions) read back the same."""
    record = {"kind": "health", "source_id": "s1", "at": 1.5, "report": {"state": "up"},
              "n": 2**40, "raw": b"\x01", "none": None}  # fmt: skip
    (seq,) = cache.outbox_append([record])
    ((_, raw),) = cache.outbox_read_raw(0, 1)
    stored = {**record, "seq": seq, "rid": f"n1:{seq}"}
    assert msgpack.unpackb(raw) == stored
    assert raw == msgpack.packb(stored, use_bin_type=True)

    old = {"table": "orders", "cols": ["id"], "rows": 3}
    with cache._env.begin(write=True) as txn:
        txn.put(b"legacy", msgpack.packb(old, use_bin_type=True), db=cache._dbs["snapshots"])
    assert cache.get_many("snapshots", [b"legacy"]) == [old]


def test_iter_walks_a_prefix_in_key_order_across_batches(cache: EdgeCache) -> None:
    cache.put_many("snapshots", [(f"a/{i:03d}", i) for i in range(25)])
    cache.put_many("snapshots", [("b/0", "other"), ("a", "exact-prefix-only")])

    items = list(cache.iter("snapshots", "a/", batch=4))

    assert [k for k, _ in items] == [f"a/{i:03d}".encode() for i in range(25)]
    assert [v for _, v in items] == list(range(25))
    assert len(list(cache.iter("snapshots"))) == 27
    assert list(cache.iter("snapshots", "zzz")) == []


def test_iter_holds_no_transaction_between_batches(cache: EdgeCache) -> None:
    cache.put_many("snapshots", [(f"k{i:03d}", "x" * 100) for i in range(10)])
    it = cache.iter("snapshots", batch=2)
    next(it)
    # A paused iterator must not pin a read transaction: writes (and map growth) go ahead.
    cache.put_many("snapshots", [(f"z{i:04d}", "y" * 2000) for i in range(200)])
    assert len(list(it)) == 209


def test_a_batch_is_one_transaction_all_or_nothing(cache: EdgeCache) -> None:
    cache.put("snapshots", "before", 1)
    too_long = "k" * 600  # LMDB keys stop at 511 bytes: the put fails inside the transaction

    with pytest.raises(EdgeError, match="write failed"):
        cache.put_many("snapshots", [("first", 1), ("second", 2), (too_long, 3)])

    assert cache.get_many("snapshots", ["first", "second"]) == [None, None]
    assert cache.count("snapshots") == 1


def test_delete_many_counts_existing_keys(cache: EdgeCache) -> None:
    cache.put_many("health", [("a", 1), ("b", 2)])
    assert cache.delete_many("health", ["a", "zz"]) == 1
    assert cache.get_many("health", ["a", "b"]) == [None, 2]


def test_map_grows_when_full_and_the_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    value = "v" * 1000
    with EdgeCache(path, map_size=64 * KiB) as cache:
        start = cache.map_size
        cache.put_many("snapshots", [(f"k{i:05d}", value) for i in range(3000)])  # ~3 MB
        assert cache.map_size >= 4 * start
        assert cache.count("snapshots") == 3000

    with EdgeCache(path, map_size=64 * KiB) as cache:
        assert cache.count("snapshots") == 3000
        assert cache.get("snapshots", "k02999") == value
        cache.put_many("snapshots", [(f"more{i}", value) for i in range(500)])
        assert cache.count("snapshots") == 3500


def test_growth_stops_at_max_map_size(tmp_path: Path) -> None:
    with EdgeCache(tmp_path / "capped", map_size=64 * KiB, max_map_size=256 * KiB) as cache:
        with pytest.raises(EdgeError, match="full"):
            cache.put_many("snapshots", [(f"k{i}", "v" * 1000) for i in range(1000)])
        assert cache.count("snapshots") == 0
        cache.put("snapshots", "small", 1)  # still usable
        assert cache.map_size == 256 * KiB


def test_readers_keep_working_while_another_thread_grows_the_map(tmp_path: Path) -> None:
    with EdgeCache(tmp_path / "busy", map_size=64 * KiB) as cache:
        cache.put_many("health", [(f"h{i}", i) for i in range(100)])
        errors: list[BaseException] = []
        stop = threading.Event()

        def read() -> None:
            try:
                while not stop.is_set():
                    assert cache.get_many("health", ["h1", "h99"]) == [1, 99]
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        try:
            for batch in range(20):
                cache.put_many("snapshots", [(f"b{batch}/{i}", "x" * 500) for i in range(200)])
        finally:
            stop.set()
            for t in readers:
                t.join(10)
        assert not errors
        assert cache.count("snapshots") == 4000
        assert cache.map_size > 64 * KiB


def test_outbox_assigns_increasing_seqs_and_stable_record_ids(cache: EdgeCache) -> None:
    assert cache.outbox_append([{"kind": "health"}, {"kind": "snapshot"}]) == [1, 2]
    assert cache.outbox_append([{"kind": "drift", "rid": "upstream-7"}]) == [3]
    assert cache.outbox_append([]) == []

    entries = cache.outbox_read(0)

    assert entries == [
        OutboxEntry(1, {"kind": "health", "seq": 1, "rid": "n1:1"}),
        OutboxEntry(2, {"kind": "snapshot", "seq": 2, "rid": "n1:2"}),
        OutboxEntry(3, {"kind": "drift", "seq": 3, "rid": "upstream-7"}),  # a given rid is kept
    ]
    assert cache.outbox_read(1, limit=1) == [entries[1]]
    assert cache.outbox_depth() == 3


def test_outbox_ack_deletes_advances_the_cursor_and_never_goes_back(cache: EdgeCache) -> None:
    cache.outbox_append([{"i": i} for i in range(10)])

    assert cache.outbox_ack(4) == 4
    assert cache.outbox_acked() == 4
    assert cache.get_cursor("outbox.acked") == 4
    assert [e.seq for e in cache.outbox_read()] == [5, 6, 7, 8, 9, 10]  # default: after the ack
    assert cache.outbox_ack(2) == 0  # older ack: no-op
    assert cache.outbox_acked() == 4
    assert cache.outbox_ack(99) == 6  # clamped to the last assigned seq
    assert cache.outbox_acked() == 10
    assert cache.outbox_depth() == 0

    # Sequence numbers continue after the queue drained: a receiver's dedup stays valid.
    assert cache.outbox_append([{"i": 10}]) == [11]
    assert [e.seq for e in cache.outbox_read()] == [11]


def test_outbox_and_cursors_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "persist"
    with EdgeCache(path) as cache:
        node = cache.node
        cache.outbox_append([{"i": i} for i in range(5)])
        cache.outbox_ack(2)
        cache.set_cursor("sync.snapshots", {"etag": "abc", "seq": 7})

    with EdgeCache(path) as cache:
        assert cache.node == node  # generated once, then stored
        assert cache.outbox_acked() == 2
        assert [e.record["rid"] for e in cache.outbox_read()] == [f"{node}:{s}" for s in (3, 4, 5)]
        assert cache.get_cursor("sync.snapshots") == {"etag": "abc", "seq": 7}
        assert cache.get_cursor("never-set", default=-1) == -1
        assert cache.outbox_append([{}]) == [6]


def test_a_cache_refuses_another_node_id_or_an_invalid_one(tmp_path: Path) -> None:
    EdgeCache(tmp_path / "c", node="edge-a-1").close()
    with pytest.raises(EdgeError, match="belongs to node 'edge-a-1'"):
        EdgeCache(tmp_path / "c", node="edge-b-1")
    with pytest.raises(EdgeError, match="invalid node id"):
        EdgeCache(tmp_path / "d", node="a:b")


def test_unknown_database_and_closed_cache_raise_edge_errors(tmp_path: Path) -> None:
    cache = EdgeCache(tmp_path / "c")
    with pytest.raises(EdgeError, match="unknown cache database 'nope'"):
        cache.get("nope", "k")  # type: ignore[arg-type]
    cache.close()
    cache.close()  # idempotent
    with pytest.raises(EdgeError, match="closed"):
        cache.get("snapshots", "k")
    with pytest.raises(EdgeError, match="closed"):
        cache.put("snapshots", "k", 1)


def test_sync_is_the_default_and_can_be_turned_off(tmp_path: Path) -> None:
    with (
        EdgeCache(tmp_path / "durable") as durable,
        EdgeCache(tmp_path / "fast", sync=False) as fast,
    ):
        assert durable._env.flags()["sync"] is True
        assert fast._env.flags()["sync"] is False
    assert set(DATABASES) == {"snapshots", "health", "outbox", "cursors", "meta"}


async def test_async_twins_run_off_the_event_loop(cache: EdgeCache) -> None:
    assert await cache.aput_many("health", [("a", {"ok": True}), ("b", {"ok": False})]) == 2
    assert await cache.aget("health", "a") == {"ok": True}
    assert await cache.aget_many("health", ["b", "x"]) == [{"ok": False}, None]
    assert [k for k, _ in await cache.aitems("health")] == [b"a", b"b"]
    assert await cache.aoutbox_append([{"n": 1}, {"n": 2}]) == [1, 2]
    assert [e.seq for e in await cache.aoutbox_read(0)] == [1, 2]
    assert await cache.aoutbox_ack(1) == 1
    assert await cache.aoutbox_depth() == 1
    await cache.aset_cursor("c", 5)
    assert await cache.aget_cursor("c") == 5
