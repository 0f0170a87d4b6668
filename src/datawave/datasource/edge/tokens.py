"""One-time join tokens: how an edge learns where the hub is and how to log in to it.

A token is ``dw1.<payload>.<mac>``, both parts base64url without padding. The payload is compact
JSON::

    {"v": 1, "site": "A", "node": "9f1c...", "url": "nats-leaf://hub:7422", "user": "edge-A",
     "pw": "<random>", "iat": 1732560000, "exp": 1732563600, "nonce": "<random>"}

and ``mac`` is HMAC-SHA256 over ``dw1.<payload>`` with the core's secret key. When the hub's
leaf listener requires TLS, the payload also carries ``"tls": {"ca", "cert", "key"}`` (DER,
base64url): the core's CA certificate and a client certificate + key for the site that expire
with the token, which the edge uses only until the core has signed its own certificate (see
:mod:`~datawave.datasource.edge.tls`). Only the core can
verify a token; the edge reads it with :func:`parse_unverified`, which still refuses a malformed
or expired token before anything is written on the edge.

The core redeems a token exactly once (:meth:`TokenIssuer.redeem`): the MAC is checked first,
so a tampered ``exp`` reads as "signature invalid", then expiry, then the nonce against the
store of used nonces. A redeemed edge is remembered in the same store, which is what the hub's
leaf-node users are rendered from.

A token is a bearer secret: it carries the edge's password (and the enrollment key). Neither
the token nor what it carries is ever logged, put in an error, or shown by ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

from datawave.datasource.errors import ConfigError, EdgeError, TokenRejected

__all__ = [
    "EdgeCredentials",
    "Enrollment",
    "JoinToken",
    "TokenIssuer",
    "edge_user",
    "parse_unverified",
    "validate_site",
]

log = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "dw1"
TOKEN_VERSION: Final = 1
MAX_TTL_S: Final = 30 * 24 * 3600
LEAF_SCHEMES: Final = frozenset({"nats-leaf", "nats", "tls", "ws", "wss"})
_SITE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_NODE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NONCE_RE: Final = re.compile(r"[0-9a-f]{32}")
_KEY_BYTES: Final = 32
# Used nonces are kept this long past their expiry, so a clock step back cannot revive one.
_USED_RETENTION_S: Final = 24 * 3600


def validate_site(site: str) -> str:
    """Check a site name; it becomes a subject token, a user name and a JetStream domain.

    Raises:
        ConfigError: Not 1-63 letters, digits, ``_`` or ``-`` (no dots, no wildcards).
    """
    if not isinstance(site, str) or not _SITE_RE.fullmatch(site):
        raise ConfigError(
            f"invalid site name {site!r}: use 1-63 letters, digits, '_' or '-'", field="site"
        )
    return site


def edge_user(site: str) -> str:
    """The hub user an edge's leaf connection logs in as."""
    return f"edge-{validate_site(site)}"


@dataclass(frozen=True)
class EdgeCredentials:
    """What an edge needs to open its leaf connection; ``password`` never shows in ``repr``."""

    site: str
    node: str
    user: str
    password: str = field(repr=False)
    leaf_url: str

    @property
    def remote_url(self) -> str:
        """The hub's leaf URL with the user and password in it, for ``leafnodes.remotes``."""
        parts = urlsplit(self.leaf_url)
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return parts._replace(netloc=f"{auth}@{parts.netloc}").geturl()

    def to_dict(self) -> dict[str, str]:
        return {
            "site": self.site,
            "node": self.node,
            "user": self.user,
            "password": self.password,
            "leaf_url": self.leaf_url,
        }


@dataclass(frozen=True)
class Enrollment:
    """The TLS material a token carries (DER): the CA that signs the hub and the edges, and a
    client certificate for the site valid until the token expires. ``key_der`` never shows."""

    ca_der: bytes
    cert_der: bytes
    key_der: bytes = field(repr=False)

    def to_payload(self) -> dict[str, str]:
        return {"ca": _b64(self.ca_der), "cert": _b64(self.cert_der), "key": _b64(self.key_der)}


@dataclass(frozen=True)
class JoinToken:
    """A decoded token. Fields are trustworthy only after :meth:`TokenIssuer.redeem`."""

    version: int
    credentials: EdgeCredentials
    issued_at: int
    expires_at: int
    nonce: str
    enrollment: Enrollment | None = None

    @property
    def site(self) -> str:
        return self.credentials.site

    @property
    def leaf_url(self) -> str:
        return self.credentials.leaf_url


def parse_unverified(token: str, *, now: float | None = None) -> JoinToken:
    """Decode a token without checking its MAC: what the edge does before joining.

    The edge cannot verify the MAC (only the core holds the key), but it refuses anything
    malformed or already expired, so a bad token leaves nothing half-configured behind.

    Raises:
        TokenRejected: ``reason`` is ``"malformed"`` or ``"expired"``.
    """
    _, _, parsed = _split(token)
    _check_expiry(parsed, time.time() if now is None else now)
    return parsed


class TokenIssuer:
    """Issues and redeems join tokens on the core.

    Args:
        secret_key_path: HMAC key file; created with 32 random bytes (mode 0600) if missing.
        store_path: JSON file of used nonces and joined edges (mode 0600: it holds their
            passwords, which the hub config is rendered from). Writes are atomic and
            serialized across processes with a lock file next to it.
        clock: Seconds since the epoch; injectable for tests.
    """

    def __init__(
        self,
        secret_key_path: Path | str,
        store_path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret_key_path = Path(secret_key_path)
        self.store_path = Path(store_path)
        self._clock = clock
        self._key = _load_or_create_key(self.secret_key_path)

    def create(
        self,
        site: str,
        ttl_s: int,
        leaf_url: str,
        *,
        node: str | None = None,
        enrollment: Callable[[str, int], Enrollment] | None = None,
    ) -> tuple[str, EdgeCredentials]:
        """Mint a one-time token for ``site``.

        Args:
            site: The edge site; see :func:`validate_site`.
            ttl_s: Seconds until the token expires (1 to 30 days' worth).
            leaf_url: The hub's leaf-node URL as the edge will dial it, without credentials.
            node: The edge's node id; a random one by default.
            enrollment: ``(site, expires_at) -> Enrollment`` for a hub whose leaf listener
                requires client certificates; the token then carries it.

        Returns:
            The token string and the credentials it carries.

        Raises:
            ConfigError: An argument is invalid.
        """
        validate_site(site)
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ConfigError(f"ttl must be 1..{MAX_TTL_S} seconds, got {ttl_s}", field="ttl")
        _check_leaf_url(leaf_url, error=lambda msg: ConfigError(msg, field="leaf_url"))
        node = node or uuid.uuid4().hex[:12]
        if not _NODE_RE.fullmatch(node):
            raise ConfigError(f"invalid node id {node!r}", field="node")
        creds = EdgeCredentials(
            site=site,
            node=node,
            user=edge_user(site),
            password=secrets.token_urlsafe(24),
            leaf_url=leaf_url,
        )
        now = int(self._clock())
        payload = {
            "v": TOKEN_VERSION,
            "site": site,
            "node": node,
            "url": leaf_url,
            "user": creds.user,
            "pw": creds.password,
            "iat": now,
            "exp": now + int(ttl_s),
            "nonce": secrets.token_hex(16),
        }
        if enrollment is not None:
            payload["tls"] = enrollment(site, now + int(ttl_s)).to_payload()
        body = f"{TOKEN_PREFIX}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
        token = f"{body}.{_b64(self._mac(body))}"
        with self._locked_store() as store:
            # The hub must know the edge's user before the edge can dial in to redeem.
            store["pending"][payload["nonce"]] = {**creds.to_dict(), "exp": payload["exp"],
                                                  "iat": now}  # fmt: skip
            store["pending"] = {n: p for n, p in store["pending"].items() if p["exp"] > now}
        log.info("issued join token for site %s node %s, valid %ds", site, node, ttl_s)
        return token, creds

    def verify(self, token: str) -> JoinToken:
        """Check a token as :meth:`redeem` would, without using it up: what the gateway does
        before it signs anything for the edge presenting it.

        Raises:
            TokenRejected: As :meth:`redeem`.
        """
        parsed = self._authentic(token)
        if parsed.nonce in self._read_store()["used"]:
            raise _rejected("already used", "join tokens are single-use", site=parsed.site)
        return parsed

    def redeem(self, token: str) -> EdgeCredentials:
        """Verify a token and mark it used; the edge becomes one of :meth:`edges`.

        Raises:
            TokenRejected: ``reason`` is ``"malformed"``, ``"signature invalid"``,
                ``"expired"`` or ``"already used"``.
        """
        parsed = self._authentic(token)
        now = self._clock()
        creds = parsed.credentials
        with self._locked_store() as store:
            if parsed.nonce in store["used"]:
                raise _rejected("already used", "join tokens are single-use", site=creds.site)
            store["used"][parsed.nonce] = {
                "site": creds.site,
                "exp": parsed.expires_at,
                "used_at": int(now),
            }
            store["edges"][creds.site] = {**creds.to_dict(), "joined_at": int(now)}
            store["pending"].pop(parsed.nonce, None)
            cutoff = now - _USED_RETENTION_S
            store["used"] = {n: u for n, u in store["used"].items() if u["exp"] >= cutoff}
        log.info("site %s (node %s) redeemed its join token", creds.site, creds.node)
        return creds

    def edges(self) -> list[EdgeCredentials]:
        """Every edge that has joined, ordered by site: the hub's leaf users."""
        store = self._read_store()
        return [
            EdgeCredentials(
                site=e["site"],
                node=e["node"],
                user=e["user"],
                password=e["password"],
                leaf_url=e["leaf_url"],
            )
            for _, e in sorted(store["edges"].items())
        ]

    def hub_users(self) -> list[EdgeCredentials]:
        """The hub's leaf users: per site, the newest of its joined edge and unexpired tokens.

        A token's user is live from the moment it is issued until it expires, so the edge can
        dial in and redeem it; a newer token for a joined site re-keys that site.
        """
        store = self._read_store()
        now = self._clock()
        newest: dict[str, tuple[float, dict[str, Any]]] = {}
        for e in store["edges"].values():
            newest[e["site"]] = (e.get("joined_at", 0), e)
        for p in store["pending"].values():
            if p["exp"] > now and p.get("iat", 0) > newest.get(p["site"], (-1, {}))[0]:
                newest[p["site"]] = (p["iat"], p)
        return [
            EdgeCredentials(site=e["site"], node=e["node"], user=e["user"],
                            password=e["password"], leaf_url=e["leaf_url"])
            for _, (_, e) in sorted(newest.items())
        ]  # fmt: skip

    def revoke(self, site: str) -> bool:
        """Forget a joined edge; the hub refuses it once re-rendered and reloaded."""
        with self._locked_store() as store:
            found = store["edges"].pop(validate_site(site), None) is not None
            store["pending"] = {n: p for n, p in store["pending"].items() if p["site"] != site}
        if found:
            log.info("revoked edge site %s", site)
        return found

    # Internals --------------------------------------------------------------------------------
    def _authentic(self, token: str) -> JoinToken:
        """The token, if it is well formed, issued by this core, unaltered and unexpired."""
        body, mac, parsed = _split(token)
        if not hmac.compare_digest(_b64(self._mac(body)), mac):
            raise _rejected("signature invalid", "it was not issued by this core or was altered")
        _check_expiry(parsed, self._clock())
        return parsed

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()

    def _read_store(self) -> dict[str, Any]:
        try:
            data = json.loads(self.store_path.read_text())
        except FileNotFoundError:
            return {"version": 1, "used": {}, "edges": {}, "pending": {}}
        except (OSError, ValueError) as exc:
            raise EdgeError(
                f"cannot read token store {self.store_path}: {exc}", path=str(self.store_path)
            ) from exc
        data.setdefault("used", {})
        data.setdefault("edges", {})
        data.setdefault("pending", {})
        return dict(data)

    @contextlib.contextmanager
    def _locked_store(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write the store under an exclusive lock; written only on success."""
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.store_path.with_name(self.store_path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            store = self._read_store()
            yield store
            _atomic_write(self.store_path, json.dumps(store, indent=1, sort_keys=True).encode())
        finally:
            os.close(fd)  # closing releases the lock


def _rejected(reason: str, detail: str, **context: Any) -> TokenRejected:
    return TokenRejected(f"join token rejected: {reason} ({detail})", reason=reason, **context)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _split(token: str) -> tuple[str, str, JoinToken]:
    """Check the shape of a token and decode its payload; returns (signed body, MAC, token)."""
    if not isinstance(token, str):
        raise _rejected("malformed", "a token is a string")
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise _rejected("malformed", f"expected '{TOKEN_PREFIX}.<payload>.<signature>'")
    try:
        payload = json.loads(_unb64(parts[1]))
        _unb64(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _rejected("malformed", "payload is not base64url JSON") from None
    return f"{parts[0]}.{parts[1]}", parts[2], _decode(payload)


def _decode(p: Any) -> JoinToken:
    def bad(detail: str) -> TokenRejected:
        return _rejected("malformed", detail)

    if not isinstance(p, dict):
        raise bad("payload is not an object")
    if p.get("v") != TOKEN_VERSION:
        raise bad(f"unsupported token version {p.get('v')!r}")
    for name in ("site", "node", "url", "user", "pw", "nonce"):
        if not isinstance(p.get(name), str):
            raise bad(f"field {name!r} missing or not a string")
    for name in ("iat", "exp"):
        if not isinstance(p.get(name), int) or isinstance(p.get(name), bool):
            raise bad(f"field {name!r} missing or not an integer")
    if not _SITE_RE.fullmatch(p["site"]) or p["user"] != f"edge-{p['site']}":
        raise bad("site or user is invalid")
    if not _NODE_RE.fullmatch(p["node"]):
        raise bad("node id is invalid")
    if len(p["pw"]) < 16 or not _NONCE_RE.fullmatch(p["nonce"]):
        raise bad("password or nonce is invalid")
    if p["exp"] <= p["iat"]:
        raise bad("expires before it was issued")
    _check_leaf_url(p["url"], error=bad)
    enrollment = None
    if p.get("tls") is not None:
        tls = p["tls"]
        if not isinstance(tls, dict) or not all(isinstance(tls.get(k), str) for k in
                                                ("ca", "cert", "key")):  # fmt: skip
            raise bad("field 'tls' must hold ca, cert and key")
        try:
            enrollment = Enrollment(ca_der=_unb64(tls["ca"]), cert_der=_unb64(tls["cert"]),
                                    key_der=_unb64(tls["key"]))  # fmt: skip
        except (ValueError, binascii.Error):
            raise bad("field 'tls' is not base64url") from None
    return JoinToken(
        version=p["v"],
        credentials=EdgeCredentials(
            site=p["site"], node=p["node"], user=p["user"], password=p["pw"], leaf_url=p["url"]
        ),
        issued_at=p["iat"],
        expires_at=p["exp"],
        nonce=p["nonce"],
        enrollment=enrollment,
    )


def _check_expiry(token: JoinToken, now: float) -> None:
    if now >= token.expires_at:
        ago = int(now - token.expires_at)
        raise _rejected(
            "expired", f"expired {ago}s ago; ask the core for a new one", site=token.site
        )


def _check_leaf_url(url: str, *, error: Callable[[str], Exception]) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise error("leaf URL is not a URL") from None
    if parts.scheme not in LEAF_SCHEMES or not parts.hostname or port is None:
        raise error(f"leaf URL must be <{'|'.join(sorted(LEAF_SCHEMES))}>://host:port")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise error("leaf URL must not carry credentials, a path or a query")


def _load_or_create_key(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race: use its key
            return _load_or_create_key(path)
        key = secrets.token_bytes(_KEY_BYTES)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return key
    except OSError as exc:
        raise EdgeError(f"cannot read join-token key {path}: {exc}", path=str(path)) from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < _KEY_BYTES:
        raise EdgeError(
            f"join-token key {path} is not {_KEY_BYTES} hex-encoded bytes", path=str(path)
        )
    return key


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
