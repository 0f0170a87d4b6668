"""The audit chain on its own: hashing, canonical form, the verifier, detail sanitizing."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from datawave.datasource.errors import AuditTampered
from datawave.datasource.security.audit import (
    GENESIS,
    MAX_DETAIL_BYTES,
    AuditEntry,
    canonical,
    entry_hash,
    parse_head,
    sanitize_detail,
    verify_chain,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def chain(n: int) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        fields = {
            "seq": seq,
            "at": T0 + timedelta(seconds=seq),
            "principal": f"apikey:user{seq % 3}",
            "action": "source.update" if seq % 2 else "auth.failed",
            "outcome": "ok" if seq % 2 else "denied",
            "source_id": f"src-{seq}" if seq % 4 == 0 else None,
            "target": None,
            "detail": {"n": seq, "route": "/v1/sources"},
        }
        digest = entry_hash(prev, fields)
        out.append(AuditEntry(**fields, prev_hash=prev, hash=digest))
        prev = digest
    return out


def kinds_at(report, seq: int) -> set[str]:
    return {p.kind for p in report.problems if p.seq == seq}


def test_hash_is_sha256_of_prev_hash_newline_and_sorted_compact_json():
    fields = {"seq": 1, "at": T0, "principal": "p", "action": "a", "outcome": "ok",
              "source_id": None, "target": "t", "detail": {"b": 1, "a": "é"}}  # fmt: skip
    body = (
        '{"action":"a","at":"2026-01-02T03:04:05.678901Z","detail":{"a":"é","b":1},'
        '"outcome":"ok","principal":"p","seq":1,"source_id":null,"target":"t"}'
    )

    assert canonical(fields) == body
    assert entry_hash(GENESIS, fields) == hashlib.sha256(f"{GENESIS}\n{body}".encode()).hexdigest()


def test_the_same_instant_hashes_the_same_in_any_zone_and_naive_means_utc():
    base = {"seq": 1, "principal": "p", "action": "a", "outcome": "ok", "source_id": None,
            "target": None, "detail": {}}  # fmt: skip
    plus2 = T0.astimezone(timezone(timedelta(hours=2)))
    naive = T0.replace(tzinfo=None)

    hashes = {entry_hash(GENESIS, {**base, "at": at}) for at in (T0, plus2, naive)}

    assert len(hashes) == 1
    assert entry_hash(GENESIS, {**base, "at": T0 + timedelta(microseconds=1)}) not in hashes


def test_an_intact_chain_verifies_and_reports_its_head():
    entries = chain(20)

    report = verify_chain(iter(entries))  # a generator is enough: it streams

    assert report.ok and report.problems == []
    assert report.checked == 20
    assert (report.head_seq, report.head_hash) == (20, entries[-1].hash)
    assert report.head == f"20:{entries[-1].hash}"
    report.raise_if_tampered()


def test_an_empty_chain_verifies():
    report = verify_chain([])

    assert report.ok and report.checked == 0 and report.head is None


@pytest.mark.parametrize(
    "change",
    [
        {"principal": "apikey:someone-else"},
        {"action": "source.read"},
        {"outcome": "ok "},
        {"source_id": "src-x"},
        {"target": "key-1"},
        {"detail": {"n": 7, "route": "/v1/sourcez"}},
        {"detail": {}},
        {"at": T0 + timedelta(seconds=7, microseconds=1)},
        {"prev_hash": "f" * 64},
        {"hash": "0" + chain(7)[6].hash[1:]},
    ],
    ids=lambda c: next(iter(c)),
)
def test_editing_any_field_of_one_entry_is_found_at_that_entry(change):
    entries = chain(12)
    entries[6] = entries[6].model_copy(update=change)

    report = verify_chain(entries)

    assert not report.ok
    assert kinds_at(report, 7) & {"hash", "link"}, report.problems


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link():
    entries = chain(12)
    forged = entries[6].model_copy(update={"principal": "apikey:nobody"})
    forged = forged.model_copy(update={"hash": entry_hash(forged.prev_hash, forged.fields())})
    entries[6] = forged

    report = verify_chain(entries)

    assert kinds_at(report, 8) == {"link"}
    assert kinds_at(report, 7) == set()


@pytest.mark.parametrize("gone", [0, 5, 10])
def test_a_deleted_entry_is_named_as_missing(gone):
    entries = chain(12)
    del entries[gone]

    report = verify_chain(entries)

    assert not report.ok
    assert "missing" in kinds_at(report, gone + 1)


def test_several_deleted_entries_are_one_gap():
    entries = chain(12)
    del entries[3:6]

    report = verify_chain(entries)

    missing = [p for p in report.problems if p.kind == "missing"]
    assert [(p.seq, p.message) for p in missing] == [
        (4, "entries 4..6 missing (deleted?) before entry 7")
    ]


def test_swapped_neighbours_are_both_out_of_order():
    entries = chain(12)
    entries[3], entries[4] = entries[4], entries[3]

    report = verify_chain(entries)

    assert [(p.seq, p.kind) for p in report.problems] == [(4, "order"), (5, "order")]
    assert report.head_seq == 12


def test_an_entry_moved_far_is_out_of_order_and_nothing_is_called_missing():
    entries = chain(12)
    entries[3], entries[8] = entries[8], entries[3]

    report = verify_chain(entries)

    kinds = {p.seq: p.kind for p in report.problems}
    assert set(kinds.values()) == {"order"}
    assert {4, 9} <= set(kinds)


def test_a_gap_partly_filled_late_is_order_plus_missing():
    entries = chain(12)
    moved = entries.pop(4)  # entry 5 shows up at the end; entry 4 is gone
    del entries[3]
    entries.append(moved)

    report = verify_chain(entries)

    assert [(p.seq, p.kind) for p in report.problems] == [(4, "missing"), (5, "order")]
    assert "1 of them turned up out of order" in report.problems[0].message


def test_a_repeated_entry_is_a_duplicate():
    entries = chain(6)
    entries.insert(3, entries[2])

    report = verify_chain(entries)

    assert [(p.seq, p.kind) for p in report.problems] == [(3, "duplicate")]


def test_a_cut_off_tail_verifies_alone_but_not_against_the_recorded_head():
    entries = chain(12)
    head = (12, entries[-1].hash)

    cut = entries[:9]

    assert verify_chain(cut).ok  # the limitation: a shorter chain is still a chain
    report = verify_chain(cut, expected_head=head)
    assert [(p.seq, p.kind) for p in report.problems] == [(10, "head")]
    assert "truncated" in report.problems[0].message


def test_a_rewritten_chain_does_not_match_the_recorded_head():
    entries = chain(12)
    head = (10, entries[9].hash)
    rewritten = chain(12)  # same content, rebuilt: same hashes
    assert verify_chain(rewritten, expected_head=head).ok

    tampered = entries[:5]
    prev = tampered[-1].hash
    for e in entries[5:]:  # edit entry 6 and re-hash everything after it, as a forger would
        fields = e.fields() | ({"principal": "apikey:forger"} if e.seq == 6 else {})
        digest = entry_hash(prev, fields)
        tampered.append(AuditEntry(**fields, prev_hash=prev, hash=digest))
        prev = digest

    assert verify_chain(tampered).ok
    report = verify_chain(tampered, expected_head=head)
    assert [(p.seq, p.kind) for p in report.problems] == [(10, "head")]


def test_the_head_of_an_empty_log_is_the_genesis_hash():
    assert verify_chain([], expected_head=(0, GENESIS)).ok
    assert not verify_chain([], expected_head=(0, "a" * 64)).ok
    report = verify_chain([], expected_head=(3, "a" * 64))
    assert [(p.seq, p.kind) for p in report.problems] == [(1, "head")]


def test_a_suffix_verifies_from_an_anchor():
    entries = chain(12)
    anchor = (6, entries[5].hash)

    assert verify_chain(entries[6:], anchor=anchor).ok
    assert not verify_chain(entries[7:], anchor=anchor).ok
    assert not verify_chain(entries[6:], anchor=(6, "b" * 64)).ok


def test_raise_if_tampered_names_the_first_problem():
    entries = chain(5)
    del entries[2]

    with pytest.raises(AuditTampered) as info:
        verify_chain(entries).raise_if_tampered()

    assert info.value.context["seq"] == 3
    assert "seq 3" in str(info.value)


@pytest.mark.parametrize("text", ["12", "x:" + "a" * 64, "1:" + "a" * 63, "1:" + "G" * 64, ""])
def test_parse_head_rejects_malformed_heads(text):
    with pytest.raises(ValueError, match="SEQ:HASH"):
        parse_head(text)


def test_parse_head_reads_seq_and_hash():
    assert parse_head(f" 42:{'ab' * 32}\n") == (42, "ab" * 32)


def test_detail_loses_credentials_but_keeps_handles():
    detail = {
        "password": "hunter2",
        "api_key": "dwk_abc.def",
        "Authorization": "Bearer eyJhbGciOi",
        "nested": {"client_secret": "s3cr3t", "dsn": "postgresql://u:pw@db/x"},
        "message": "connect to postgresql://app:topsecret@db:5432/x failed; password=hunter2",
        "token_id": "tok-1",
        "apikey_prefix": "dwk_abc",
        "secret_fields": ["password"],
        "purpose": "discover",
    }

    clean = sanitize_detail(detail)
    text = json.dumps(clean)

    for secret in ("hunter2", "dwk_abc.def", "eyJhbGciOi", "s3cr3t", "pw@", "topsecret"):
        assert secret not in text
    assert clean["token_id"] == "tok-1"
    assert clean["apikey_prefix"] == "dwk_abc"
    assert clean["secret_fields"] == ["password"]
    assert clean["purpose"] == "discover"


def test_detail_is_bounded_and_json_only():
    clean = sanitize_detail({
        "big": "x" * 100_000,
        "nan": float("nan"),
        "when": T0,
        "obj": object(),
        "deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}},
    })  # fmt: skip

    encoded = json.dumps(clean, allow_nan=False)
    assert len(clean["big"]) == 1024
    assert clean["nan"] is None
    assert clean["when"] == "2026-01-02T03:04:05.678901Z"
    assert clean["obj"].startswith("<object object")
    assert clean["deep"]["a"]["b"]["c"]["d"]["e"] == "…"  # cut at depth 6, not an error
    assert len(encoded.encode()) <= MAX_DETAIL_BYTES


def test_an_oversized_detail_becomes_a_bounded_preview():
    clean = sanitize_detail({f"k{i}": "v" * 900 for i in range(50)})

    assert clean["truncated"] is True
    assert clean["bytes"] > MAX_DETAIL_BYTES
    assert len(json.dumps(clean).encode()) <= MAX_DETAIL_BYTES
