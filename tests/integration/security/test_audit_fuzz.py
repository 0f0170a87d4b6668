"""Fuzz the stored audit log: flip one byte of one column of one row, delete a row, swap two
rows, forge one -- directly in the SQLite file -- and check that verification catches every
case and names the entry that was touched. The same through `datawave audit verify`."""

from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from datawave.datasource.store import AuditDraft, MetadataStore

N = 200
CASES = 300
DATAWAVE = str(Path(sys.executable).with_name("datawave"))
TEXT_COLUMNS = ("at", "principal", "action", "outcome", "source_id", "target", "detail",
                "prev_hash", "hash")  # fmt: skip
NULLABLE = ("source_id", "target")


@dataclass(frozen=True)
class Case:
    kind: str  # flip | null | delete | delete_last | swap | forge
    seqs: tuple[int, ...]  # the entries the verifier must name
    what: str


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, tuple[int, str]]:
    """A store file holding a 200-entry chain, checkpointed so the file alone is the db."""
    path = tmp_path_factory.mktemp("audit") / "pristine.db"
    store = MetadataStore.open(f"sqlite:///{path}")
    t0 = datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
    rng = random.Random(7)
    store.append_audit_many([
        AuditDraft(
            action=rng.choice(["source.create", "auth.failed", "credential.use", "apikey.revoke"]),
            principal=rng.choice(["apikey:ops", "jwt:alice@example.com", "system:owner-1"]),
            outcome=rng.choice(["ok", "denied", "failed"]),
            source_id=f"{rng.getrandbits(128):032x}"[:36] if rng.random() < 0.6 else None,
            target=rng.choice([None, "/v1/sources", "key-17"]),
            detail={"purpose": rng.choice(["test", "discover"]), "n": i, "ratio": i / 7,
                    "tags": ["a", "b"], "ok": i % 2 == 0, "none": None},
            at=t0 + timedelta(seconds=i, microseconds=rng.randrange(10**6)),
        )
        for i in range(N)
    ])  # fmt: skip
    head = store.audit_head()
    assert store.verify_audit().ok and head is not None and head[0] == N
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path, head


def restore(pristine: Path, to: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{to}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(pristine, to)
    return to


def flip_char(rng: random.Random, value: str) -> str:
    """One bit of one character flipped, staying printable ASCII (the file stays UTF-8)."""
    while True:
        i = rng.randrange(len(value))
        c = chr(ord(value[i]) ^ (1 << rng.randrange(7)))
        if c != value[i] and " " <= c <= "~":
            return value[:i] + c + value[i + 1 :]


def mutate(db: Path, rng: random.Random, kind: str) -> Case:
    conn = sqlite3.connect(db)
    try:
        if kind == "flip":
            seq = rng.randint(1, N)
            column = rng.choice(("seq", *TEXT_COLUMNS))
            if column == "seq":
                new = seq
                while new <= N:  # another seq, not an existing one
                    new = seq ^ (1 << rng.randrange(12))
                conn.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (new, seq))
                return Case(kind, (seq,), f"seq {seq} -> {new}")
            (value,) = conn.execute(f"SELECT {column} FROM audit_log WHERE seq = ?",
                                    (seq,)).fetchone()  # fmt: skip
            new_value = flip_char(rng, "key-17" if value is None else str(value))
            conn.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = ?", (new_value, seq))
            return Case(kind, (seq,), f"{column} of {seq}: {value!r} -> {new_value!r}")
        if kind == "null":
            seq = rng.randint(1, N)
            column = rng.choice(NULLABLE)
            (value,) = conn.execute(f"SELECT {column} FROM audit_log WHERE seq = ?",
                                    (seq,)).fetchone()  # fmt: skip
            new_value = None if value is not None else "src-forged"
            conn.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = ?", (new_value, seq))
            return Case(kind, (seq,), f"{column} of {seq}: {value!r} -> {new_value!r}")
        if kind == "delete":
            seq = rng.randint(1, N - 1)
            conn.execute("DELETE FROM audit_log WHERE seq = ?", (seq,))
            return Case(kind, (seq,), f"delete {seq}")
        if kind == "delete_last":
            conn.execute("DELETE FROM audit_log WHERE seq = ?", (N,))
            return Case(kind, (N,), f"delete {N} (the last)")
        if kind == "swap":  # every column but seq: the rows change places in the chain
            a, b = sorted(rng.sample(range(1, N + 1), 2))
            cols = ", ".join(TEXT_COLUMNS)
            row_a = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = ?", (a,)).fetchone()
            row_b = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = ?", (b,)).fetchone()
            sets = ", ".join(f"{c} = ?" for c in TEXT_COLUMNS)
            conn.execute(f"UPDATE audit_log SET {sets} WHERE seq = ?", (*row_b, a))
            conn.execute(f"UPDATE audit_log SET {sets} WHERE seq = ?", (*row_a, b))
            return Case(kind, (a, b), f"swap {a} and {b}")
        if kind == "forge":  # a new last entry that links correctly but was not hashed by us
            (prev,) = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (N,)).fetchone()
            conn.execute(
                "INSERT INTO audit_log (seq, at, principal, action, outcome, detail, prev_hash, "
                "hash) VALUES (?, '2026-02-03 05:00:00.000000', 'apikey:ops', 'source.delete', "
                "'ok', '{}', ?, ?)",
                (N + 1, prev, f"{rng.getrandbits(256):064x}"),
            )
            return Case(kind, (N + 1,), "forged entry appended")
        raise AssertionError(kind)
    finally:
        conn.commit()
        conn.close()


KINDS = ["flip"] * 6 + ["null", "delete", "swap", "forge", "delete_last"]


def test_every_single_edit_deletion_and_reordering_is_caught(pristine, tmp_path):
    source, head = pristine
    rng = random.Random(20261125)
    seen_kinds: set[str] = set()
    misses: list[str] = []
    for _ in range(CASES):
        db = restore(source, tmp_path / "case.db")
        kind = rng.choice(KINDS)
        case = mutate(db, rng, kind)
        seen_kinds.add(kind)
        store = MetadataStore(f"sqlite:///{db}")
        try:
            expected = head if kind == "delete_last" else None
            report = store.verify_audit(expected_head=expected, batch_size=37)
            if kind == "delete_last":  # without a recorded head a cut-off tail is invisible
                assert store.verify_audit().ok, "tail truncation unexpectedly visible"
        finally:
            store.close()
        named = {p.seq for p in report.problems}
        if report.ok or not set(case.seqs) <= named:
            misses.append(f"{case.what}: ok={report.ok} problems={report.problems}")
    assert misses == [], "\n".join(misses[:10])
    assert seen_kinds == set(KINDS)


def test_the_untouched_copy_still_verifies(pristine, tmp_path):
    source, head = pristine
    db = restore(source, tmp_path / "copy.db")
    store = MetadataStore(f"sqlite:///{db}")
    try:
        report = store.verify_audit(expected_head=head)
    finally:
        store.close()
    assert report.ok and report.checked == N


def _verify_cli(db: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATAWAVE_DATA_DIR": str(tmp_path),
           "DATAWAVE_STORE_URL": f"sqlite:///{db}"}  # fmt: skip
    return subprocess.run([DATAWAVE, "audit", "verify", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("kind", ["flip", "null", "delete", "swap", "forge", "delete_last"])
def test_the_cli_exits_non_zero_and_names_the_entry(pristine, tmp_path, kind):
    source, head = pristine
    db = restore(source, tmp_path / "cli.db")
    case = mutate(db, random.Random(kind), kind)
    args = ("--expect-head", f"{head[0]}:{head[1]}") if kind == "delete_last" else ()

    proc = _verify_cli(db, tmp_path, *args)

    assert proc.returncode == 1, (case, proc.stdout, proc.stderr)
    message = " ".join(proc.stderr.split())
    assert "audit log does not verify" in message
    assert f"first at seq {min(case.seqs)}" in message, (case, message)
    assert "Traceback" not in proc.stderr
