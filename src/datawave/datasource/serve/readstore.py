"""The API's read path to the metadata store.

The store uses ``NullPool`` for SQLite files (right for writers in many processes), which costs a
fresh connection and its PRAGMAs on every call: about 3 ms per read. API replicas only read, so
they keep a small pool of read connections instead. PostgreSQL stores are pooled already.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.pool import QueuePool

from datawave.datasource.models import SourceRecord
from datawave.datasource.store import MetadataStore

__all__ = ["SourceCache", "open_read_store", "open_write_store"]


def _read_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def open_read_store(url: str, *, pool_size: int = 16) -> MetadataStore:
    """A sealer-less store for reads; SQLite files get a pooled, query-only engine."""
    store = MetadataStore(url)
    if store.dialect == "sqlite" and ":memory:" not in url:
        store.engine.dispose()
        store.engine = create_engine(
            store.url, poolclass=QueuePool, pool_size=pool_size, max_overflow=pool_size,
            connect_args={"timeout": 30, "check_same_thread": False},
        )  # fmt: skip
        event.listen(store.engine, "connect", _read_pragmas)
    return store


def _write_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_write_store(url: str, *, pool_size: int = 4) -> MetadataStore:
    """A sealer-less, writable store for the API's own rows: API keys (each authentication may
    record a last use) and the audit log. It cannot open or write source secrets."""
    store = MetadataStore(url)
    if store.dialect == "sqlite" and ":memory:" not in url:
        store.engine.dispose()
        store.engine = create_engine(
            store.url, poolclass=QueuePool, pool_size=pool_size, max_overflow=pool_size * 2,
            connect_args={"timeout": 30, "check_same_thread": False},
        )  # fmt: skip
        event.listen(store.engine, "connect", _write_pragmas)
    return store


class SourceCache:
    """Resolves a source reference for metadata reads, cached for ``ttl_s``.

    Metadata reads only need the source id; an id never changes meaning, and a name is
    re-resolved after ``ttl_s``. Routes that answer with the source itself (``ETag``!) and every
    mutation read the store directly instead.
    """

    def __init__(self, ttl_s: float = 2.0, capacity: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._items: dict[str, tuple[float, SourceRecord]] = {}

    def get(self, ref: str) -> SourceRecord | None:
        hit = self._items.get(ref)
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return None
        return hit[1]

    def put(self, ref: str, rec: SourceRecord) -> None:
        if len(self._items) >= self.capacity:
            self._items.clear()
        self._items[ref] = (time.monotonic(), rec)
