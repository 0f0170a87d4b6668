"""OAuth 2 / OIDC bearer JWTs, checked against the configured issuer's JWKS.

What is enforced, and why:

- size first: a token over ``max_bytes`` is refused before any parsing (``too_large``);
- the algorithm is pinned: the header's ``alg`` must be one of ``settings.algorithms`` (only
  asymmetric ones can be configured), so ``none`` and HS256-signed-with-the-public-key (key
  confusion) fail before a key is even looked up; the key is then bound to that algorithm
  (:class:`jwt.PyJWK`), and its type / curve / declared ``alg`` must fit it;
- ``iss``, ``aud``, ``exp`` and ``sub`` are required; ``exp``, ``nbf`` and ``iat`` are checked
  with ``leeway_s``;
- the JWKS is cached ``jwks_cache_s``; an unknown ``kid`` refetches it (key rotation) at most
  once every ``jwks_min_refresh_s``, so a stream of forged ``kid`` values cannot turn us into a
  load generator against the issuer.

Every refusal is :class:`Unauthenticated` with a stable ``reason``; no message contains the
token or a claim value.

Roles come from the ``roles_claim`` (a list, or a space-separated string; a dotted name such as
``realm_access.roles`` walks nested objects): ``"viewer"`` is a global grant,
``"operator@collection:finance/emea"`` and ``"viewer@source:orders-db"`` are scoped, ``"admin@*"``
is explicitly global. When the ``collections_claim`` is present, bare roles apply to those
collections only. Unknown roles grant nothing (they are dropped, not an error).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import jwt

from datawave.datasource.config import OidcSettings
from datawave.datasource.errors import Unauthenticated
from datawave.datasource.security.policy import BUILTIN_ROLES
from datawave.datasource.security.principal import Grant, Principal

__all__ = ["OidcVerifier", "grant_from_claim"]

log = logging.getLogger(__name__)

_MAX_JWKS_BYTES = 1_048_576
_FETCH_TIMEOUT_S = 5.0
# Which key a pinned algorithm may be verified with: (kty, crv or None).
_KEY_FOR_ALG: Mapping[str, tuple[str, str | None]] = {
    **{a: ("RSA", None) for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
_REASONS: tuple[tuple[type[Exception], str, str], ...] = (
    # Order matters: subclasses first.
    (jwt.ExpiredSignatureError, "expired", "token expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong_audience", "token not issued for this audience"),
    (jwt.InvalidIssuerError, "wrong_issuer", "token not issued by the configured issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim", "token lacks a required claim"),
    (jwt.InvalidSignatureError, "bad_signature", "token signature does not verify"),
    (jwt.InvalidAlgorithmError, "alg_not_allowed", "token algorithm not allowed"),
    (jwt.DecodeError, "malformed", "token is not a well-formed JWT"),
)


def grant_from_claim(spec: str, collections: Iterable[str] | None = None) -> list[Grant]:
    """The grants one roles-claim entry stands for (see the module docstring).

    Args:
        spec: ``role``, ``role@*``, ``role@collection:<path>`` or ``role@source:<ref>``.
        collections: the collections claim, when present: bare roles apply there only.

    Returns:
        Zero or more grants; an unparseable entry gives none.
    """
    role, sep, where = spec.strip().partition("@")
    if not role:
        return []
    if not sep:
        if collections is None:
            return [Grant(role=role)]
        return [Grant(role=role, collection=c) for c in collections]
    if where == "*":
        return [Grant(role=role)]
    kind, _, value = where.partition(":")
    if kind == "collection" and value.strip("/"):
        return [Grant(role=role, collection=value.strip("/"))]
    if kind == "source" and value:
        return [Grant(role=role, source=value)]
    return []


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class OidcVerifier:
    """Checks bearer JWTs of one issuer. Thread-safe; one per process.

    Args:
        settings: ``auth.oidc``; ``issuer`` None means JWT login is off (every token refused
            with reason ``jwt_disabled``).
        max_bytes: tokens larger than this are refused unread (``auth.max_credential_bytes``).
        roles: role names that exist (built-in + custom); others are dropped from claims.
        http: the client that fetches the JWKS (default: a short-timeout httpx client).
        clock: monotonic seconds, for the cache; injectable so tests need not sleep.
    """

    def __init__(
        self,
        settings: OidcSettings,
        *,
        max_bytes: int = 8192,
        roles: Iterable[str] | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.max_bytes = max_bytes
        self.roles = frozenset(roles if roles is not None else BUILTIN_ROLES)
        self.jwks_url = settings.jwks_url or (
            f"{settings.issuer.rstrip('/')}/.well-known/jwks.json" if settings.issuer else None
        )
        self._http = http or httpx.Client(timeout=_FETCH_TIMEOUT_S, follow_redirects=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._bound: dict[tuple[str, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._fetch_failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.settings.issuer)

    def close(self) -> None:
        self._http.close()

    # -- the check ----------------------------------------------------------------------------
    def verify(self, token: str) -> Principal:
        """The principal of a valid token.

        May fetch the JWKS (blocking, up to a few seconds): from an event loop, use
        :meth:`verify_async`.

        Raises:
            Unauthenticated: ``reason`` is one of ``too_large``, ``malformed``, ``jwt_disabled``,
                ``alg_not_allowed``, ``unknown_kid``, ``jwks_unavailable``, ``key_mismatch``,
                ``bad_signature``, ``expired``, ``not_yet_valid``, ``wrong_audience``,
                ``wrong_issuer``, ``missing_claim`` or ``invalid``.
        """
        if not isinstance(token, str):
            raise Unauthenticated("token is not a well-formed JWT", reason="malformed")
        if len(token) > self.max_bytes:
            raise Unauthenticated("token too large", reason="too_large")
        if not token.isascii():
            raise Unauthenticated("token is not a well-formed JWT", reason="malformed")
        if len(token.encode()) > self.max_bytes:
            raise Unauthenticated("token too large", reason="too_large")
        if not self.enabled:
            raise Unauthenticated("JWT login is not configured", reason="jwt_disabled")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("token is not a well-formed JWT", reason="malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            raise Unauthenticated("token algorithm not allowed", reason="alg_not_allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("token is not a well-formed JWT", reason="malformed")
        key = self._signing_key(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            for cls, reason, message in _REASONS:
                if isinstance(exc, cls):
                    raise Unauthenticated(message, reason=reason) from None
            raise Unauthenticated("token rejected", reason="invalid") from None
        return self._principal(claims)

    async def verify_async(self, token: str) -> Principal:
        """:meth:`verify` on a worker thread, so a JWKS fetch never blocks the event loop."""
        return await asyncio.to_thread(self.verify, token)

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        sub = _claim(claims, self.settings.subject_claim)
        if not isinstance(sub, str) or not sub:
            raise Unauthenticated("token lacks a required claim", reason="missing_claim")
        username = claims.get("preferred_username")
        collections = _strings(_claim(claims, self.settings.collections_claim))
        grants: list[Grant] = []
        for spec in _strings(_claim(claims, self.settings.roles_claim)) or []:
            for g in grant_from_claim(spec, collections):
                if g.role in self.roles and g not in grants:
                    grants.append(g)
        return Principal(
            id=f"{claims['iss']}|{sub}",
            kind="jwt",
            name=username if isinstance(username, str) and username else sub,
            grants=tuple(grants),
        )

    # -- the JWKS -----------------------------------------------------------------------------
    def _signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            fetched = False
            if self._stale(now):
                if not self._fetch_failed or self._may_try(now):
                    fetched = self._refresh(now)
                if self._stale(now):
                    # Fail closed: keys the issuer may have withdrawn are not used past their
                    # cache time just because the issuer cannot be reached.
                    raise Unauthenticated("identity provider keys unavailable",
                                          reason="jwks_unavailable")  # fmt: skip
            jwk = self._find(kid)
            if jwk is None and not fetched and self._may_try(now):
                self._refresh(now)  # rotation: the issuer may have published a new key
                jwk = self._find(kid)
            if jwk is None:
                raise Unauthenticated("token signed with an unknown key", reason="unknown_kid")
            return self._bind(jwk, alg)

    def _bind(self, jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
        """The key bound to ``alg``, if its type, curve and declared ``alg`` fit (under lock)."""
        cache_key = (str(jwk.get("kid", "")), alg)
        bound = self._bound.get(cache_key)
        if bound is not None:
            return bound
        kty, crv = _KEY_FOR_ALG[alg]
        if jwk.get("kty") != kty or (crv and jwk.get("crv") != crv) or jwk.get("alg", alg) != alg:
            raise Unauthenticated("token key does not fit its algorithm", reason="key_mismatch")
        try:
            bound = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise Unauthenticated("token key does not fit its algorithm",
                                  reason="key_mismatch") from None  # fmt: skip
        self._bound[cache_key] = bound
        return bound

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self.settings.jwks_cache_s

    def _may_try(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self.settings.jwks_min_refresh_s

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        # No kid: acceptable only when the issuer publishes exactly one signing key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _refresh(self, now: float) -> bool:
        """Fetch the JWKS; on failure keep what we had (it still expires on schedule)."""
        self._tried_at = now
        url = self.jwks_url
        assert url is not None
        try:
            resp = self._http.get(url, headers={"accept": "application/json"})
            resp.raise_for_status()
            if len(resp.content) > _MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            doc = json.loads(resp.content)
            keys = doc.get("keys") if isinstance(doc, dict) else None
            if not isinstance(keys, list):
                raise ValueError("JWKS document has no 'keys' list")
        except (httpx.HTTPError, ValueError) as exc:
            self._fetch_failed = True
            log.warning("JWKS fetch from %s failed: %s", url, type(exc).__name__)
            return False
        fresh: dict[str, dict[str, Any]] = {}
        for k in keys:
            if not isinstance(k, dict) or k.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # symmetric ("oct") keys are never accepted
            if k.get("use", "sig") != "sig":
                continue
            fresh[str(k.get("kid", ""))] = k
        if len(fresh) > 1:
            fresh.pop("", None)  # several keys: only those with a kid can be chosen
        self._keys = fresh
        self._bound = {}
        self._fetched_at = now
        self._fetch_failed = False
        log.info("JWKS from %s: %d signing key(s)", url, len(fresh))
        return True
