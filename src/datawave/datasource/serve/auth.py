"""Authentication of every request, for every protocol, in one place.

:class:`AuthGuard` is a pure-ASGI middleware (like :class:`~.middleware.BodyGuard`), so REST,
GraphQL, server-sent events, NDJSON streams and WebSockets all pass through the same code:

1. public paths (health, readiness, metrics, the API description) pass untouched;
2. the credential is taken from, in order: ``Authorization: Bearer <token>``, ``X-API-Key``,
   and for WebSockets only (browsers cannot set headers there) the subprotocol pair
   ``Sec-WebSocket-Protocol: bearer, <token>`` or the query parameter ``?access_token=``;
   a TLS client certificate verified by ``auth.tls.client_ca_file`` counts when no token is sent;
3. a token ``dwk_...`` is an API key (checked against the store), a three-part dotted token is
   an OIDC JWT (checked against the issuer's JWKS when ``auth.oidc.issuer`` is set);
4. the :class:`~datawave.datasource.security.Principal` goes into ``scope["state"]["principal"]``
   for the routes (see :mod:`.access`); a failure is refused before any route runs: HTTP 401
   problem+json with ``WWW-Authenticate: Bearer`` and a stable ``reason``, or for a WebSocket
   handshake the same 401 as a denial response — and appended to the audit log.

A credential is never echoed, logged or stored: messages name the reason only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from datawave.datasource.config import AuthSettings
from datawave.datasource.errors import DatawaveError, Unauthenticated, redact
from datawave.datasource.security.principal import Grant, Principal
from datawave.datasource.serve.problems import PROBLEM_JSON, from_error, problem_body

if TYPE_CHECKING:
    from datawave.datasource.store import MetadataStore

__all__ = [
    "PUBLIC_PATHS",
    "AuthGuard",
    "Authenticator",
    "Credential",
    "refuse",
]

log = logging.getLogger(__name__)

#: Paths that answer without a credential: liveness, readiness, metrics and the API description.
PUBLIC_PATHS: frozenset[str] = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)

#: What an RFC 6750 ``b64token`` may hold (and so every API key and JWT).
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

#: The principal every request gets when ``auth.enabled`` is false (a development switch).
AUTH_DISABLED = Principal(
    id="auth-disabled", kind="local", name="auth-disabled", grants=(Grant(role="admin"),)
)

_MESSAGES = {
    "missing": "no credential: send Authorization: Bearer <API key or token>",
    "malformed": "the credential is not an API key or a bearer token datawave understands",
    "too_large": "the credential is larger than allowed",
    "jwt_not_accepted": "bearer JWTs are not accepted here (auth.oidc.issuer is not set)",
}


@dataclass(frozen=True)
class Credential:
    """A credential as sent: ``token`` (or a client certificate) and where it came from."""

    token: str | None
    source: Literal["authorization", "x-api-key", "subprotocol", "query", "certificate"]
    chain: tuple[str | bytes, ...] = ()


class TokenVerifier(Protocol):
    def verify(self, token: str) -> Principal: ...


def _fail(reason: str, message: str | None = None) -> Unauthenticated:
    return Unauthenticated(message or _MESSAGES.get(reason, reason), reason=reason)


class Authenticator:
    """Turns a request's credential into a :class:`Principal`, or raises ``Unauthenticated``.

    Built once per app from ``settings.auth`` and a writable store (API keys record their
    last use). :meth:`extract` is cheap and runs on the event loop; :meth:`verify` may hit the
    store or fetch a JWKS and runs on a worker thread.
    """

    def __init__(
        self,
        settings: AuthSettings,
        store: MetadataStore | None,
        *,
        roles: Iterable[str] | None = None,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.max_bytes = settings.max_credential_bytes
        self.roles = roles
        self._verifier = verifier
        self._ca_pem: bytes | None = None
        if settings.tls.client_ca_file is not None:
            self._ca_pem = settings.tls.client_ca_file.read_bytes()

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def _oidc(self) -> TokenVerifier | None:
        if self._verifier is None and self.settings.oidc.issuer:
            from datawave.datasource.security.oidc import OidcVerifier

            self._verifier = OidcVerifier(
                self.settings.oidc, max_bytes=self.max_bytes, roles=self.roles
            )
        return self._verifier

    def extract(self, scope: Scope) -> tuple[Credential | None, str | None]:
        """The credential of a request and, for a WebSocket, the subprotocol to accept.

        Raises:
            Unauthenticated: ``too_large`` (checked before anything is parsed) or ``malformed``.
        """
        auth: list[bytes] = []
        api_key: list[bytes] = []
        protocols: list[bytes] = []
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                auth.append(value)
            elif name == b"x-api-key":
                api_key.append(value)
            elif name == b"sec-websocket-protocol":
                protocols.append(value)
        for value in (*auth, *api_key, *protocols):
            if len(value) > self.max_bytes + 64:
                raise _fail("too_large")
        if len(auth) > 1 or len(api_key) > 1:
            raise _fail("malformed", "send one credential, not several")
        if auth:
            scheme, _, token = auth[0].decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer":
                raise _fail("malformed", "the Authorization scheme must be Bearer")
            return Credential(self._token(token.strip()), "authorization"), None
        if api_key:
            return Credential(self._token(api_key[0].decode("latin-1").strip()), "x-api-key"), None
        if scope["type"] == "websocket":
            offered = [p.strip() for v in protocols for p in v.decode("latin-1").split(",")]
            if "bearer" in offered:
                i = offered.index("bearer")
                if i + 1 >= len(offered):
                    raise _fail("malformed", "subprotocol 'bearer' must be followed by the token")
                return Credential(self._token(offered[i + 1]), "subprotocol"), "bearer"
            query = scope.get("query_string", b"")
            if len(query) > 4 * self.max_bytes:
                raise _fail("too_large")
            tokens = [v for k, v in parse_qsl(query.decode("latin-1")) if k == "access_token"]
            if len(tokens) > 1:
                raise _fail("malformed", "send one access_token")
            if tokens:
                return Credential(self._token(tokens[0]), "query"), None
        chain = self._peer_chain(scope)
        if chain:
            return Credential(None, "certificate", chain=chain), None
        return None, None

    def _token(self, token: str) -> str:
        if len(token) > self.max_bytes:
            raise _fail("too_large")
        if not token or _TOKEN.fullmatch(token) is None:
            raise _fail("malformed")
        return token

    def _peer_chain(self, scope: Scope) -> tuple[str | bytes, ...]:
        """The client certificate chain of a TLS connection (ASGI TLS extension, filled in by
        ``serve.tls``), leaf first; empty without ``auth.tls.client_ca_file``."""
        if self._ca_pem is None:
            return ()
        tls = (scope.get("extensions") or {}).get("tls") or {}
        return tuple(tls.get("client_cert_chain") or ())

    def verify(self, cred: Credential) -> Principal:
        """Check ``cred``; blocking (store lookups, JWKS fetches)."""
        if cred.source == "certificate":
            assert cred.chain and self._ca_pem is not None
            from datawave.datasource.security.certs import principal_from_certificate

            return principal_from_certificate(
                cred.chain[0], self._ca_pem, intermediates=cred.chain[1:]
            )
        token = cred.token or ""
        if token.startswith("dwk_"):
            if self.store is None:
                raise _fail("unknown_key", "API keys are not accepted here")
            return self.store.authenticate_api_key(token)
        if token.count(".") == 2:
            verifier = self._oidc()
            if verifier is None:
                raise _fail("jwt_not_accepted")
            return verifier.verify(token)
        raise _fail("malformed")


def problem_headers(exc: Unauthenticated) -> list[tuple[bytes, bytes]]:
    reason = str(exc.context.get("reason", "invalid"))
    challenge = 'Bearer realm="datawave"'
    if reason != "missing":  # RFC 6750 3.1: no error code when no credential was sent
        challenge += f', error="invalid_token", error_description="{reason}"'
    return [(b"www-authenticate", challenge.encode())]


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer with a problem+json before any route runs (HTTP, or a WebSocket handshake).

    A WebSocket handshake gets the same HTTP response through the ASGI denial-response
    extension when the server offers it, else a close (1008) with the code as the reason.
    """
    raw = json.dumps(body).encode()
    head = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(raw)).encode()),
            *(headers or [])]  # fmt: skip
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": raw})
        return
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": head})
        await send({"type": "websocket.http.response.body", "body": raw})
    else:
        reason = f"{status} {body.get('code', '')}: {body.get('detail', '')}"[:120]
        await send({"type": "websocket.close", "code": 1008, "reason": reason})


FailureHook = Callable[[Scope, Unauthenticated], Awaitable[None]]


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point (``root_path``), as the routes see it."""
    path: str = scope["path"]
    root: str = scope.get("root_path") or ""
    return path[len(root) :] or "/" if root and path.startswith(root) else path


class AuthGuard:
    """The ASGI middleware: authenticate, store the principal, or refuse (and audit) early.

    Args:
        app: the wrapped application.
        authenticator: extracts and verifies credentials.
        run: runs a blocking call on a worker thread (``ApiContext.run``).
        on_failure: called for every refused request (the audit log).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        run: Callable[..., Awaitable[Any]],
        on_failure: FailureHook | None = None,
        public_paths: frozenset[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.authn = authenticator
        self.run = run
        self.on_failure = on_failure
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _route_path(scope) in self.public_paths:
            await self.app(scope, receive, send)
            return
        subprotocol = None
        if not self.authn.enabled:
            principal = AUTH_DISABLED
        else:
            cred: Credential | None = None
            try:
                cred, subprotocol = self.authn.extract(scope)
                if cred is None:
                    raise _fail("missing")
                principal = await self.run(self.authn.verify, cred)
            except Unauthenticated as exc:
                await self._refuse(scope, receive, send, exc, cred.token if cred else None)
                return
            except DatawaveError as exc:  # store or JWKS down: not the caller's fault
                resp = from_error(exc, scope["path"])
                await refuse(scope, receive, send, resp.status_code, json.loads(bytes(resp.body)))
                return
            except Exception as exc:
                log.error("authentication failed unexpectedly: %s", type(exc).__name__)
                await refuse(scope, receive, send, 500,
                             problem_body(500, "internal_error", "internal error",
                                          instance=scope["path"]))  # fmt: skip
                return
        scope["state"] = {**(scope.get("state") or {}), "principal": principal,
                          "ws_subprotocol": subprotocol}  # fmt: skip
        await self.app(scope, receive, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, exc: Unauthenticated, token: str | None
    ) -> None:
        reason = str(exc.context.get("reason") or "invalid")
        message = redact(exc.message, [token] if token else [])
        if token and token in message:  # belt and braces: a credential is never echoed
            message = _MESSAGES.get(reason, "credential rejected")
        clean = Unauthenticated(message, reason=reason)
        if self.on_failure is not None:
            try:
                await self.on_failure(scope, clean)
            except Exception as err:  # auditing must not turn a 401 into a 500
                log.warning("could not audit an authentication failure: %s", type(err).__name__)
        body = problem_body(401, "unauthenticated", message, instance=scope["path"], reason=reason)
        await refuse(scope, receive, send, 401, body, problem_headers(clean))
