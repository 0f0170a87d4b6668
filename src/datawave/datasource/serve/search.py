"""In-replica search index over table and column names and comments.

``LIKE '%q%'`` cannot use a b-tree, so the store scans every column on each search (~70 ms per
60,000 columns on SQLite, growing linearly). The API instead keeps, per replica, every name and
comment lower-cased in one string and finds substrings with ``str.find`` (C speed, ~1 ms for
100,000+ columns), mapping offsets back to rows with ``bisect``.

Freshness: before answering, a cheap aggregate over ``tables`` (row count, newest
``updated_at``, total column count) is compared with the one the index was built from; any
discovery that adds, replaces or deletes tables changes it and the index is rebuilt (on a worker
thread; concurrent searches wait for the one rebuild). The aggregate is re-read at most once a
second, so a search sees a finished discovery within ``recheck_s``.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from datawave.datasource.store import MetadataStore
from datawave.datasource.store.assets import decode_columns
from datawave.datasource.store.tables import tables

__all__ = ["SearchIndex"]

_ENTRY = "\x01"


class _Part:
    """One haystack: entries joined by a separator, plus each entry's start offset."""

    def __init__(self, texts: list[str]) -> None:
        self.text = _ENTRY.join(texts)
        self.starts: list[int] = []
        pos = 0
        for t in texts:
            self.starts.append(pos)
            pos += len(t) + 1

    def find(self, needle: str, want: int, accept: Any) -> list[int]:
        out: list[int] = []
        pos = self.text.find(needle)
        while pos != -1 and len(out) < want:
            i = bisect_right(self.starts, pos) - 1
            if accept(i):
                out.append(i)
            nxt = self.starts[i + 1] if i + 1 < len(self.starts) else len(self.text)
            pos = self.text.find(needle, nxt)
        return out


class SearchIndex:
    def __init__(self, *, recheck_s: float = 1.0) -> None:
        self.recheck_s = recheck_s
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._tables: list[tuple[Any, ...]] = []
        self._columns: list[tuple[Any, ...]] = []
        self._tpart = _Part([])
        self._cpart = _Part([])

    @staticmethod
    def _version(store: MetadataStore) -> tuple[Any, ...]:
        q = select(func.count(), func.max(tables.c.updated_at), func.sum(tables.c.column_count))
        with store.read() as conn:
            row = conn.execute(q).one()
        return tuple(row)

    def _build(self, store: MetadataStore, key: tuple[Any, ...]) -> None:
        tq = select(tables.c.id, tables.c.source_id, tables.c.database, tables.c.schema,
                    tables.c.name, tables.c.kind, tables.c.comment, tables.c.column_doc)  # fmt: skip
        with store.read() as conn:
            trows = [tuple(r) for r in conn.execute(tq)]
        t_list = [t[1:7] for t in trows]
        # Columns live in one JSON document per table; listed by (table id, ordinal).
        c_list = [(t[1], t[2], t[3], t[4], c.name, c.data_type, c.comment)
                  for t in sorted(trows, key=lambda t: t[0]) for c in decode_columns(t[7])]  # fmt: skip
        tpart = _Part([f"{t[3]}\x00{t[5] or ''}".lower() for t in t_list])
        cpart = _Part([f"{c[4]}\x00{c[6] or ''}".lower() for c in c_list])
        self._tables, self._columns, self._tpart, self._cpart = t_list, c_list, tpart, cpart
        self._key = key

    def search(
        self,
        store: MetadataStore,
        q: str,
        *,
        limit: int = 50,
        source_ids: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Same results as ``MetadataStore.search``: table hits first, then column hits."""
        needle = q.lower().replace(_ENTRY, "").replace("\x00", "")
        if not needle:
            return []
        now = time.monotonic()
        if self._key is None or now - self._checked_at > self.recheck_s:
            key = self._version(store)
            self._checked_at = now
        else:
            key = self._key
        if key != self._key:
            with self._lock:
                if key != self._key:
                    self._build(store, key)
        tables_, columns_ = self._tables, self._columns
        allowed = set(source_ids) if source_ids is not None else None
        hits: list[dict[str, Any]] = []
        for i in self._tpart.find(
            needle, limit, lambda i: allowed is None or tables_[i][0] in allowed
        ):
            s, db, sc, name, kind, comment = tables_[i]
            hits.append({"type": "table", "source_id": s, "database": db, "schema": sc,
                         "table": name, "kind": kind, "comment": comment})  # fmt: skip
        left = limit - len(hits)
        if left > 0:
            for i in self._cpart.find(
                needle, left, lambda i: allowed is None or columns_[i][0] in allowed
            ):
                s, db, sc, t, col, dtype, comment = columns_[i]
                hits.append({"type": "column", "source_id": s, "database": db, "schema": sc,
                             "table": t, "column": col, "data_type": dtype, "comment": comment})  # fmt: skip
        return hits
