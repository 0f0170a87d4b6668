"""The audit log table: appending to the hash chain, querying it, verifying it.

Appends are serialized across threads *and* processes by the database itself, so the chain
never forks: the writer takes a lock that lasts until its commit (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL ``pg_advisory_xact_lock``), reads the newest entry, and inserts the next ``seq``
with that entry's hash as ``prev_hash``. ``seq`` is the primary key, so even a writer that
bypassed the lock could not create a duplicate.

Verification streams the table in ``seq`` order (a server-side cursor on PostgreSQL), so a
log of millions of entries is checked in constant memory. On SQLite, timestamps and JSON are
read as raw text and must be exactly what the writer stored: a row whose text was edited
(even into an equivalent value) is reported as tampered at its ``seq`` instead of stopping
the walk or slipping through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Text, insert, select, text, type_coerce
from sqlalchemy.exc import SQLAlchemyError

from datawave.datasource.errors import StoreError, ValidationFailed, redact
from datawave.datasource.security.audit import (
    GENESIS,
    OUTCOMES,
    AuditEntry,
    AuditReport,
    ChainVerifier,
    entry_hash,
    sanitize_detail,
)
from datawave.datasource.store.base import StoreBase, aware, utcnow
from datawave.datasource.store.tables import audit_log

__all__ = ["MAX_AUDIT_PAGE", "AuditDraft", "AuditMixin"]

#: Most entries one :meth:`AuditMixin.query_audit` call returns.
MAX_AUDIT_PAGE = 1000
# Any fixed 64-bit number: all datawave processes take the same advisory lock to append.
_PG_LOCK_KEY = 0x6477_6175_6469_7401
# How SQLAlchemy writes a DateTime on SQLite. Reading text back, anything else is an edit
# (``fromisoformat`` alone would accept e.g. any separator between date and time).
_SQLITE_AT = "%Y-%m-%d %H:%M:%S.%f"
_ENTRY_FIELDS = tuple(AuditEntry.model_fields)


@dataclass(frozen=True)
class AuditDraft:
    """An entry to append; :meth:`AuditMixin.append_audit_many` gives it ``seq`` and hashes."""

    action: str
    principal: str
    outcome: str = "ok"
    source_id: str | None = None
    target: str | None = None
    detail: Mapping[str, Any] | None = None
    at: datetime | None = None


def _short(value: str | None, size: int) -> str | None:
    return None if value is None else redact(str(value))[:size]


def _utc(at: datetime) -> datetime:
    return (aware(at) or at).astimezone(UTC)


def _fields(draft: AuditDraft, seq: int, now: datetime) -> dict[str, Any]:
    """The stored, hashed form of a draft: redacted, cut to the column sizes, UTC."""
    if draft.outcome not in OUTCOMES:
        raise ValidationFailed(
            f"audit outcome must be one of {', '.join(OUTCOMES)}",
            errors=[{"field": "outcome", "message": "invalid", "type": "literal_error"}],
        )
    if not draft.action or not draft.principal:
        raise ValidationFailed(
            "an audit entry needs an action and a principal",
            errors=[{"field": "action" if not draft.action else "principal",
                     "message": "required", "type": "missing"}],
        )  # fmt: skip
    return {
        "seq": seq,
        "at": _utc(draft.at or now),
        "principal": _short(draft.principal, 256),
        "action": _short(draft.action, 64),
        "outcome": draft.outcome,
        "source_id": _short(draft.source_id, 36),
        "target": _short(draft.target, 256),
        "detail": sanitize_detail(draft.detail),
    }


def _decode(m: Mapping[Any, Any]) -> AuditEntry:
    """A stored row as an entry; ValueError / ValidationError when a field no longer parses."""
    seq = m["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError("seq is not an integer")
    at = m["at"]
    if isinstance(at, str):  # SQLite: the text SQLAlchemy wrote, and nothing else
        raw, at = at, datetime.fromisoformat(at)
        if at.strftime(_SQLITE_AT) != raw:
            raise ValueError("at is not in the stored timestamp form")
    if not isinstance(at, datetime):
        raise ValueError("at is not a timestamp")
    detail = m["detail"]
    if isinstance(detail, str):  # SQLite: must be exactly what json.dumps wrote
        raw, detail = detail, json.loads(detail)
        if json.dumps(detail) != raw:
            raise ValueError("detail is not in the stored JSON form")
    if not isinstance(detail, dict):
        raise ValueError("detail is not a JSON object")
    row = {name: m[name] for name in _ENTRY_FIELDS}
    return AuditEntry.model_validate({**row, "at": _utc(at), "detail": detail})


class AuditMixin(StoreBase):
    # -- writing -------------------------------------------------------------------------------
    def append_audit(
        self,
        action: str,
        *,
        principal: str,
        outcome: str = "ok",
        source_id: str | None = None,
        target: str | None = None,
        detail: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> AuditEntry:
        """Append one entry to the chain and return it (with its ``seq`` and ``hash``).

        ``detail`` is sanitized first (credentials removed, strings redacted, size capped), and
        ``principal`` / ``target`` are redacted: the log is kept forever and must hold no
        secret. Safe under concurrent writers in any number of processes.

        Args:
            action: what happened, dotted (``source.create``, ``auth.failed``).
            principal: who did it (a :attr:`Principal.label` or ``system:<component>``).
            outcome: ``ok``, ``denied`` or ``failed``.
            source_id: the source acted on, if any.
            target: what else was acted on (an API key id, an edge site, a route).
            detail: small JSON-able context; never a credential.
            at: when; default now.

        Raises:
            ValidationFailed: an unknown outcome or an empty action / principal.
            StoreError: the store could not be written.
        """
        draft = AuditDraft(action, principal, outcome, source_id, target, detail, at)
        return self.append_audit_many([draft])[0]

    def append_audit_many(self, drafts: Sequence[AuditDraft]) -> list[AuditEntry]:
        """Append several entries in one transaction (one lock, one commit), in order."""
        if not drafts:
            return []
        now = utcnow()
        with self._audit_writer() as conn:
            last = conn.execute(
                select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
            ).first()
            seq, prev = (int(last.seq), str(last.hash)) if last is not None else (0, GENESIS)
            rows = []
            for draft in drafts:
                seq += 1
                row = _fields(draft, seq, now)
                row["prev_hash"] = prev
                row["hash"] = prev = entry_hash(prev, row)
                rows.append(row)
            conn.execute(insert(audit_log), rows)
        return [AuditEntry.model_validate(r) for r in rows]

    @contextmanager
    def _audit_writer(self) -> Iterator[Connection]:
        """One append transaction, holding the cross-process lock until it commits.

        On an error the connection is closed unfinished, which rolls the transaction back.
        """
        try:
            with self.engine.connect() as conn:
                if self.dialect == "sqlite":
                    # pysqlite would BEGIN (deferred) only at the INSERT, after the head is read.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                elif self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                yield conn
                conn.commit()
        except SQLAlchemyError as exc:
            raise StoreError(
                f"audit append failed: {type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"
            ) from exc

    # -- reading -------------------------------------------------------------------------------
    def _audit_columns(self) -> list[Any]:
        """Columns as read for decoding: on SQLite timestamps and JSON stay raw text, so a row
        edited into an unparseable value is still read (and reported) instead of raising."""
        cols = [audit_log.c[name] for name in _ENTRY_FIELDS]
        if self.dialect != "sqlite":
            return cols
        raw = {"at", "detail"}
        return [type_coerce(c, Text).label(c.name) if c.name in raw else c for c in cols]

    def query_audit(
        self,
        *,
        principal: str | None = None,
        source_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        """Entries matching every given filter, in ``seq`` order (newest first if asked).

        Page forward with ``after_seq`` = the last ``seq`` returned (backward, with
        ``newest_first``, via ``before_seq``). ``action`` ending in ``*`` matches a prefix
        (``auth.*``). ``since`` is inclusive, ``until`` exclusive. ``limit`` is capped at
        :data:`MAX_AUDIT_PAGE`.

        Raises:
            StoreError: the store could not be read, or a matching row no longer loads (it
                was edited: run ``datawave audit verify``).
        """
        c = audit_log.c
        q = select(*self._audit_columns())
        if principal is not None:
            q = q.where(c.principal == principal)
        if source_id is not None:
            q = q.where(c.source_id == source_id)
        if action is not None:
            if action.endswith("*"):
                prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                q = q.where(c.action.like(prefix + "%", escape="\\"))
            else:
                q = q.where(c.action == action)
        if since is not None:
            q = q.where(c.at >= _utc(since))
        if until is not None:
            q = q.where(c.at < _utc(until))
        if after_seq is not None:
            q = q.where(c.seq > after_seq)
        if before_seq is not None:
            q = q.where(c.seq < before_seq)
        q = q.order_by(c.seq.desc() if newest_first else c.seq)
        q = q.limit(max(1, min(int(limit), MAX_AUDIT_PAGE)))
        with self.read() as conn:
            rows = conn.execute(q).all()
        out = []
        for row in rows:
            try:
                out.append(_decode(row._mapping))
            except (ValueError, ValidationError) as exc:
                raise StoreError(
                    f"audit entry {row.seq} does not load ({type(exc).__name__}): it was edited; "
                    "run `datawave audit verify`"
                ) from None
        return out

    def audit_head(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the newest entry as stored (unverified), or None when empty."""
        with self.read() as conn:
            row = conn.execute(
                select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
            ).first()
        return None if row is None else (int(row.seq), str(row.hash))

    def iter_audit(self, *, batch_size: int = 1000) -> Iterator[Mapping[Any, Any]]:
        """Every stored row, raw, in ``seq`` order, fetched ``batch_size`` at a time."""
        q = select(*self._audit_columns()).order_by(audit_log.c.seq)
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(yield_per=batch_size).execute(q)
                for row in result:
                    yield row._mapping
        except SQLAlchemyError as exc:
            raise StoreError(f"store read failed: {type(exc).__name__}") from exc

    def verify_audit(
        self, *, expected_head: tuple[int, str] | None = None, batch_size: int = 1000
    ) -> AuditReport:
        """Walk the whole chain in ``seq`` order and report every problem found.

        Args:
            expected_head: ``(seq, hash)`` recorded earlier (``datawave audit head``); without
                it, entries cut off the end of the log cannot be noticed.
            batch_size: rows fetched per round trip; memory stays bounded by it.
        """
        verifier = ChainVerifier(expected_head=expected_head)
        for m in self.iter_audit(batch_size=batch_size):
            try:
                entry = _decode(m)
            except (ValueError, ValidationError) as exc:
                seq = m["seq"] if isinstance(m["seq"], int) else None
                verifier.feed_unreadable(seq, m["hash"], _reason(exc))
                continue
            verifier.feed(entry)
        return verifier.report()


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors())
    return type(exc).__name__ if isinstance(exc, json.JSONDecodeError) else str(exc)[:120]
