"""Bearer JWTs against a real local JWKS endpoint (tests/fixtures/jwks.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from datawave.datasource.config import OidcSettings
from datawave.datasource.errors import Unauthenticated
from datawave.datasource.security import Grant
from datawave.datasource.security.oidc import OidcVerifier, grant_from_claim
from tests.fixtures.jwks import JwksServer, SigningKey, claims_for, ec_key, rsa_key


class Clock:
    """Monotonic seconds the test moves by hand, so cache expiry needs no sleeping."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def rsa() -> SigningKey:
    return rsa_key("rsa-1")


@pytest.fixture(scope="module")
def es() -> SigningKey:
    return ec_key("ec-1")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_verifier(server: JwksServer, clock: Clock, **overrides: Any) -> OidcVerifier:
    opts: dict[str, Any] = {"issuer": server.issuer, "audience": "datawave",
                            "jwks_cache_s": 300, "jwks_min_refresh_s": 10, "leeway_s": 5}  # fmt: skip
    opts.update(overrides)
    max_bytes = opts.pop("max_bytes", 8192)
    return OidcVerifier(OidcSettings(**opts), max_bytes=max_bytes, clock=clock)


@pytest.fixture
def verifier(
    jwks_server: JwksServer, rsa: SigningKey, es: SigningKey, clock: Clock
) -> Iterator[OidcVerifier]:
    jwks_server.publish(rsa, es)
    v = make_verifier(jwks_server, clock)
    yield v
    v.close()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], sig: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(sig)}"


def refused(v: OidcVerifier, token: Any) -> str:
    with pytest.raises(Unauthenticated) as exc:
        v.verify(token)
    text = str(exc.value.to_dict())
    if isinstance(token, str) and len(token) > 8:
        assert token not in text and token[-20:] not in text  # never echoed
    return str(exc.value.context["reason"])


def test_valid_rsa_and_ec_tokens(
    verifier: OidcVerifier, jwks_server: JwksServer, rsa: SigningKey, es: SigningKey
) -> None:
    p = verifier.verify(rsa.sign(claims_for(jwks_server, roles=["viewer"])))
    assert (p.kind, p.id, p.name) == ("jwt", f"{jwks_server.issuer}|alice", "alice")
    assert p.grants == (Grant(role="viewer"),)
    p = verifier.verify(es.sign(claims_for(jwks_server, sub="bob", preferred_username="Bob")))
    assert (p.id, p.name, p.grants) == (f"{jwks_server.issuer}|bob", "Bob", ())
    assert jwks_server.requests == 1  # one fetch, then the cache


def test_expired_not_yet_valid_and_leeway(
    verifier: OidcVerifier, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    now = int(time.time())
    assert refused(verifier, rsa.sign(claims_for(jwks_server, exp=now - 60))) == "expired"
    verifier.verify(rsa.sign(claims_for(jwks_server, exp=now - 2)))  # within 5 s leeway
    future = claims_for(jwks_server, nbf=now + 120)
    assert refused(verifier, rsa.sign(future)) == "not_yet_valid"
    assert refused(verifier, rsa.sign(claims_for(jwks_server, iat=now + 120))) == "not_yet_valid"


def test_wrong_audience_and_issuer(
    verifier: OidcVerifier, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    assert refused(verifier, rsa.sign(claims_for(jwks_server, aud="other"))) == "wrong_audience"
    wrong_iss = claims_for(jwks_server, iss="https://evil.example")
    assert refused(verifier, rsa.sign(wrong_iss)) == "wrong_issuer"


def test_required_claims(verifier: OidcVerifier, jwks_server: JwksServer, rsa: SigningKey) -> None:
    for missing in ("exp", "aud", "iss", "sub"):
        claims = claims_for(jwks_server)
        del claims[missing]
        assert refused(verifier, rsa.sign(claims)) == "missing_claim", missing


def test_alg_none_is_refused(verifier: OidcVerifier, jwks_server: JwksServer) -> None:
    for alg in ("none", "None", "NONE", ""):
        token = unsigned({"alg": alg, "kid": "rsa-1", "typ": "JWT"}, claims_for(jwks_server))
        assert refused(verifier, token) == "alg_not_allowed", alg
    assert refused(verifier, unsigned({"kid": "rsa-1"}, claims_for(jwks_server))) == (
        "alg_not_allowed"
    )
    assert jwks_server.requests == 0  # refused before any key lookup


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    verifier: OidcVerifier, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    """Key confusion: the attacker uses the published public key as an HMAC secret."""
    claims = claims_for(jwks_server, roles=["admin"])
    pub_pem = rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_jwk = json.dumps(rsa.jwk).encode()
    for alg, secret in (("HS256", pub_pem), ("HS256", pub_jwk), ("HS512", pub_pem)):
        head = f"{b64(json.dumps({'alg': alg, 'kid': 'rsa-1'}).encode())}"
        body = b64(json.dumps(claims).encode())
        digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
        sig = hmac.new(secret, f"{head}.{body}".encode(), digest).digest()
        assert refused(verifier, f"{head}.{body}.{b64(sig)}") == "alg_not_allowed"


def test_algorithm_outside_the_pinned_list_is_refused_even_if_the_key_verifies(
    jwks_server: JwksServer, rsa: SigningKey, es: SigningKey, clock: Clock
) -> None:
    jwks_server.publish(rsa, es)
    v = make_verifier(jwks_server, clock, algorithms=["ES256"])
    assert refused(v, rsa.sign(claims_for(jwks_server))) == "alg_not_allowed"
    assert v.verify(es.sign(claims_for(jwks_server))).name == "alice"


def test_key_of_the_wrong_type_for_the_alg(
    verifier: OidcVerifier, jwks_server: JwksServer, es: SigningKey, rsa: SigningKey
) -> None:
    # ES256 header pointing at the RSA key: never verified with a key of another family.
    token = es.sign(claims_for(jwks_server), kid="rsa-1")
    assert refused(verifier, token) == "key_mismatch"
    # RS256 header pointing at the EC key
    assert refused(verifier, rsa.sign(claims_for(jwks_server), kid="ec-1")) == "key_mismatch"


def test_tampered_payload_fails_the_signature(
    verifier: OidcVerifier, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    head, _body, sig = rsa.sign(claims_for(jwks_server, roles=["viewer"])).split(".")
    forged = b64(json.dumps(claims_for(jwks_server, roles=["admin"])).encode())
    assert refused(verifier, f"{head}.{forged}.{sig}") == "bad_signature"


def test_unknown_kid_refetches_at_most_every_min_refresh_then_rotation_is_picked_up(
    jwks_server: JwksServer, rsa: SigningKey, clock: Clock
) -> None:
    jwks_server.publish(rsa)
    v = make_verifier(jwks_server, clock)
    v.verify(rsa.sign(claims_for(jwks_server)))
    assert jwks_server.requests == 1

    new = rsa_key("rsa-2")
    token = new.sign(claims_for(jwks_server))
    assert refused(v, token) == "unknown_kid"
    for i in range(20):  # a flood of forged kids does not hammer the issuer
        assert refused(v, new.sign(claims_for(jwks_server), kid=f"forged-{i}")) == "unknown_kid"
    assert jwks_server.requests == 1

    jwks_server.publish(rsa, new)  # the issuer rotates
    assert refused(v, token) == "unknown_kid"  # still inside jwks_min_refresh_s
    clock.t += 10
    assert v.verify(token).name == "alice"  # one refetch finds the new key
    assert jwks_server.requests == 2
    v.verify(rsa.sign(claims_for(jwks_server)))  # old key still published, still good
    assert jwks_server.requests == 2

    jwks_server.publish(new)  # the old key is withdrawn
    clock.t += 300  # the cache expires
    assert refused(v, rsa.sign(claims_for(jwks_server))) == "unknown_kid"
    assert v.verify(token).name == "alice"
    assert jwks_server.requests == 3


def test_jwks_unavailable_fails_closed(
    jwks_server: JwksServer, rsa: SigningKey, clock: Clock
) -> None:
    jwks_server.publish(rsa)
    jwks_server.status = 500
    v = make_verifier(jwks_server, clock)
    token = rsa.sign(claims_for(jwks_server))
    assert refused(v, token) == "jwks_unavailable"
    jwks_server.status = 200
    assert refused(v, token) == "jwks_unavailable"  # next try only after jwks_min_refresh_s
    clock.t += 10
    assert v.verify(token).name == "alice"

    jwks_server.body = b"<html>not json</html>"
    clock.t += 300  # cache expired and the issuer serves garbage: old keys are not trusted on
    assert refused(v, token) == "jwks_unavailable"
    jwks_server.body = None
    clock.t += 10
    assert v.verify(token).name == "alice"

    jwks_server.close()  # the issuer is gone altogether
    clock.t += 300
    assert refused(v, token) == "jwks_unavailable"


def test_oversized_and_garbage_are_refused_before_any_fetch(
    jwks_server: JwksServer, rsa: SigningKey, clock: Clock
) -> None:
    jwks_server.publish(rsa)
    v = make_verifier(jwks_server, clock, max_bytes=1024)
    big = rsa.sign(claims_for(jwks_server, pad="x" * 2000))
    assert refused(v, big) == "too_large"
    assert refused(v, "a" * 1_000_000) == "too_large"
    for junk in ("", "garbage", "a.b.c", "...", "Bearer x", "eyJ.eyJ.", "ä.ö.ü",
                 b64(b"{}") + "." + b64(b"[]") + ".", b64(b"[1]") + ".e30.x"):  # fmt: skip
        assert refused(v, junk) in ("malformed", "alg_not_allowed"), junk
    assert refused(v, None) == "malformed"
    assert jwks_server.requests == 0


def test_disabled_without_an_issuer() -> None:
    v = OidcVerifier(OidcSettings())
    assert not v.enabled
    assert refused(v, "a.b.c") == "jwt_disabled"


def test_symmetric_keys_in_the_jwks_are_ignored(jwks_server: JwksServer, clock: Clock) -> None:
    secret = b"s" * 32
    jwks_server.keys = [{"kty": "oct", "kid": "hmac", "k": b64(secret), "alg": "HS256"}]
    v = make_verifier(jwks_server, clock)
    head = b64(json.dumps({"alg": "RS256", "kid": "hmac"}).encode())
    assert refused(v, f"{head}.{b64(b'{}')}.{b64(b'x')}") == "unknown_kid"


def test_roles_and_collections_claims(
    jwks_server: JwksServer, rsa: SigningKey, clock: Clock
) -> None:
    jwks_server.publish(rsa)
    v = make_verifier(jwks_server, clock)
    roles = ["viewer", "operator@collection:finance/emea", "viewer@source:orders-db",
             "wizard", "admin@bogus:x", "", "admin@*"]  # fmt: skip
    p = v.verify(rsa.sign(claims_for(jwks_server, roles=roles)))
    assert p.grants == (
        Grant(role="viewer"),
        Grant(role="operator", collection="finance/emea"),
        Grant(role="viewer", source="orders-db"),
        Grant(role="admin"),
    )
    scoped = claims_for(jwks_server, roles=["viewer", "operator"], collections=["fin", "hr"])
    p = v.verify(rsa.sign(scoped))
    assert p.grants == (
        Grant(role="viewer", collection="fin"),
        Grant(role="viewer", collection="hr"),
        Grant(role="operator", collection="fin"),
        Grant(role="operator", collection="hr"),
    )
    nested = make_verifier(jwks_server, clock, roles_claim="realm_access.roles")
    p = nested.verify(rsa.sign(claims_for(jwks_server, realm_access={"roles": "viewer"})))
    assert p.grants == (Grant(role="viewer"),)
    custom = OidcVerifier(v.settings, roles=["viewer", "auditor"], clock=clock)
    p = custom.verify(rsa.sign(claims_for(jwks_server, roles=["auditor", "admin"])))
    assert p.grants == (Grant(role="auditor"),)


def test_grant_from_claim() -> None:
    assert grant_from_claim("viewer") == [Grant(role="viewer")]
    assert grant_from_claim("viewer", []) == []
    assert grant_from_claim("viewer@collection:/a/b/") == [Grant(role="viewer", collection="a/b")]
    assert grant_from_claim("viewer@collection:") == []
    assert grant_from_claim("@*") == []


async def test_verify_async(
    verifier: OidcVerifier, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    p = await verifier.verify_async(rsa.sign(claims_for(jwks_server)))
    assert p.name == "alice"
