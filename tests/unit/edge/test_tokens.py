"""Join tokens: valid, expired, reused, forged, tampered and malformed, on real key/store files."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from datawave.datasource.edge.tokens import (
    EdgeCredentials,
    TokenIssuer,
    edge_user,
    parse_unverified,
    validate_site,
)
from datawave.datasource.errors import ConfigError, EdgeError, TokenRejected

LEAF_URL = "nats-leaf://hub.example:7422"
T0 = 1_750_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(tmp_path: Path, clock: Clock) -> TokenIssuer:
    return TokenIssuer(
        tmp_path / "core" / "join.key", tmp_path / "core" / "joins.json", clock=clock
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def _with_payload(token: str, **changes: object) -> str:
    prefix, _, mac = token.split(".")
    payload = {**_payload(token), **changes}
    return f"{prefix}.{_b64(json.dumps(payload).encode())}.{mac}"


def _reason(exc: pytest.ExceptionInfo[TokenRejected]) -> str:
    return str(exc.value.context["reason"])


# Valid ------------------------------------------------------------------------------------------
def test_a_valid_token_carries_site_node_url_and_credentials(issuer: TokenIssuer) -> None:
    token, creds = issuer.create("plant-7", 3600, LEAF_URL, node="gw-1")

    parsed = parse_unverified(token, now=T0 + 10)

    assert token.startswith("dw1.") and len(token) < 400
    assert parsed.credentials == creds
    assert (parsed.site, parsed.leaf_url, creds.node) == ("plant-7", LEAF_URL, "gw-1")
    assert creds.user == "edge-plant-7" == edge_user("plant-7")
    assert len(creds.password) >= 32
    assert (parsed.issued_at, parsed.expires_at) == (int(T0), int(T0) + 3600)
    assert creds.remote_url == f"nats-leaf://edge-plant-7:{creds.password}@hub.example:7422"


def test_redeem_returns_the_credentials_and_records_the_edge(
    issuer: TokenIssuer, tmp_path: Path
) -> None:
    token, creds = issuer.create("A", 600, LEAF_URL)

    assert issuer.redeem(token) == creds
    assert issuer.edges() == [creds]
    store = tmp_path / "core" / "joins.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600  # it holds edge passwords
    assert stat.S_IMODE((tmp_path / "core" / "join.key").stat().st_mode) == 0o600


def test_the_password_never_shows_in_repr_or_errors(issuer: TokenIssuer, clock: Clock) -> None:
    token, creds = issuer.create("A", 60, LEAF_URL)
    assert creds.password not in repr(creds)
    assert creds.password not in repr(parse_unverified(token, now=T0))

    issuer.redeem(token)
    with pytest.raises(TokenRejected) as used:
        issuer.redeem(token)
    clock.now += 3600
    expired_token, _ = issuer.create("A", 60, LEAF_URL)
    clock.now += 120
    with pytest.raises(TokenRejected) as expired:
        issuer.redeem(expired_token)
    for err in (used.value, expired.value):
        rendered = f"{err} {err.to_dict()}"
        assert creds.password not in rendered and token not in rendered


def test_another_issuer_with_the_same_key_and_store_redeems(
    issuer: TokenIssuer, tmp_path: Path, clock: Clock
) -> None:
    token, creds = issuer.create("A", 600, LEAF_URL)
    again = TokenIssuer(
        tmp_path / "core" / "join.key", tmp_path / "core" / "joins.json", clock=clock
    )
    assert again.redeem(token) == creds


def test_revoke_forgets_a_joined_edge(issuer: TokenIssuer) -> None:
    issuer.redeem(issuer.create("A", 600, LEAF_URL)[0])
    b = issuer.redeem(issuer.create("B", 600, LEAF_URL)[0])

    assert issuer.revoke("A") is True
    assert issuer.revoke("A") is False
    assert issuer.edges() == [b]


def test_a_new_token_for_a_site_replaces_its_credentials(issuer: TokenIssuer) -> None:
    issuer.redeem(issuer.create("A", 600, LEAF_URL)[0])
    second = issuer.redeem(issuer.create("A", 600, LEAF_URL)[0])
    assert issuer.edges() == [second]


# Expired ----------------------------------------------------------------------------------------
def test_an_expired_token_is_refused_by_the_edge_and_by_the_core(
    issuer: TokenIssuer, clock: Clock, tmp_path: Path
) -> None:
    token, _ = issuer.create("A", 60, LEAF_URL)
    clock.now = T0 + 60

    with pytest.raises(TokenRejected) as on_edge:
        parse_unverified(token, now=clock.now)
    with pytest.raises(TokenRejected) as on_core:
        issuer.redeem(token)

    assert _reason(on_edge) == _reason(on_core) == "expired"
    assert "expired" in str(on_core.value)
    stored = json.loads((tmp_path / "core" / "joins.json").read_text())
    assert stored["used"] == {} and stored["edges"] == {}  # a refusal redeems nothing
    assert issuer.hub_users() == []  # and the expired token's hub user is gone


def test_an_issued_token_is_a_hub_user_until_redeemed_or_expired(
    issuer: TokenIssuer, clock: Clock
) -> None:
    token, creds = issuer.create("A", 60, LEAF_URL)
    assert issuer.hub_users() == [creds] and issuer.edges() == []
    issuer.redeem(token)
    assert issuer.hub_users() == [creds] == issuer.edges()
    clock.now = T0 + 30
    _, rekeyed = issuer.create("A", 60, LEAF_URL)
    assert issuer.hub_users() == [rekeyed]  # a newer token re-keys the site


# Reused -----------------------------------------------------------------------------------------
def test_a_token_is_single_use(issuer: TokenIssuer) -> None:
    token, _ = issuer.create("A", 600, LEAF_URL)
    issuer.redeem(token)

    with pytest.raises(TokenRejected) as exc:
        issuer.redeem(token)

    assert _reason(exc) == "already used"
    assert isinstance(exc.value, PermissionError) and isinstance(exc.value, EdgeError)
    assert exc.value.code == "token_rejected"


def test_verify_checks_like_redeem_without_using_the_token_up(
    issuer: TokenIssuer, clock: Clock
) -> None:
    token, creds = issuer.create("A", 60, LEAF_URL)
    assert issuer.verify(token).credentials == creds
    assert issuer.verify(token).nonce == issuer.verify(token).nonce  # still unused
    assert issuer.redeem(token) == creds
    with pytest.raises(TokenRejected) as exc:
        issuer.verify(token)
    assert _reason(exc) == "already used"

    fresh, _ = issuer.create("A", 60, LEAF_URL)
    with pytest.raises(TokenRejected) as exc:
        issuer.verify(_with_payload(fresh, exp=int(T0) + 10**6))
    assert _reason(exc) == "signature invalid"
    clock.now = T0 + 61
    with pytest.raises(TokenRejected) as exc:
        issuer.verify(fresh)
    assert _reason(exc) == "expired"


# Forged and tampered ----------------------------------------------------------------------------
def test_a_token_from_another_core_is_refused(issuer: TokenIssuer, tmp_path: Path) -> None:
    other = TokenIssuer(tmp_path / "other.key", tmp_path / "other.json")
    forged, _ = other.create("A", 600, LEAF_URL)

    parse_unverified(forged)  # the edge cannot tell ...
    with pytest.raises(TokenRejected) as exc:  # ... the core can
        issuer.redeem(forged)
    assert _reason(exc) == "signature invalid"


@pytest.mark.parametrize(
    "changes",
    [
        {"site": "B", "user": "edge-B"},  # take over another site
        {"exp": int(T0) + 10**6},  # extend the lifetime
        {"url": "nats-leaf://evil.example:7422"},
        {"pw": "chosen-by-the-attacker-123"},
    ],
)
def test_a_tampered_payload_fails_the_signature(
    issuer: TokenIssuer, changes: dict[str, object]
) -> None:
    token, _ = issuer.create("A", 600, LEAF_URL)
    with pytest.raises(TokenRejected) as exc:
        issuer.redeem(_with_payload(token, **changes))
    assert _reason(exc) == "signature invalid"


def test_a_tampered_signature_fails(issuer: TokenIssuer) -> None:
    token, _ = issuer.create("A", 600, LEAF_URL)
    body, mac = token.rsplit(".", 1)
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    with pytest.raises(TokenRejected) as exc:
        issuer.redeem(f"{body}.{flipped}")
    assert _reason(exc) == "signature invalid"


def test_tampering_is_checked_before_expiry(issuer: TokenIssuer, clock: Clock) -> None:
    token, _ = issuer.create("A", 60, LEAF_URL)
    clock.now += 3600
    with pytest.raises(TokenRejected) as exc:
        issuer.redeem(_with_payload(token, exp=int(clock.now) + 60))
    assert _reason(exc) == "signature invalid"


# Malformed --------------------------------------------------------------------------------------
def _valid_payload() -> dict[str, object]:
    return {
        "v": 1,
        "site": "A",
        "node": "n1",
        "url": LEAF_URL,
        "user": "edge-A",
        "pw": "p" * 32,
        "iat": int(T0),
        "exp": int(T0) + 60,
        "nonce": "0" * 32,
    }


def _token(payload: object) -> str:
    return f"dw1.{_b64(json.dumps(payload).encode())}.{_b64(b'x' * 32)}"


MALFORMED = {
    "empty": "",
    "garbage": "hello world",
    "two parts": "dw1.abc",
    "four parts": "dw1.a.b.c",
    "wrong prefix": _token(_valid_payload()).replace("dw1.", "dw9.", 1),
    "not base64": "dw1.@@@@.abcd",
    "not json": f"dw1.{_b64(b'{not json')}.{_b64(b'sig')}",
    "json array": _token([1, 2, 3]),
    "version 2": _token({**_valid_payload(), "v": 2}),
    "missing pw": _token({k: v for k, v in _valid_payload().items() if k != "pw"}),
    "exp is text": _token({**_valid_payload(), "exp": "tomorrow"}),
    "exp is bool": _token({**_valid_payload(), "exp": True}),
    "site with dot": _token({**_valid_payload(), "site": "a.b", "user": "edge-a.b"}),
    "site wildcard": _token({**_valid_payload(), "site": ">", "user": "edge->"}),
    "user not site's": _token({**_valid_payload(), "user": "core"}),
    "short password": _token({**_valid_payload(), "pw": "short"}),
    "bad nonce": _token({**_valid_payload(), "nonce": "xyz"}),
    "url with creds": _token({**_valid_payload(), "url": "nats-leaf://u:p@hub:7422"}),
    "url without port": _token({**_valid_payload(), "url": "nats-leaf://hub"}),
    "url http": _token({**_valid_payload(), "url": "http://hub:7422"}),
    "exp before iat": _token({**_valid_payload(), "exp": int(T0) - 1}),
}


@pytest.mark.parametrize("token", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tokens_are_refused_on_both_sides(issuer: TokenIssuer, token: str) -> None:
    with pytest.raises(TokenRejected) as on_edge:
        parse_unverified(token, now=T0)
    with pytest.raises(TokenRejected) as on_core:
        issuer.redeem(token)
    assert _reason(on_edge) == _reason(on_core) == "malformed"
    assert "malformed" in str(on_edge.value)


def test_a_non_string_is_malformed() -> None:
    with pytest.raises(TokenRejected, match="malformed"):
        parse_unverified(None)  # type: ignore[arg-type]


def test_surrounding_whitespace_from_copy_paste_is_tolerated(issuer: TokenIssuer) -> None:
    token, creds = issuer.create("A", 600, LEAF_URL)
    assert issuer.redeem(f"  {token}\n") == creds


# Issuing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("site", "ttl", "url", "field"),
    [
        ("a.b", 60, LEAF_URL, "site"),
        ("", 60, LEAF_URL, "site"),
        ("A", 0, LEAF_URL, "ttl"),
        ("A", 10**9, LEAF_URL, "ttl"),
        ("A", 60, "nats-leaf://u:p@hub:7422", "leaf_url"),
        ("A", 60, "hub:7422", "leaf_url"),
    ],
)
def test_create_refuses_bad_arguments(
    issuer: TokenIssuer, site: str, ttl: int, url: str, field: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        issuer.create(site, ttl, url)
    assert exc.value.context["field"] == field


def test_validate_site_accepts_subject_safe_names() -> None:
    assert validate_site("plant_7-north") == "plant_7-north"
    for bad in ("a b", "a.b", "*", ">", "-lead", "x" * 64):
        with pytest.raises(ConfigError):
            validate_site(bad)


def test_a_corrupt_key_file_is_an_edge_error(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("not hex")
    with pytest.raises(EdgeError, match="hex-encoded"):
        TokenIssuer(tmp_path / "k", tmp_path / "s.json")


def test_credentials_serialize_for_the_store() -> None:
    creds = EdgeCredentials(site="A", node="n", user="edge-A", password="p" * 20, leaf_url=LEAF_URL)
    assert EdgeCredentials(**creds.to_dict()) == creds
