"""The per-node LMDB cache: snapshots, health samples, the outbox and sync cursors.

One LMDB environment per node directory holds five named databases (:data:`DATABASES`). Values
are msgpack, so callers store plain data (``model.model_dump(mode="json")``), never objects.

Why LMDB: a committed transaction survives a crash of the process (SIGKILL, OOM) without a
recovery step, readers never block the writer, and a batch of puts costs one commit. Every
write method here is exactly one write transaction, so a batch is all-or-nothing.

Durability: ``sync=True`` (the default) fsyncs on every commit, so a commit also survives power
loss. ``sync=False`` skips the fsync: a crash of *this process* still loses nothing committed
(the pages are in the OS cache), but a crash of the machine may lose the last commits. Use it for
benchmarks and throwaway caches only.

The map grows on demand: when a write hits ``MapFullError`` the transaction is aborted, the map
size doubled (up to ``max_map_size``) and the transaction replayed. Resizing needs every read
transaction of this process closed, so reads hold a shared gate and the resize an exclusive one,
and :meth:`EdgeCache.iter` reads in short transactions instead of keeping one open.

The outbox is an append-only queue keyed by 8-byte big-endian sequence numbers, so LMDB's key
order is delivery order. Sequence numbers never go backwards, even after every record has been
acknowledged and deleted: the high-water mark lives in the ``meta`` database and is advanced in
the same transaction as the append.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, TypeVar

import lmdb
import msgspec

from datawave.datasource.errors import EdgeError

__all__ = ["DATABASES", "CacheDb", "EdgeCache", "OutboxEntry"]

log = logging.getLogger(__name__)

CacheDb = Literal["snapshots", "health", "outbox", "cursors", "meta"]
DATABASES: Final[tuple[CacheDb, ...]] = ("snapshots", "health", "outbox", "cursors", "meta")

_SEQ_KEY: Final = b"outbox.seq"  # meta: highest sequence number ever assigned
_NODE_KEY: Final = b"node"  # meta: the node id, fixed at first open
_ACK_CURSOR: Final = "outbox.acked"  # cursors: highest acknowledged sequence number
_MiB: Final = 1 << 20
_NODE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_T = TypeVar("_T")

Key = bytes | str


class OutboxEntry(NamedTuple):
    """One queued record; ``record["rid"]`` is its stable id, unique across nodes."""

    seq: int
    record: dict[str, Any]


def _key(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def _seq_key(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


# msgspec's MessagePack codec: the same bytes as msgpack's Packer(use_bin_type=True) for the
# plain data stored here (what the gateway decodes with msgpack), decoded ~1.5x as fast
# (map keys come from a cache instead of being built and interned per value).
_pack: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode
_unpack: Callable[[Any], Any] = msgspec.msgpack.Decoder().decode


class _Gate:
    """Many readers or one resizer: remapping under a live read transaction is undefined."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class EdgeCache:
    """The LMDB cache of one node; a context manager, thread-safe, with async twins.

    Args:
        path: Directory of the environment; created if missing.
        node: Node id used in outbox record ids. ``None`` reuses the id stored at first open,
            or generates one. A different id than the stored one is refused: record ids must
            stay unique.
        map_size: Initial map size in bytes; it doubles whenever a write does not fit.
        max_map_size: Growth limit; ``None`` grows until the disk says no.
        sync: fsync every commit (see the module docstring before turning this off).

    Raises:
        EdgeError: The environment cannot be opened, or ``node`` contradicts the stored id.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        node: str | None = None,
        map_size: int = 64 * _MiB,
        max_map_size: int | None = None,
        sync: bool = True,
    ) -> None:
        if node is not None and not _NODE_RE.fullmatch(node):
            raise EdgeError(
                f"invalid node id {node!r}: use 1-64 letters, digits, '_', '.', '-'", node=node
            )
        self.path = Path(path)
        self._max_map_size = max_map_size
        self._gate = _Gate()
        self._write_lock = threading.Lock()
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(DATABASES),
                sync=sync,
                metasync=sync,
                mode=0o600,
            )
        except lmdb.Error as exc:
            raise EdgeError(
                f"cannot open edge cache at {self.path}: {exc}", path=str(self.path)
            ) from exc
        self._dbs: dict[str, Any] = {name: self._env.open_db(name.encode()) for name in DATABASES}
        self.node = self._init_node(node)

    # Lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the environment; idempotent. Committed data is already on disk."""
        with self._write_lock, self._gate.exclusive():
            self._closed = True
            self._env.close()

    def __enter__(self) -> EdgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    # Key/value --------------------------------------------------------------------------------
    def put(self, db: CacheDb, key: Key, value: Any) -> None:
        self.put_many(db, [(key, value)])

    def put_many(self, db: CacheDb, items: Iterable[tuple[Key, Any]]) -> int:
        """Store every item in one write transaction: all of them or none.

        Returns:
            The number of items written.
        """
        encoded = [(_key(k), _pack(v)) for k, v in items]
        handle = self._db(db)

        def write(txn: lmdb.Transaction[bytes]) -> int:
            with txn.cursor(handle) as cur:
                _, added = cur.putmulti(encoded)
            return added

        return self._write(write)

    def delete_many(self, db: CacheDb, keys: Iterable[Key]) -> int:
        """Delete keys in one write transaction; returns how many existed."""
        encoded = [_key(k) for k in keys]
        handle = self._db(db)
        return self._write(lambda txn: sum(txn.delete(k, db=handle) for k in encoded))

    def get(self, db: CacheDb, key: Key, default: Any = None) -> Any:
        with self._read() as txn:
            raw = txn.get(_key(key), db=self._db(db))
        return default if raw is None else _unpack(raw)

    def get_many(self, db: CacheDb, keys: Iterable[Key]) -> list[Any]:
        """Look keys up in one read transaction; a missing key yields ``None`` in its place.

        The hot path (bytes keys, all present) is one C-level pass: cursor lookup and decode
        per key, no per-key Python frame (py-lmdb's ``getmulti`` builds a (key, value) tuple
        per key and is slower than this).
        """
        wanted = keys if isinstance(keys, list) else list(keys)
        with self._read() as txn, txn.cursor(self._db(db)) as cur:
            try:
                return list(map(_unpack, map(cur.get, wanted)))
            except TypeError:  # a str key, or a missing one (None is not msgpack): key by key
                raws = [cur.get(_key(k)) for k in wanted]
        return [None if raw is None else _unpack(raw) for raw in raws]

    def iter(
        self, db: CacheDb, prefix: Key = b"", *, batch: int = 1000
    ) -> Iterator[tuple[bytes, Any]]:
        """Yield ``(key, value)`` in key order for keys starting with ``prefix``.

        Each ``batch`` is read in its own short transaction: a paused iterator holds no read
        transaction, so it never blocks map growth nor pins old pages. The price is that a
        concurrent writer's changes may appear between batches.
        """
        start = _key(prefix)
        handle = self._db(db)
        after: bytes | None = None
        while True:
            chunk: list[tuple[bytes, bytes]] = []
            with self._read() as txn, txn.cursor(handle) as cur:
                positioned = cur.set_range(after if after is not None else start)
                if positioned and after is not None and cur.key() == after:
                    positioned = cur.next()
                while positioned and len(chunk) < batch:
                    key = cur.key()
                    if not key.startswith(start):
                        break
                    chunk.append((key, cur.value()))
                    positioned = cur.next()
            for key, raw in chunk:
                yield key, _unpack(raw)
            if len(chunk) < batch:
                return
            after = chunk[-1][0]

    def count(self, db: CacheDb) -> int:
        with self._read() as txn:
            return int(txn.stat(self._db(db))["entries"])

    # Cursors ----------------------------------------------------------------------------------
    def set_cursor(self, name: str, value: Any) -> None:
        self.put("cursors", name, value)

    def get_cursor(self, name: str, default: Any = None) -> Any:
        return self.get("cursors", name, default)

    # Outbox -----------------------------------------------------------------------------------
    def outbox_append(self, records: list[dict[str, Any]]) -> list[int]:
        """Queue records in one transaction and return their sequence numbers.

        Each stored record gains ``seq`` and ``rid`` (``"{node}:{seq}"``, unless it already
        has one), so a receiver can deduplicate redeliveries.
        """
        outbox, meta = self._dbs["outbox"], self._dbs["meta"]
        node = self.node

        def write(txn: lmdb.Transaction[bytes]) -> list[int]:
            raw = txn.get(_SEQ_KEY, db=meta)
            last = int.from_bytes(raw, "big") if raw else 0
            seqs = list(range(last + 1, last + 1 + len(records)))
            items = []
            for seq, record in zip(seqs, records, strict=True):
                stored = {**record, "seq": seq}  # in the value too: it ships as stored
                stored.setdefault("rid", f"{node}:{seq}")
                items.append((_seq_key(seq), _pack(stored)))
            with txn.cursor(outbox) as cur:
                cur.putmulti(items, append=True)
            if seqs:
                txn.put(_SEQ_KEY, _seq_key(seqs[-1]), db=meta)
            return seqs

        return self._write(write)

    def outbox_read(self, after_seq: int | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Return up to ``limit`` entries with ``seq > after_seq`` (default: the ack cursor)."""
        if after_seq is None:
            after_seq = self.outbox_acked()
        out: list[OutboxEntry] = []
        with self._read() as txn, txn.cursor(self._dbs["outbox"]) as cur:
            positioned = cur.set_range(_seq_key(after_seq + 1))
            while positioned and len(out) < limit:
                out.append(OutboxEntry(int.from_bytes(cur.key(), "big"), _unpack(cur.value())))
                positioned = cur.next()
        return out

    def outbox_read_raw(self, after_seq: int, limit: int = 100) -> list[tuple[int, bytes]]:
        """Like :meth:`outbox_read` but the values stay msgpack: the sync loop ships them
        as they are stored instead of decoding and re-encoding every record."""
        out: list[tuple[int, bytes]] = []
        with self._read() as txn, txn.cursor(self._dbs["outbox"]) as cur:
            positioned = cur.set_range(_seq_key(after_seq + 1))
            while positioned and len(out) < limit:
                out.append((int.from_bytes(cur.key(), "big"), bytes(cur.value())))
                positioned = cur.next()
        return out

    def outbox_ack(self, upto_seq: int) -> int:
        """Delete entries with ``seq <= upto_seq`` and advance the ack cursor, atomically.

        The cursor never moves backwards (acknowledging an old sequence number is a no-op) and
        never past the last assigned sequence number.

        Returns:
            The number of entries deleted.
        """
        outbox, cursors, meta = self._dbs["outbox"], self._dbs["cursors"], self._dbs["meta"]
        cursor_key = _ACK_CURSOR.encode()

        def write(txn: lmdb.Transaction[bytes]) -> int:
            raw = txn.get(cursor_key, db=cursors)
            acked = _unpack(raw) if raw else 0
            # Never ack a sequence number not assigned yet: it would swallow a future record.
            raw_seq = txn.get(_SEQ_KEY, db=meta)
            upto = min(upto_seq, int.from_bytes(raw_seq, "big") if raw_seq else 0)
            if upto <= acked:
                return 0
            with txn.cursor(outbox) as cur:
                doomed = []
                for key in cur.iternext(values=False):
                    if int.from_bytes(key, "big") > upto:
                        break
                    doomed.append(key)
            for key in doomed:
                txn.delete(key, db=outbox)
            txn.put(cursor_key, _pack(upto), db=cursors)
            return len(doomed)

        return self._write(write)

    def outbox_acked(self) -> int:
        """The highest acknowledged sequence number (0 before the first ack)."""
        return int(self.get_cursor(_ACK_CURSOR, 0))

    def outbox_depth(self) -> int:
        """Entries waiting for acknowledgement."""
        return self.count("outbox")

    # Async twins: the same operations on a worker thread, so the event loop never blocks ----
    async def aput_many(self, db: CacheDb, items: Iterable[tuple[Key, Any]]) -> int:
        return await asyncio.to_thread(self.put_many, db, list(items))

    async def aget(self, db: CacheDb, key: Key, default: Any = None) -> Any:
        return await asyncio.to_thread(self.get, db, key, default)

    async def aget_many(self, db: CacheDb, keys: Iterable[Key]) -> list[Any]:
        return await asyncio.to_thread(self.get_many, db, list(keys))

    async def aitems(self, db: CacheDb, prefix: Key = b"") -> list[tuple[bytes, Any]]:
        return await asyncio.to_thread(lambda: list(self.iter(db, prefix)))

    async def aset_cursor(self, name: str, value: Any) -> None:
        await asyncio.to_thread(self.set_cursor, name, value)

    async def aget_cursor(self, name: str, default: Any = None) -> Any:
        return await asyncio.to_thread(self.get_cursor, name, default)

    async def aoutbox_append(self, records: list[dict[str, Any]]) -> list[int]:
        return await asyncio.to_thread(self.outbox_append, records)

    async def aoutbox_read(
        self, after_seq: int | None = None, limit: int = 100
    ) -> list[OutboxEntry]:
        return await asyncio.to_thread(self.outbox_read, after_seq, limit)

    async def aoutbox_ack(self, upto_seq: int) -> int:
        return await asyncio.to_thread(self.outbox_ack, upto_seq)

    async def aoutbox_depth(self) -> int:
        return await asyncio.to_thread(self.outbox_depth)

    # Internals --------------------------------------------------------------------------------
    def _db(self, name: str) -> Any:
        try:
            return self._dbs[name]
        except KeyError:
            raise EdgeError(
                f"unknown cache database {name!r}; expected one of {', '.join(DATABASES)}",
                database=name,
            ) from None

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction[bytes]]:
        with self._gate.shared():
            self._check_open()
            txn = self._begin_read()
            if txn is not None:
                with txn:
                    yield txn
                return
        # Another process grew the map: adopt its size (no read may be open), then read.
        self._adopt_map_size()
        with self._gate.shared(), self._env.begin() as txn:
            yield txn

    def _begin_read(self) -> lmdb.Transaction[bytes] | None:
        try:
            return self._env.begin()
        except lmdb.MapResizedError:
            return None

    def _write(self, body: Callable[[lmdb.Transaction[bytes]], _T]) -> _T:
        """Run ``body`` in one write transaction, growing the map and replaying on MapFull."""
        with self._write_lock:
            self._check_open()
            while True:
                try:
                    txn = self._env.begin(write=True)
                except lmdb.MapResizedError:
                    self._adopt_map_size()
                    continue
                except lmdb.Error as exc:
                    raise EdgeError(f"edge cache write failed: {exc}", path=str(self.path)) from exc
                try:
                    result = body(txn)
                    txn.commit()
                    return result
                except lmdb.MapFullError:
                    self._abort(txn)
                    self._grow()
                except lmdb.Error as exc:
                    self._abort(txn)
                    raise EdgeError(f"edge cache write failed: {exc}", path=str(self.path)) from exc
                except BaseException:
                    self._abort(txn)
                    raise

    def _abort(self, txn: lmdb.Transaction[bytes]) -> None:
        # py-lmdb 3.0 can starve a write-transaction abort behind a stream of readers (seen:
        # minutes with three reader threads); with the readers drained it is immediate.
        with self._gate.exclusive():
            txn.abort()

    def _check_open(self) -> None:
        if self._closed:
            raise EdgeError(f"edge cache {self.path} is closed", path=str(self.path))

    def _grow(self) -> None:
        current = self.map_size
        new = current * 2
        if self._max_map_size is not None and new > self._max_map_size:
            if current >= self._max_map_size:
                raise EdgeError(
                    f"edge cache is full at max_map_size={self._max_map_size} bytes",
                    path=str(self.path),
                    map_size=current,
                )
            new = self._max_map_size
        with self._gate.exclusive():
            self._env.set_mapsize(new)
        log.info("edge cache %s: map grown from %d to %d bytes", self.path, current, new)

    def _adopt_map_size(self) -> None:
        with self._gate.exclusive():
            self._env.set_mapsize(0)

    def _init_node(self, node: str | None) -> str:
        meta = self._dbs["meta"]

        def write(txn: lmdb.Transaction[bytes]) -> str:
            raw = txn.get(_NODE_KEY, db=meta)
            stored = raw.decode() if raw else None
            if stored is not None:
                if node is not None and node != stored:
                    raise EdgeError(
                        f"edge cache {self.path} belongs to node {stored!r}, not {node!r}",
                        path=str(self.path),
                        node=stored,
                    )
                return stored
            chosen = node or uuid.uuid4().hex[:12]
            txn.put(_NODE_KEY, chosen.encode(), db=meta)
            return chosen

        return self._write(write)
