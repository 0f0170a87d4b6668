"""API keys in both store backends (SQLite file and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from datawave.datasource.errors import NotFound, Unauthenticated, ValidationFailed
from datawave.datasource.security import Grant, Policy
from datawave.datasource.store import MetadataStore
from datawave.datasource.store.tables import api_keys


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_store_url")
    s = MetadataStore.open(url)
    yield s
    s.close()


def _reason(exc: pytest.ExceptionInfo[Unauthenticated]) -> str:
    return str(exc.value.context["reason"])


def test_create_authenticate_list_revoke(store: MetadataStore) -> None:
    grants = (Grant(role="operator", collection="finance/emea"), Grant(role="viewer"))
    rec, token = store.create_api_key(name="ci", grants=grants, created_by="local:alice")
    assert rec.prefix in token and rec.grants == grants and rec.revoked_at is None
    assert rec.last_used_at is None

    p = store.authenticate_api_key(token)
    assert (p.id, p.kind, p.name, p.grants) == (rec.id, "apikey", "ci", grants)
    assert Policy().allows(p, "sources:write", collection="finance/emea/sub")
    assert not Policy().allows(p, "sources:write", collection="hr")

    assert [k.id for k in store.list_api_keys()] == [rec.id]
    assert store.get_api_key(rec.id).last_used_at is not None

    revoked = store.revoke_api_key(rec.id)
    assert revoked.revoked_at is not None
    assert store.revoke_api_key(rec.id).revoked_at == revoked.revoked_at  # idempotent
    assert store.list_api_keys() == []
    assert [k.id for k in store.list_api_keys(include_revoked=True)] == [rec.id]
    with pytest.raises(Unauthenticated) as exc:
        store.authenticate_api_key(token)
    assert _reason(exc) == "revoked"
    assert token not in str(exc.value) and token not in str(exc.value.to_dict())


def test_only_the_hash_is_stored(store: MetadataStore) -> None:
    _rec, token = store.create_api_key(name="k", grants=(), created_by="t")
    secret = token[17:]  # dwk_ + 12-char prefix + _
    with store.read() as conn:
        row = conn.execute(select(api_keys)).one()
    stored = " ".join(str(v) for v in row)
    assert token not in stored and secret not in stored
    assert len(row.hash) == 64


def test_failures_carry_a_reason_and_never_the_token(store: MetadataStore) -> None:
    rec, token = store.create_api_key(name="k", grants=(), created_by="t")
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    unknown_prefix = token[:4] + ("Z" if token[4] != "Z" else "Y") + token[5:]
    cases = {
        "garbage": ("malformed", "not-a-key"),
        "oversized": ("malformed", "dwk_" + "a" * 100_000),
        "tampered": ("unknown_key", tampered),
        "unknown prefix": ("unknown_key", unknown_prefix),
    }
    for what, (reason, bad) in cases.items():
        with pytest.raises(Unauthenticated) as exc:
            store.authenticate_api_key(bad)
        assert _reason(exc) == reason, what
        assert bad not in str(exc.value.to_dict()), what
    assert store.get_api_key(rec.id).last_used_at is None  # failures do not count as use


def test_expiry(store: MetadataStore) -> None:
    now = datetime.now(UTC)
    rec, token = store.create_api_key(
        name="short", grants=(), created_by="t", expires_at=now + timedelta(hours=1)
    )
    assert store.authenticate_api_key(token, now=now).id == rec.id
    with pytest.raises(Unauthenticated) as exc:
        store.authenticate_api_key(token, now=now + timedelta(hours=1, seconds=1))
    assert _reason(exc) == "expired"
    with pytest.raises(ValidationFailed):
        store.create_api_key(name="past", grants=(), created_by="t", expires_at=now)


def test_last_used_is_written_at_most_once_a_minute(store: MetadataStore) -> None:
    rec, token = store.create_api_key(name="busy", grants=(), created_by="t")
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    store.authenticate_api_key(token, now=t0)
    assert store.get_api_key(rec.id).last_used_at == t0
    store.authenticate_api_key(token, now=t0 + timedelta(seconds=59))
    assert store.get_api_key(rec.id).last_used_at == t0
    later = t0 + timedelta(seconds=61)
    store.authenticate_api_key(token, now=later)
    assert store.get_api_key(rec.id).last_used_at == later


def test_unknown_ids_and_bad_names(store: MetadataStore) -> None:
    with pytest.raises(NotFound):
        store.get_api_key("nope")
    with pytest.raises(NotFound):
        store.revoke_api_key("nope")
    for name in ("", "   ", "x" * 129):
        with pytest.raises(ValidationFailed):
            store.create_api_key(name=name, grants=(), created_by="t")
