"""API key tokens: format, parsing of anything a client may send, hashing."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from datawave.datasource.security import Grant
from datawave.datasource.security.apikeys import (
    TOKEN_LEN,
    ApiKeyRecord,
    generate_token,
    hash_secret,
    parse_token,
    secret_matches,
)


def test_generated_token_has_the_documented_shape_and_parses_back() -> None:
    token, prefix, digest = generate_token()
    assert len(token) == TOKEN_LEN
    assert token.startswith(f"dwk_{prefix}_")
    assert len(prefix) == 12 and prefix.isalnum()
    parsed = parse_token(token)
    assert parsed is not None
    p, secret = parsed
    assert p == prefix
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in digest and token not in digest


def test_tokens_are_unique() -> None:
    tokens = {generate_token()[0] for _ in range(200)}
    prefixes = {t[4:16] for t in tokens}
    assert len(tokens) == 200 and len(prefixes) == 200


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "dwk_",
        "Bearer dwk_abc",
        None,
        12345,
        b"dwk_",
        "x" * 10_000,
        "dwk_" + "a" * 12 + "-" + "b" * 43,  # wrong separator
        "dwk_" + "a" * 11 + "!_" + "b" * 43,  # prefix not alphanumeric
        "dwk_" + "a" * 12 + "_" + "b" * 42 + "=",  # not url-safe base64 alphabet
        "dwk_" + "ä" * 12 + "_" + "b" * 43,  # non-ascii prefix
        "dwx_" + "a" * 12 + "_" + "b" * 43,  # wrong scheme
        "dwk_" + "a" * 12 + "_" + "b" * 44,  # too long
    ],
)
def test_parse_rejects_anything_else(bad: object) -> None:
    assert parse_token(bad) is None


def test_secret_matches_only_its_own_hash() -> None:
    token, _prefix, digest = generate_token()
    parsed = parse_token(token)
    assert parsed is not None
    assert secret_matches(parsed[1], digest)
    other = parse_token(generate_token()[0])
    assert other is not None
    assert not secret_matches(other[1], digest)
    flipped = parsed[1][:-2] + ("A" if parsed[1][-2] != "A" else "B") + parsed[1][-1]
    assert not secret_matches(flipped, digest)
    assert hash_secret("abc") == hashlib.sha256(b"abc").hexdigest()


def test_record_state_and_principal() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rec = ApiKeyRecord(
        id="k1", prefix="p" * 12, name="ci", grants=(Grant(role="viewer", collection="fin"),),
        created_by="local:me", created_at=now, expires_at=now + timedelta(days=1),
    )  # fmt: skip
    assert rec.state(now) == "active"
    assert rec.state(now + timedelta(days=1)) == "expired"
    assert rec.model_copy(update={"revoked_at": now}).state(now) == "revoked"
    p = rec.principal()
    assert (p.id, p.kind, p.name, p.grants) == ("k1", "apikey", "ci", rec.grants)
    assert "hash" not in ApiKeyRecord.model_fields
