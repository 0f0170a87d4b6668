"""The mTLS front: client certificates for the API on Ray Serve.

Ray Serve's HTTP proxy never asks for a client certificate and puts nothing about TLS into the
ASGI scope (see :mod:`.tls`), so the API cannot see one. The front closes that gap. It is a
small ASGI reverse proxy served by :func:`.tls.server_config` (HTTPS; client certificates
optional at the handshake but verified against ``auth.tls.client_ca_file``) that forwards every
request to the Serve proxy on loopback::

    client --TLS + client cert--> front (this module) --HTTP, loopback--> Serve proxy -> replica
                                   X-Datawave-Client-Cert: <b64 DER>,...   ForwardedCertificate
                                   X-Datawave-Front-Ts:    <unix seconds>  (checks the HMAC,
                                   X-Datawave-Front-Sig:   <HMAC-SHA256>    then AuthGuard)

Request and response bodies stream both ways (server-sent events and NDJSON flow as they are
produced), WebSockets are pumped in both directions with their close codes and subprotocol.
Any ``X-Datawave-*`` header a client sends is dropped, so only the front speaks them.

The signature is HMAC-SHA256 under a 32-byte key (``<data_dir>/front.key``, 0600, made by
:func:`with_front_key`) over ``method`` (``WEBSOCKET`` for a WebSocket), the decoded path with
its query string, the timestamp and the certificate header, one per line. On the Serve side
:class:`ForwardedCertificate`, the outermost middleware of the app when
``auth.tls.front_key_file`` is set, checks it (and that the timestamp is within
:data:`MAX_SKEW_S`) and moves the chain into ``scope["extensions"]["tls"]`` — the place
:class:`~.auth.AuthGuard` reads a direct TLS peer's chain from, so it re-verifies the
certificate against the CA, dates included, exactly as for a direct connection. A request with
``X-Datawave-*`` headers but no valid signature is refused (401 ``front_signature`` or
``front_stale``) and audited, whatever other credential it carries.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datawave.datasource.config import DatawaveSettings, TlsSettings
from datawave.datasource.errors import ConfigError, DatawaveError, Unauthenticated
from datawave.datasource.serve.auth import PUBLIC_PATHS, problem_headers, refuse
from datawave.datasource.serve.problems import PROBLEM_JSON, problem_body

__all__ = [
    "CERT_HEADER",
    "FRONT_KEY_FILE",
    "MAX_SKEW_S",
    "SIG_HEADER",
    "TS_HEADER",
    "ForwardedCertificate",
    "Front",
    "check_signature",
    "decode_chain",
    "encode_chain",
    "ensure_front_key",
    "front_enabled",
    "load_front_key",
    "sign",
    "start_front",
    "stop_front",
    "with_front_key",
]

log = logging.getLogger(__name__)

FRONT_KEY_FILE = "front.key"
CERT_HEADER = b"x-datawave-client-cert"
TS_HEADER = b"x-datawave-front-ts"
SIG_HEADER = b"x-datawave-front-sig"
_OURS = b"x-datawave-"
#: How far the front's timestamp may be from the API's clock, either way.
MAX_SKEW_S = 60
KEY_BYTES = 32
_MAX_CHAIN = 4
_MAX_CERT_HEADER = 32_768

#: Request headers that describe one hop, not the request (RFC 9110 7.6.1), and forwarding
#: headers a client could forge: the front writes its own.
_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host",
    b"expect", b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
    b"x-real-ip",
})  # fmt: skip
#: Handshake headers the WebSocket client library writes itself.
_WS_OWN = frozenset({b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
                     b"sec-websocket-protocol", b"user-agent"})  # fmt: skip
_RESPONSE_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te",
                           b"trailer", b"upgrade", b"proxy-authenticate"})  # fmt: skip

FailureHook = Callable[[Scope, Unauthenticated], Awaitable[None]]


# -- the front key ---------------------------------------------------------------------------
def ensure_front_key(path: Path) -> bytes:
    """The key in ``path``, created (32 random bytes, 0600 from the first byte) when missing."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # a concurrent starter won; use its key
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(KEY_BYTES))
    return load_front_key(path)


def load_front_key(path: Path) -> bytes:
    """Read the front key.

    Raises:
        ConfigError: the file is missing, unreadable or shorter than 32 bytes — never a
            silent default key, which would let anyone forge a client certificate.
    """
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"auth.tls.front_key_file: cannot read {path}: {type(exc).__name__}",
                          field="auth.tls.front_key_file") from None  # fmt: skip
    if len(key) < KEY_BYTES:
        raise ConfigError(f"auth.tls.front_key_file: {path} holds {len(key)} bytes, needs "
                          f">= {KEY_BYTES} (delete it and let `datawave up` make a new one)",
                          field="auth.tls.front_key_file")  # fmt: skip
    if os.name == "posix" and Path(path).stat().st_mode & 0o077:
        log.warning("auth.tls.front_key_file %s is readable by others: chmod 600 it", path)
    return key


# -- the signature ---------------------------------------------------------------------------
def method_of(scope: Scope) -> str:
    """``WEBSOCKET`` for a WebSocket, so a signed GET cannot open one (and vice versa)."""
    return "WEBSOCKET" if scope["type"] == "websocket" else str(scope.get("method", "GET"))


def target_of(scope: Scope) -> str:
    """Decoded path and raw query: what both ends of the hop agree on."""
    query = scope.get("query_string") or b""
    path = str(scope.get("path", ""))
    return f"{path}?{query.decode('latin-1')}" if query else path


def sign(key: bytes, *, method: str, target: str, ts: str, cert: str) -> str:
    """HMAC-SHA256 (hex) of one forwarded request. ``ts`` and ``cert`` hold no newline (digits
    and base64), so the line-joined input is unambiguous."""
    data = "\n".join((method.upper(), target, ts, cert)).encode("utf-8", "surrogateescape")
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def check_signature(
    key: bytes,
    *,
    method: str,
    target: str,
    ts: str | None,
    cert: str,
    sig: str | None,
    now: float,
    max_skew_s: float = MAX_SKEW_S,
) -> None:
    """Accept a forwarded request only when the front signed exactly this one, recently.

    Raises:
        Unauthenticated: ``front_signature`` (missing, malformed or wrong signature) or
            ``front_stale`` (a correct signature outside the time window: a replay).
    """
    if not ts or not sig or not ts.isdigit() or len(ts) > 12:
        raise _refusal("front_signature")
    expected = sign(key, method=method, target=target, ts=ts, cert=cert)
    if not hmac.compare_digest(expected.encode(), sig.strip().lower().encode("ascii", "replace")):
        raise _refusal("front_signature")
    if abs(now - int(ts)) > max_skew_s:
        raise _refusal("front_stale")


def _refusal(reason: str) -> Unauthenticated:
    messages = {
        "front_signature": "X-Datawave-Client-Cert is accepted only from the mTLS front "
        "(signature missing or invalid)",
        "front_stale": "the mTLS front's signature is too old (replayed request?)",
        "cert_malformed": "the forwarded client certificate is unreadable",
    }
    return Unauthenticated(messages[reason], reason=reason)


def encode_chain(chain: Iterable[str | bytes]) -> str:
    """``X-Datawave-Client-Cert``: base64 DER per certificate, leaf first, comma separated."""
    out = []
    for cert in chain:
        der = ssl.PEM_cert_to_DER_cert(cert) if isinstance(cert, str) else bytes(cert)
        out.append(base64.b64encode(der).decode("ascii"))
    return ",".join(out)


def decode_chain(value: str) -> list[str]:
    """The chain of an ``X-Datawave-Client-Cert`` value as PEM strings (the ASGI TLS form).

    Raises:
        Unauthenticated: ``cert_malformed``: not base64, too long or too many certificates.
    """
    if not value:
        return []
    parts = value.split(",")
    if len(value) > _MAX_CERT_HEADER or len(parts) > _MAX_CHAIN:
        raise _refusal("cert_malformed")
    try:
        ders = [base64.b64decode(p.strip(), validate=True) for p in parts]
    except (binascii.Error, ValueError):
        raise _refusal("cert_malformed") from None
    if not all(ders):
        raise _refusal("cert_malformed")
    return [ssl.DER_cert_to_PEM_cert(d) for d in ders]


# -- the Serve side --------------------------------------------------------------------------
class ForwardedCertificate:
    """Pure-ASGI middleware of the API: trust a client certificate only from the front.

    Every ``X-Datawave-*`` header is removed before the app sees the request. When they were
    there and the signature holds, the forwarded chain becomes the ASGI TLS extension
    (``client_cert_chain``, PEM, leaf first) for :class:`~.auth.AuthGuard` to verify; a
    signed request without a certificate goes on without one (a token may still
    authenticate it). When the signature does not hold, the request is refused with 401 and
    ``on_failure`` (the audit log) is told — public paths just lose the headers.

    Args:
        app: the wrapped application.
        key: the front key (:func:`load_front_key`).
        on_failure: called for every refusal.
        max_skew_s: accepted distance between the front's timestamp and this clock.
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        key: bytes,
        on_failure: FailureHook | None = None,
        max_skew_s: float = MAX_SKEW_S,
        clock: Callable[[], float] = time.time,
        public_paths: frozenset[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.key = key
        self.on_failure = on_failure
        self.max_skew_s = max_skew_s
        self.clock = clock
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        ours = [(n, v) for n, v in headers if n.startswith(_OURS)]
        if not ours:
            await self.app(scope, receive, send)
            return
        scope = {**scope, "headers": [(n, v) for n, v in headers if not n.startswith(_OURS)]}
        try:
            chain = self.forwarded_chain(scope, ours)
        except Unauthenticated as exc:
            if scope["path"] in self.public_paths:
                await self.app(scope, receive, send)
                return
            log.warning("refused %s %s: X-Datawave-* headers without a valid front signature "
                        "(%s)", method_of(scope), scope["path"], exc.context.get("reason"))  # fmt: skip
            await self._refuse(scope, receive, send, exc)
            return
        if chain:
            tls = {"server_cert": None, "client_cert_chain": chain, "client_cert_name": None,
                   "client_cert_error": None, "tls_version": None, "cipher_suite": None}  # fmt: skip
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
        await self.app(scope, receive, send)

    def forwarded_chain(self, scope: Scope, ours: Sequence[tuple[bytes, bytes]]) -> list[str]:
        """The certificate chain the front forwarded with ``scope``'s request (maybe none).

        Raises:
            Unauthenticated: see :func:`check_signature` and :func:`decode_chain`.
        """
        found: dict[bytes, list[str]] = {}
        for name, value in ours:
            found.setdefault(name, []).append(value.decode("latin-1"))
        if any(len(v) > 1 for v in found.values()) or set(found) - {CERT_HEADER, TS_HEADER,
                                                                    SIG_HEADER}:  # fmt: skip
            raise _refusal("front_signature")
        cert = found.get(CERT_HEADER, [""])[0].strip()
        check_signature(self.key, method=method_of(scope), target=target_of(scope),
                        ts=found.get(TS_HEADER, [None])[0], cert=cert,
                        sig=found.get(SIG_HEADER, [None])[0], now=self.clock(),
                        max_skew_s=self.max_skew_s)  # fmt: skip
        return decode_chain(cert)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, exc: Unauthenticated
    ) -> None:
        if self.on_failure is not None:
            try:
                await self.on_failure(scope, exc)
            except Exception as err:  # auditing must not turn a 401 into a 500
                log.warning("could not audit a front signature failure: %s", type(err).__name__)
        reason = str(exc.context.get("reason"))
        body = problem_body(401, "unauthenticated", exc.message, instance=scope["path"],
                            reason=reason)  # fmt: skip
        await refuse(scope, receive, send, 401, body, problem_headers(exc))


# -- the front -------------------------------------------------------------------------------
def _peer_chain(scope: Scope) -> list[str | bytes]:
    tls = (scope.get("extensions") or {}).get("tls") or {}
    return list(tls.get("client_cert_chain") or [])


def _sendable_close(code: int | None, *, default: int = 1011) -> int:
    """A close code that may go on the wire (1005/1006/1015 are reserved for reporting)."""
    if code is None or code == 1005:
        return 1000
    if code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return default


class Front:
    """The reverse proxy in front of the Serve HTTP proxy (an ASGI app).

    Args:
        upstream: the Serve proxy, ``http://127.0.0.1:<port>``.
        key: the front key, shared with the API (:class:`ForwardedCertificate`).
        connect_timeout_s: how long to wait for the upstream to accept a connection.
        ws_max_bytes: largest WebSocket message relayed from the upstream.
        clock: seconds since the epoch, for the signature timestamp.
    """

    def __init__(
        self,
        upstream: str,
        key: bytes,
        *,
        connect_timeout_s: float = 10.0,
        ws_max_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream = httpx.URL(upstream)
        if self.upstream.scheme not in ("http", "https"):
            raise ConfigError(f"front upstream must be an http(s) URL, got {upstream!r}",
                              field="upstream")  # fmt: skip
        ws_scheme = "wss" if self.upstream.scheme == "https" else "ws"
        self.ws_upstream = f"{ws_scheme}://{self.upstream.netloc.decode('ascii')}"
        self.key = key
        self.connect_timeout_s = connect_timeout_s
        self.ws_max_bytes = ws_max_bytes
        self.clock = clock
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No client default headers (requests are sent as built), no proxies from the
            # environment, no redirects followed: the front is a transparent hop.
            self._client = httpx.AsyncClient(
                trust_env=False, follow_redirects=False,
                timeout=httpx.Timeout(connect=self.connect_timeout_s, read=None, write=60.0,
                                      pool=self.connect_timeout_s),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )  # fmt: skip
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def forward_headers(
        self, scope: Scope, *, websocket: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """The client's headers minus hop-by-hop and ``X-Datawave-*`` ones, plus the
        forwarding headers and the signed certificate chain."""
        raw: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        named = {t.strip().lower() for n, v in raw if n == b"connection" for t in v.split(b",")}
        drop = _HOP | named | (_WS_OWN if websocket else frozenset())
        out = [(n, v) for n, v in raw if n not in drop and not n.startswith(_OURS)]
        client = scope.get("client")
        if client:
            out.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
        scheme = {"wss": "https", "ws": "http"}.get(scope.get("scheme", ""), scope.get("scheme"))
        out.append((b"x-forwarded-proto", str(scheme or "https").encode("latin-1")))
        host = next((v for n, v in raw if n == b"host"), None)
        if host:
            out.append((b"x-forwarded-host", host))
        cert = encode_chain(_peer_chain(scope))
        ts = str(int(self.clock()))
        sig = sign(self.key, method=method_of(scope), target=target_of(scope), ts=ts, cert=cert)
        if cert:
            out.append((CERT_HEADER, cert.encode("ascii")))
        out += [(TS_HEADER, ts.encode("ascii")), (SIG_HEADER, sig.encode("ascii"))]
        return out

    def _raw_target(self, scope: Scope) -> bytes:
        raw_path = scope.get("raw_path") or str(scope.get("path", "/")).encode("utf-8")
        query = scope.get("query_string") or b""
        return bytes(raw_path) + (b"?" + bytes(query) if query else b"")

    # -- HTTP ----------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self.forward_headers(scope)
        raw = scope.get("headers") or []
        has_body = any(n in (b"content-length", b"transfer-encoding") for n, _ in raw)
        body_done = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    chunk = msg.get("body", b"")
                    if chunk:
                        yield chunk
                    if not msg.get("more_body", False):
                        return
            finally:
                body_done.set()

        url = self.upstream.copy_with(raw_path=self._raw_target(scope))
        request = httpx.Request(scope["method"], url, headers=headers,
                                content=body() if has_body else b"")  # fmt: skip
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("upstream unreachable for %s %s: %s", scope["method"], scope["path"],
                        type(exc).__name__)  # fmt: skip
            await self._bad_gateway(scope, send)
            return
        if not has_body:
            body_done.set()

        async def client_gone() -> None:
            await body_done.wait()  # receive() belongs to the body until it is read
            while (await receive())["type"] != "http.disconnect":
                pass

        pump = asyncio.ensure_future(self._pump_response(scope, response, send))
        watch = asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            for task in (pump, watch):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception as exc:  # the client went away mid-answer
                    log.info("relay of %s %s stopped: %s", scope["method"], scope["path"],
                             type(exc).__name__)  # fmt: skip
            await response.aclose()

    async def _pump_response(self, scope: Scope, response: httpx.Response, send: Send) -> None:
        head = [(n.lower(), v) for n, v in response.headers.raw if n.lower() not in _RESPONSE_HOP]
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": head})  # fmt: skip
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            # The answer has started: the only honest signal left is to cut the connection.
            log.warning("upstream broke off %s %s: %s", scope["method"], scope["path"],
                        type(exc).__name__)  # fmt: skip
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _bad_gateway(self, scope: Scope, send: Send, *, websocket: bool = False) -> None:
        body = problem_body(502, "bad_gateway", "the API behind the mTLS front is not answering",
                            instance=str(scope.get("path", "")))  # fmt: skip
        await self._send_problem(send, 502, _json(body), [], websocket=websocket)

    async def _send_problem(
        self,
        send: Send,
        status: int,
        raw: bytes,
        headers: list[tuple[bytes, bytes]],
        *,
        websocket: bool,
        content_type: bytes = PROBLEM_JSON.encode(),
    ) -> None:
        prefix = "websocket.http.response" if websocket else "http.response"
        head = [(b"content-type", content_type), (b"content-length", str(len(raw)).encode()),
                *headers]  # fmt: skip
        await send({"type": f"{prefix}.start", "status": status, "headers": head})
        await send({"type": f"{prefix}.body", "body": raw})

    # -- WebSocket -----------------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        if (await receive())["type"] != "websocket.connect":
            return
        raw = scope.get("headers") or []
        offered = [p.strip() for n, v in raw if n == b"sec-websocket-protocol"
                   for p in v.decode("latin-1").split(",") if p.strip()]  # fmt: skip
        agent = next((v.decode("latin-1") for n, v in raw if n == b"user-agent"), None)
        uri = self.ws_upstream + self._raw_target(scope).decode("latin-1")
        denial = "websocket.http.response" in (scope.get("extensions") or {})
        try:
            upstream = await connect(
                uri, additional_headers=[(n.decode("latin-1"), v.decode("latin-1"))
                                         for n, v in self.forward_headers(scope, websocket=True)],
                subprotocols=offered or None,  # type: ignore[arg-type]
                user_agent_header=agent, compression=None, proxy=None,
                open_timeout=self.connect_timeout_s, max_size=self.ws_max_bytes,
            )  # fmt: skip
        except InvalidStatus as exc:  # refused by the API (401, 403, 404 ...): pass it on
            resp = exc.response
            if denial:
                keep = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in resp.headers.raw_items()
                        if k.lower() in ("www-authenticate", "cache-control")]  # fmt: skip
                ctype = resp.headers.get("content-type", PROBLEM_JSON).encode("latin-1")
                await self._send_problem(send, resp.status_code, bytes(resp.body or b""), keep,
                                         websocket=True, content_type=ctype)  # fmt: skip
            else:
                await send({"type": "websocket.close", "code": 1008,
                            "reason": f"refused by the API: HTTP {resp.status_code}"})  # fmt: skip
            return
        except Exception as exc:  # unreachable, handshake broken, timeout: no traceback
            log.warning("upstream WebSocket failed for %s: %s", scope["path"], type(exc).__name__)
            if denial:
                await self._bad_gateway(scope, send, websocket=True)
            else:
                await send({"type": "websocket.close", "code": 1011, "reason": "bad gateway"})
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await self._pump_websocket(upstream, receive, send)
        finally:
            await upstream.close()

    async def _pump_websocket(self, upstream: Any, receive: Receive, send: Send) -> None:
        from websockets.exceptions import ConnectionClosed

        async def to_upstream() -> None:
            while True:
                msg: Message = await receive()
                if msg["type"] == "websocket.receive":
                    text = msg.get("text")
                    try:
                        await upstream.send(text if text is not None else msg.get("bytes") or b"")
                    except ConnectionClosed:
                        return
                elif msg["type"] == "websocket.disconnect":
                    code = _sendable_close(msg.get("code"), default=1001)
                    await upstream.close(code=code, reason=str(msg.get("reason") or ""))
                    return

        async def to_client() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in upstream:
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": bytes(data)})
            rcvd = upstream.close_code
            await send({"type": "websocket.close", "code": _sendable_close(rcvd),
                        "reason": upstream.close_reason or ""})  # fmt: skip

        tasks = {asyncio.ensure_future(to_upstream()), asyncio.ensure_future(to_client())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                err = None if task.cancelled() else task.exception()
                if err is not None and not isinstance(err, OSError | ConnectionClosed):
                    log.warning("WebSocket relay stopped: %s", type(err).__name__)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# -- starting and stopping (``datawave up`` / ``down``) --------------------------------------
def front_enabled(tls: TlsSettings) -> bool:
    """The front runs when the API has a certificate, a key and a client CA."""
    return None not in (tls.certfile, tls.keyfile, tls.client_ca_file)


def with_front_key(settings: DatawaveSettings) -> DatawaveSettings:
    """``settings`` with ``auth.tls.front_key_file`` set and the key made, when the front runs.

    Call this before the API is deployed: its replicas install :class:`ForwardedCertificate`
    from that setting.
    """
    tls = settings.auth.tls
    if not front_enabled(tls):
        return settings
    path = tls.front_key_file or settings.data_dir / FRONT_KEY_FILE
    ensure_front_key(path)
    auth = settings.auth.model_copy(update={"tls": tls.model_copy(update={"front_key_file": path})})
    return settings.model_copy(update={"auth": auth})


def front_command(settings: DatawaveSettings, *, upstream: str, port: int) -> list[str]:
    tls = settings.auth.tls
    assert tls.certfile and tls.keyfile and tls.client_ca_file and tls.front_key_file
    return [
        sys.executable, "-m", "datawave.datasource.serve.front", "--upstream", upstream,
        "--host", tls.front_host, "--port", str(port), "--certfile", str(tls.certfile),
        "--keyfile", str(tls.keyfile), "--client-ca-file", str(tls.client_ca_file),
        "--front-key-file", str(tls.front_key_file), "--log-level", settings.log_level,
    ]  # fmt: skip


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_front(
    settings: DatawaveSettings, *, upstream: str, log_file: Path, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Start the front as a child in its own process group; return its part of ``core.json``.

    Returns ``{}`` when the front does not apply (:func:`front_enabled`) or
    :func:`with_front_key` was not applied.

    Raises:
        DatawaveError: the front exited or did not listen within ``timeout_s``.
    """
    tls = settings.auth.tls
    if not front_enabled(tls) or tls.front_key_file is None:
        return {}
    port = tls.front_port or _free_port(tls.front_host)
    cmd = front_command(settings, upstream=upstream, port=port)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    host = _connect_host(tls.front_host)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise DatawaveError(f"the mTLS front exited with code {proc.returncode}; see "
                                f"{log_file}", component="front")  # fmt: skip
        try:
            with socket.create_connection((host, port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                stop_front({"front_pid": proc.pid})
                raise DatawaveError(f"the mTLS front did not open {host}:{port} within "
                                    f"{timeout_s:g}s; see {log_file}", component="front") from None  # fmt: skip
            time.sleep(0.1)
    shown = f"[{tls.front_host}]" if ":" in tls.front_host else tls.front_host
    return {"front_pid": proc.pid, "front_url": f"https://{shown}:{port}"}


def stop_front(state: dict[str, Any], grace_s: float = 10.0) -> bool:
    """Stop the front recorded in ``state`` (its process group). False when none ran."""
    pid = int(state.get("front_pid") or 0)
    if not pid:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m datawave.datasource.serve.front``: run the front until SIGTERM."""
    import uvicorn

    from datawave.datasource.serve.tls import server_config

    p = argparse.ArgumentParser(prog="python -m datawave.datasource.serve.front",
                                description="mTLS front for the datawave API on Ray Serve")  # fmt: skip
    p.add_argument("--upstream", required=True, help="the Serve HTTP proxy, http://127.0.0.1:8000")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    for name in ("certfile", "keyfile", "client-ca-file", "front-key-file"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    # uvicorn's and httpx's INFO lines carry URLs with their query strings, and a browser's
    # WebSocket may send ``?access_token=``: they stay at WARNING, so no credential is logged.
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("datawave").setLevel(args.log_level.upper())
    tls = TlsSettings(certfile=args.certfile, keyfile=args.keyfile,
                      client_ca_file=args.client_ca_file)  # fmt: skip
    try:
        app = Front(args.upstream, load_front_key(args.front_key_file))
        config = server_config(app, host=args.host, port=args.port, tls=tls,
                               log_level="warning", access_log=False, proxy_headers=False,
                               server_header=False, date_header=False, lifespan="on")  # fmt: skip
    except ConfigError as exc:
        print(f"datawave front: {exc.message}", file=sys.stderr)
        return 2
    log.info("mTLS front on %s:%s -> %s", args.host, args.port, args.upstream)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    # Run the copy imported under the package name, so log records say where they come from.
    from datawave.datasource.serve.front import main as _main

    sys.exit(_main())
