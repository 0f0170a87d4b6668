"""The audit log in the real store, on SQLite and PostgreSQL: appends, queries, verification,
and concurrent writers in several threads and several processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from datawave.datasource.errors import StoreError, ValidationFailed
from datawave.datasource.security.audit import GENESIS, verify_chain
from datawave.datasource.store import AuditDraft, MetadataStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_store_url")


@pytest.fixture
def store(store_url: str):
    s = MetadataStore.open(store_url)
    yield s
    s.close()


def test_appends_form_a_chain_that_reads_back_exactly(store):
    detail = {"name": "orders", "ratio": 1 / 3, "big": 2**53 + 1, "tags": ["é", 1, None],
              "nested": {"b": None, "a": True}}  # fmt: skip
    first = store.append_audit("source.create", principal="apikey:ops", source_id="s-1",
                               detail=detail, at=T0)  # fmt: skip
    plus2 = (T0 + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=2)))
    second = store.append_audit("auth.failed", principal="anonymous", outcome="denied",
                                target="/v1/sources", detail={"reason": "expired"}, at=plus2)  # fmt: skip

    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.at == T0 + timedelta(seconds=1) and second.at.tzinfo is not None
    assert store.query_audit() == [first, second]
    assert store.query_audit()[0].detail == detail
    assert verify_chain([first, second]).ok
    report = store.verify_audit()
    assert report.ok and report.checked == 2
    assert store.audit_head() == (2, second.hash) == (report.head_seq, report.head_hash)


def test_an_empty_log_verifies_and_has_no_head(store):
    report = store.verify_audit()

    assert report.ok and report.checked == 0
    assert store.audit_head() is None
    assert store.verify_audit(expected_head=(0, GENESIS)).ok


def test_secrets_never_reach_the_stored_row(store):
    store.append_audit(
        "source.update",
        principal="apikey:ops",
        target="postgresql://app:hunter2@db:5432/x",
        detail={"password": "hunter2", "error": "login failed: password=hunter2",
                "config": {"host": "db", "api_key": "dwk_live.abcdef"}},
    )  # fmt: skip

    with store.engine.connect() as conn:
        raw = " ".join(str(v) for v in conn.execute(text("SELECT * FROM audit_log")).one())
    assert "hunter2" not in raw and "dwk_live.abcdef" not in raw
    assert '"host": "db"' in raw or "'host': 'db'" in raw


def test_bad_outcome_or_missing_fields_are_refused_and_nothing_is_written(store):
    with pytest.raises(ValidationFailed):
        store.append_audit("x", principal="p", outcome="maybe")
    with pytest.raises(ValidationFailed):
        store.append_audit("", principal="p")
    with pytest.raises(ValidationFailed):
        store.append_audit_many([AuditDraft("ok", "p"), AuditDraft("x", "")])

    assert store.audit_head() is None


def test_overlong_fields_are_cut_to_their_columns(store):
    e = store.append_audit("a" * 100, principal="p" * 300, target="t" * 300,
                           source_id="s" * 50)  # fmt: skip

    assert (len(e.action), len(e.principal), len(e.target), len(e.source_id)) == (64, 256, 256, 36)
    assert store.query_audit() == [e]
    assert store.verify_audit().ok


def _fill(store: MetadataStore) -> None:
    drafts = []
    for i in range(30):
        drafts.append(AuditDraft(
            action=("auth.failed", "source.update", "credential.use")[i % 3],
            principal=f"apikey:user{i % 2}",
            outcome="denied" if i % 3 == 0 else "ok",
            source_id=f"src-{i % 5}",
            at=T0 + timedelta(minutes=i),
        ))  # fmt: skip
    store.append_audit_many(drafts)


def test_query_filters_combine(store):
    _fill(store)

    by_user = store.query_audit(principal="apikey:user1", limit=1000)
    assert [e.seq for e in by_user] == list(range(2, 31, 2))
    assert {e.source_id for e in store.query_audit(source_id="src-3")} == {"src-3"}
    assert len(store.query_audit(action="credential.use")) == 10
    assert {e.action for e in store.query_audit(action="auth.*")} == {"auth.failed"}
    assert store.query_audit(action="auth") == []
    window = store.query_audit(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=20))
    assert [e.seq for e in window] == list(range(11, 21))
    both = store.query_audit(principal="apikey:user0", action="auth.failed",
                             since=T0 + timedelta(minutes=5))  # fmt: skip
    assert [e.seq for e in both] == [7, 13, 19, 25]
    # a zone other than UTC names the same instant
    cet = (T0 + timedelta(minutes=10)).astimezone(timezone(timedelta(hours=1)))
    assert store.query_audit(since=cet)[0].seq == 11


def test_keyset_paging_forward_and_backward(store):
    _fill(store)

    pages, after = [], None
    while True:
        page = store.query_audit(after_seq=after, limit=7)
        if not page:
            break
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [list(range(i, min(i + 7, 31))) for i in range(1, 31, 7)]

    newest = store.query_audit(newest_first=True, limit=5)
    assert [e.seq for e in newest] == [30, 29, 28, 27, 26]
    older = store.query_audit(newest_first=True, before_seq=26, limit=3)
    assert [e.seq for e in older] == [25, 24, 23]


def test_limit_is_capped(store):
    store.append_audit_many([AuditDraft("x", "p") for _ in range(1100)])

    assert len(store.query_audit(limit=5000)) == 1000
    assert len(store.query_audit(limit=0)) == 1


def test_verify_streams_in_batches_and_finds_an_edit_in_a_late_batch(store):
    store.append_audit_many([AuditDraft("x", "p", detail={"i": i}) for i in range(2500)])

    assert store.verify_audit(batch_size=64).ok
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET principal = 'q' WHERE seq = 2222"))
    report = store.verify_audit(batch_size=64)
    assert report.checked == 2500
    assert [(p.seq, p.kind) for p in report.problems] == [(2222, "hash")]
    with pytest.raises(Exception, match="seq 2222"):
        report.raise_if_tampered()


def test_a_deleted_row_and_a_swapped_pair_are_found(store):
    store.append_audit_many([AuditDraft("x", f"p{i}") for i in range(10)])
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 4"))
        conn.execute(text("UPDATE audit_log SET seq = -7 WHERE seq = 7"))
        conn.execute(text("UPDATE audit_log SET seq = 7 WHERE seq = 8"))
        conn.execute(text("UPDATE audit_log SET seq = 8 WHERE seq = -7"))

    report = store.verify_audit()

    assert not report.ok
    named = {(p.seq, p.kind) for p in report.problems}
    assert (4, "missing") in named
    assert {(7, "hash"), (8, "hash")} <= named


def test_threads_appending_at_once_never_fork_the_chain(store):
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(25):
                store.append_audit("thread.write", principal=f"thread:{n}", detail={"i": i})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    report = store.verify_audit()
    assert report.ok, report.problems
    assert report.checked == report.head_seq == 150


_CHILD = textwrap.dedent("""
    import sys
    from datawave.datasource.store import MetadataStore
    store = MetadataStore(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(int(sys.argv[3])):
        store.append_audit("process.write", principal=f"process:{sys.argv[2]}", detail={"i": i})
    store.close()
""")


def test_processes_and_threads_appending_at_once_never_fork_the_chain(store, store_url):
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, store_url, str(n), "40"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:  # release them together, and write from here at the same time
        child.stdin.write("go\n")
        child.stdin.flush()
    for i in range(40):
        store.append_audit("process.write", principal="process:parent", detail={"i": i})
    for child in children:
        child.stdin.close()
        assert child.wait(timeout=120) == 0

    report = store.verify_audit()
    assert report.ok, report.problems
    assert report.checked == report.head_seq == 120
    per_writer: dict[str, list[int]] = {}
    for e in store.query_audit(limit=1000):
        per_writer.setdefault(e.principal, []).append(e.detail["i"])
    assert per_writer == {f"process:{w}": list(range(40)) for w in ("0", "1", "parent")}


def test_a_row_that_no_longer_parses_is_reported_not_raised(tmp_path):
    store = MetadataStore.open(f"sqlite:///{tmp_path / 's.db'}")
    store.append_audit_many([AuditDraft("x", "p", detail={"i": i}) for i in range(5)])
    with store.engine.begin() as conn:
        edit = text(
            "UPDATE audit_log SET at = coalesce(:at, at), detail = coalesce(:d, detail) "
            "WHERE seq = :seq"
        )
        conn.execute(edit, {"seq": 2, "at": "2026-13-01 00:00:00.000000", "d": None})
        conn.execute(edit, {"seq": 3, "at": None, "d": '{"i":2}'})  # equal value, other text
        conn.execute(edit, {"seq": 4, "at": None, "d": '{"i": 3'})

    report = store.verify_audit()

    assert [(p.seq, p.kind) for p in report.problems] == [
        (2, "unreadable"), (3, "unreadable"), (4, "unreadable")
    ]  # fmt: skip
    assert store.query_audit(after_seq=4) != []
    with pytest.raises(StoreError, match="entry 2 does not load"):
        store.query_audit()
    store.close()


def test_the_stored_detail_is_the_sanitized_one(store):
    e = store.append_audit("x", principal="p", detail={"token": "abc", "big": "y" * 5000})

    (stored,) = store.query_audit()
    assert stored.detail == e.detail
    assert stored.detail["token"] == "***"
    assert len(json.dumps(stored.detail)) < 5000
