"""HTTPS with optional client certificates (mTLS) for the API under plain uvicorn.

uvicorn verifies a client certificate during the handshake when asked to
(``ssl_cert_reqs``/``ssl_ca_certs``) but puts nothing about it into the ASGI scope, so the app
could not tell who connected. The protocol classes here fix that: on a TLS connection they read
the peer certificate from the transport (``ssl_object.getpeercert(binary_form=True)``) and add
the ASGI TLS extension to every request and WebSocket scope of that connection::

    scope["extensions"]["tls"] = {"client_cert_chain": [<PEM>], "client_cert_name": ...,
                                  "client_cert_error": None, "tls_version": 0x0304, ...}

:func:`datawave.datasource.security.certs.principal_from_asgi_scope` (and the auth middleware)
turn that into a :class:`Principal`.

The handshake checks the chain against ``auth.tls.client_ca_file`` but not the validity dates
(OpenSSL's ``X509_V_FLAG_NO_CHECK_TIME``): an expired certificate is let through to the app,
which refuses it with a 401 ``cert_expired`` that names the reason and lands in the audit log,
instead of a bare TLS alert. Every certificate in the extension is re-verified by the app,
dates included. A certificate from another CA still fails the handshake.

Limits: this works where *we* start uvicorn (``python -m datawave.datasource.serve.local``,
:func:`server_config`). Ray Serve's HTTP proxy builds its own uvicorn ``Config`` without
``ssl_cert_reqs`` (so it never asks for a client certificate) and with the default protocol
classes; ``HTTPOptions`` exposes neither, and proxy middlewares see only the ASGI scope. Behind
the Serve proxy, use API keys or OIDC tokens, or terminate mTLS in front of it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from datawave.datasource.config import TlsSettings
from datawave.datasource.errors import ConfigError

__all__ = [
    "TlsH11Protocol",
    "TlsScope",
    "http_protocol",
    "server_config",
    "tls_extension",
    "ws_protocol",
]

log = logging.getLogger(__name__)

#: OpenSSL X509_V_FLAG_NO_CHECK_TIME (1.1.0+); not exported by :mod:`ssl`.
NO_CHECK_TIME = 0x200000
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension for a connection; None when it is not TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": _subject(der) if der else None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


def _subject(der: bytes) -> str | None:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None


class TlsScope:
    """Adds one connection's TLS extension to each scope it carries."""

    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": self.tls}}
        await self.app(scope, receive, send)


class _PeerCertMixin:
    """For uvicorn protocol classes: each sets ``self.app`` per connection in ``__init__`` and
    gets its transport in ``connection_made`` (a WebSocket upgrade hands the same TLS
    transport to the WebSocket protocol), so wrapping ``self.app`` there covers the
    connection."""

    app: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        tls = tls_extension(transport)
        if tls is not None:
            self.app = TlsScope(self.app, tls)


class TlsH11Protocol(_PeerCertMixin, H11Protocol):
    pass


def http_protocol() -> type[asyncio.Protocol]:
    """httptools when installed (uvicorn's own preference), else h11, with the TLS scope."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return TlsH11Protocol

    class TlsHttpToolsProtocol(_PeerCertMixin, HttpToolsProtocol):
        pass

    return TlsHttpToolsProtocol


def ws_protocol() -> type[asyncio.Protocol] | None:
    """uvicorn's preferred WebSocket implementation, with the TLS scope; None if none."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:
        try:
            from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
        except ImportError:
            return None

        class TlsWSProtocol(_PeerCertMixin, WSProtocol):
            pass

        return TlsWSProtocol

    class TlsWebSocketsProtocol(_PeerCertMixin, WebSocketsSansIOProtocol):
        pass

    return TlsWebSocketsProtocol


def server_config(
    app: ASGIApp, *, host: str, port: int, tls: TlsSettings, **uvicorn_kwargs: Any
) -> uvicorn.Config:
    """A loaded uvicorn config serving ``app``: HTTPS when ``tls.certfile`` is set, asking for
    a client certificate (optional; verified against ``tls.client_ca_file``) when that is set.

    Raises:
        ConfigError: a client CA or key without a certificate, or a file that is missing.
    """
    if tls.certfile is None and (tls.keyfile is not None or tls.client_ca_file is not None):
        raise ConfigError(
            "auth.tls.certfile: required when auth.tls.keyfile or auth.tls.client_ca_file is set",
            field="auth.tls.certfile",
        )
    for name in ("certfile", "keyfile", "client_ca_file"):
        path: Path | None = getattr(tls, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"auth.tls.{name}: {path} does not exist", field=f"auth.tls.{name}")
    kwargs: dict[str, Any] = {"http": http_protocol(), "ws": ws_protocol() or "none"}
    if tls.certfile is not None:
        kwargs.update(ssl_certfile=str(tls.certfile),
                      ssl_keyfile=str(tls.keyfile) if tls.keyfile else None)  # fmt: skip
        if tls.client_ca_file is not None:
            kwargs.update(ssl_cert_reqs=ssl.CERT_OPTIONAL, ssl_ca_certs=str(tls.client_ca_file))
    config = uvicorn.Config(app, host=host, port=port, **{**kwargs, **uvicorn_kwargs})
    try:
        config.load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"auth.tls: cannot load the certificate or key: {exc}",
                          field="auth.tls") from None  # fmt: skip
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.client_ca_file is not None:
            # Dates are checked by the app, so an expired certificate gets a 401 with a reason.
            config.ssl.verify_flags = ssl.VerifyFlags(int(config.ssl.verify_flags) | NO_CHECK_TIME)
    return config
