"""The hash-chained audit log: entries, their canonical encoding, and the chain verifier.

Each entry carries the hash of the entry before it (``prev_hash``; the first one carries
:data:`GENESIS`) and its own hash over that and its content::

    hash = sha256(prev_hash + "\\n" + canonical(entry)).hexdigest()

``canonical`` is compact, key-sorted JSON of ``seq, at, principal, action, outcome, source_id,
target, detail`` with ``at`` as ISO-8601 UTC with microseconds, so the same entry hashes the
same on SQLite and PostgreSQL. Editing any field of a stored entry breaks its hash; deleting
one leaves a gap in ``seq`` and breaks the next entry's link; reordering breaks both.

What the chain cannot show on its own: that the newest entries were cut off (the shortened
chain is still a valid chain), or that someone with write access rebuilt every hash after an
edit (the hash is not keyed). Both are caught against a head recorded elsewhere: ship
``datawave audit head`` (``seq:hash``) to another system now and then, and verify with
``--expect-head`` (``expected_head=``), which checks the entry at that ``seq`` still has that
hash and that the log has not been truncated below it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from datawave.datasource.errors import AuditTampered, redact

__all__ = [
    "GENESIS",
    "MAX_DETAIL_BYTES",
    "OUTCOMES",
    "AuditEntry",
    "AuditProblem",
    "AuditReport",
    "ChainVerifier",
    "canonical",
    "entry_hash",
    "format_at",
    "parse_head",
    "sanitize_detail",
    "verify_chain",
]

#: ``prev_hash`` of the first entry.
GENESIS = "0" * 64
#: Outcomes an entry may record.
OUTCOMES: tuple[str, ...] = ("ok", "denied", "failed")
#: Largest encoded ``detail`` kept; a bigger one is replaced by a truncated preview.
MAX_DETAIL_BYTES = 4096
_MAX_STRING = 1024
_MAX_DEPTH = 6
_MAX_ITEMS = 100
# Keys whose values are credentials whatever they hold: never written, even redacted.
_SECRET_KEY = re.compile(
    r"(?i)(pass(word|wd)?|pwd|secret|token|api[_-]?key|authorization|private[_-]?key|"
    r"credential|cookie|dsn|kek)"
)
# ... unless the key names a handle or a description of one, not the credential itself.
_HANDLE_KEY = re.compile(
    r"(?i)(^|[_-])(id|ids|prefix|fields|name|names|kind|type|count|fingerprint|source|purpose)$"
)

ProblemKind = Literal["hash", "link", "missing", "order", "duplicate", "unreadable", "head"]
_FIELDS = ("seq", "at", "principal", "action", "outcome", "source_id", "target", "detail")


class AuditEntry(BaseModel):
    """One entry of the audit log.

    ``outcome`` is ``ok``, ``denied`` or ``failed`` when written; it is typed ``str`` here so
    a tampered entry still loads and is reported as tampered rather than unreadable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(description="Position in the chain, from 1, without gaps")
    at: datetime = Field(description="When it happened (UTC)")
    principal: str = Field(description="Who: a principal label (`apikey:ops`, `system:...`)")
    action: str = Field(description="What: `source.create`, `auth.failed`, `credential.use` ...")
    outcome: str = Field(description="`ok`, `denied` or `failed`")
    source_id: str | None = None
    target: str | None = Field(None, description="What was acted on, when not a source")
    detail: dict[str, Any] = Field(default_factory=dict, description="Redacted context")
    prev_hash: str = Field(description="Hash of the entry before (64 zeros for the first)")
    hash: str = Field(description="sha256 over prev_hash and the canonical entry")

    def fields(self) -> dict[str, Any]:
        """The hashed fields, as :func:`entry_hash` takes them."""
        return {name: getattr(self, name) for name in _FIELDS}


class AuditProblem(BaseModel):
    """One way the chain fails to verify, at one ``seq`` (None when even that is unreadable)."""

    seq: int | None
    kind: ProblemKind
    message: str


class AuditReport(BaseModel):
    """The result of verifying a chain. ``head_seq`` / ``head_hash`` are the last entry seen."""

    ok: bool
    checked: int
    head_seq: int | None = None
    head_hash: str | None = None
    problems: list[AuditProblem] = Field(default_factory=list)

    @property
    def head(self) -> str | None:
        """``seq:hash`` of the last entry, the form ``--expect-head`` takes."""
        return None if self.head_seq is None else f"{self.head_seq}:{self.head_hash}"

    def raise_if_tampered(self) -> None:
        """Raise :class:`AuditTampered` naming the first problem, when there is one."""
        if not self.ok:
            first = self.problems[0]
            raise AuditTampered(
                f"audit log does not verify: {len(self.problems)} problem(s), first at seq "
                f"{first.seq}: {first.message}",
                problems=len(self.problems),
                seq=first.seq,
            )


def format_at(at: datetime) -> str:
    """``at`` as it is hashed: ISO-8601 UTC with microseconds (naive values are UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(entry_fields: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON of the hashed fields; the same bytes on every store."""
    body = {name: entry_fields.get(name) for name in _FIELDS}
    body["at"] = format_at(body["at"]) if isinstance(body["at"], datetime) else body["at"]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, entry_fields: Mapping[str, Any]) -> str:
    """The hash of an entry: ``sha256(prev_hash + "\\n" + canonical(fields))`` as hex."""
    data = f"{prev_hash}\n{canonical(entry_fields)}".encode()
    return hashlib.sha256(data).hexdigest()


def parse_head(text: str) -> tuple[int, str]:
    """``"SEQ:HASH"`` -> ``(seq, hash)``; ValueError with a reason otherwise."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"expected head as SEQ:HASH (64 hex digits), got {text[:80]!r}")
    return int(seq), digest


def sanitize_detail(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """Make ``detail`` safe to keep forever: JSON-only values, credentials removed, bounded.

    Values under credential-like keys (``password``, ``token``, ``dsn`` ...) become ``***``
    (handles such as ``token_id`` or ``apikey_prefix`` are kept);
    every string goes through :func:`redact` (DSN passwords, ``password=...`` pairs) and is
    cut at 1 KiB; depth and list lengths are bounded; an encoding over
    :data:`MAX_DETAIL_BYTES` is replaced by a truncated, still-redacted preview.
    """
    clean = _clean(dict(detail or {}), 0)
    assert isinstance(clean, dict)
    encoded = json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    size = len(encoded.encode())
    if size <= MAX_DETAIL_BYTES:
        return clean
    return {"truncated": True, "bytes": size, "preview": encoded[: MAX_DETAIL_BYTES // 4]}


def _clean(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, str):
        return redact(value)[:_MAX_STRING]
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= _MAX_ITEMS:
                out["…"] = f"{len(value) - _MAX_ITEMS} more"
                break
            key = redact(str(k))[:128]
            secret = _SECRET_KEY.search(key) and not _HANDLE_KEY.search(key)
            out[key] = "***" if secret else _clean(v, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        cleaned = [_clean(v, depth + 1) for v in items[:_MAX_ITEMS]]
        if len(items) > _MAX_ITEMS:
            cleaned.append(f"… {len(items) - _MAX_ITEMS} more")
        return cleaned
    if isinstance(value, datetime):
        return format_at(value)
    return redact(str(value))[:_MAX_STRING]


class ChainVerifier:
    """Walks entries one at a time (so a 100k-entry log streams) and collects problems.

    Entries are expected in ``seq`` order, starting at 1 (or right after ``anchor``). Every
    problem is reported, not only the first: an edited entry (its hash), a broken link (its
    ``prev_hash``), missing entries (a gap never filled), entries out of order or repeated,
    entries that do not even load, and -- with ``expected_head`` -- a head that changed or was
    cut off. Memory is bounded by the number of gaps, not of entries.

    Args:
        expected_head: ``(seq, hash)`` recorded earlier; detects truncation and rewrites.
        anchor: ``(seq, hash)`` of the entry before the first one fed, to verify a suffix.
    """

    def __init__(
        self,
        *,
        expected_head: tuple[int, str] | None = None,
        anchor: tuple[int, str] | None = None,
    ) -> None:
        self.expected_head = expected_head
        self._top_seq, self._top_hash = anchor or (0, GENESIS)  # the highest seq so far
        self._pred: tuple[int, str] | None = None  # the entry fed just before
        self._gaps: list[list[int]] = []  # [first, last, seq that jumped over them, filled]
        self._head_seen = False
        self.checked = 0
        self.problems: list[AuditProblem] = []

    def _problem(self, seq: int | None, kind: ProblemKind, message: str) -> None:
        self.problems.append(AuditProblem(seq=seq, kind=kind, message=message))

    def _place(self, seq: int, prev_hash: str | None) -> None:
        """Check where ``seq`` falls and what it links to, then make it the predecessor."""
        top, top_hash, pred = self._top_seq, self._top_hash, self._pred
        if seq > top:
            if seq > top + 1:
                self._gaps.append([top + 1, seq - 1, seq, 0])
            elif prev_hash is not None and prev_hash != top_hash:
                self._problem(seq, "link", f"entry {seq} does not link to entry {top} "
                              "(its prev_hash differs)")  # fmt: skip
        elif not self._fill(seq):
            self._problem(seq, "duplicate", f"entry {seq} appears more than once")
        else:
            where = f"after entry {pred[0]}" if pred is not None else "first"
            self._problem(seq, "order", f"entry {seq} is out of order (comes {where})")
            if pred is not None and seq == pred[0] + 1 and prev_hash not in (None, pred[1]):
                self._problem(seq, "link", f"entry {seq} does not link to entry {pred[0]}")

    def _fill(self, seq: int) -> bool:
        """Take ``seq`` out of a gap it was missing from; False when it is not missing."""
        for i, gap in enumerate(self._gaps):
            first, last, jumper, filled = gap
            if first <= seq <= last:
                gap[3] = filled + 1
                if filled + 1 == last - first + 1:  # the whole gap turned up: it was moved
                    del self._gaps[i]
                    self._problem(jumper, "order", f"entry {jumper} is out of order (comes "
                                  f"before {_span(first, last)})")  # fmt: skip
                return True
        return False

    def _seen(self, seq: int, digest: str) -> None:
        self._pred = (seq, digest)
        if seq > self._top_seq:
            self._top_seq, self._top_hash = seq, digest
        if self.expected_head is not None and seq == self.expected_head[0]:
            self._head_seen = True
            if digest != self.expected_head[1]:
                self._problem(seq, "head", f"entry {seq} no longer has the recorded head hash")

    def feed(self, entry: AuditEntry) -> None:
        self.checked += 1
        if entry_hash(entry.prev_hash, entry.fields()) != entry.hash:
            self._problem(entry.seq, "hash", f"entry {entry.seq} does not match its hash (edited)")
        self._place(entry.seq, entry.prev_hash)
        self._seen(entry.seq, entry.hash)

    def feed_unreadable(self, seq: int | None, stored_hash: Any, reason: str) -> None:
        """A stored row that does not load as an entry (a field no longer parses)."""
        self.checked += 1
        where = f"entry {seq}" if seq is not None else "an entry with an unreadable seq"
        self._problem(seq, "unreadable", f"{where} does not load ({reason}): edited")
        if seq is not None:
            self._place(seq, None)
            self._seen(seq, stored_hash if isinstance(stored_hash, str) else "")

    def report(self) -> AuditReport:
        problems = list(self.problems)
        for first, last, jumper, filled in self._gaps:
            some = f" ({filled} of them turned up out of order)" if filled else ""
            problems.append(AuditProblem(
                seq=first, kind="missing",
                message=f"{_span(first, last)} missing (deleted?) before entry {jumper}{some}",
            ))  # fmt: skip
        if self.expected_head is not None and not self._head_seen:
            seq, digest = self.expected_head
            if seq == 0:  # the head of an empty log
                if digest != GENESIS:
                    problems.append(AuditProblem(
                        seq=0, kind="head", message="a recorded head 0 must be the genesis hash"
                    ))  # fmt: skip
            elif self._top_seq < seq:
                first = self._top_seq + 1
                problems.append(AuditProblem(
                    seq=first, kind="head",
                    message=f"log ends at entry {self._top_seq} but the recorded head is entry "
                    f"{seq}: entries from {first} on were removed (truncated)",
                ))  # fmt: skip
            elif not self._gaps:
                problems.append(AuditProblem(
                    seq=seq, kind="head", message=f"the recorded head entry {seq} is missing"
                ))  # fmt: skip
        problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
        seen = self.checked > 0
        return AuditReport(
            ok=not problems,
            checked=self.checked,
            head_seq=self._top_seq if seen else None,
            head_hash=self._top_hash if seen else None,
            problems=problems,
        )


def _span(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first}..{last}"


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    expected_head: tuple[int, str] | None = None,
    anchor: tuple[int, str] | None = None,
) -> AuditReport:
    """Verify ``entries`` in the order given (which should be ``seq`` order).

    Args:
        entries: the chain, oldest first; may be a generator.
        expected_head: ``(seq, hash)`` recorded earlier (catches truncation of the tail).
        anchor: ``(seq, hash)`` of the entry before the first one, when verifying a suffix.

    Returns:
        An :class:`AuditReport`; ``ok`` only when no problem was found.
    """
    verifier = ChainVerifier(expected_head=expected_head, anchor=anchor)
    for entry in entries:
        verifier.feed(entry)
    return verifier.report()
