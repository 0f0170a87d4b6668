"""Client certificates end to end: real TLS handshakes against uvicorn started through
``serve.tls.server_config``, with certificates from ``datawave certs``' CA."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.sync.client import connect as ws_connect

from datawave.datasource.config import TlsSettings, load_settings
from datawave.datasource.errors import ConfigError, Unauthenticated
from datawave.datasource.security import Grant
from datawave.datasource.security.certs import CertificateAuthority, principal_from_asgi_scope
from datawave.datasource.serve.tls import server_config
from tests.fixtures.pki import expired_client_cert


@dataclass
class Pki:
    ca: CertificateAuthority
    server: TlsSettings
    certs: dict[str, tuple[Path, Path]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.init(root / "ca")
    out = root / "certs"
    server = ca.issue("server", "api", out_dir=out, hosts=["localhost", "127.0.0.1"])
    certs: dict[str, tuple[Path, Path]] = {}
    for kind, name, grants in (
        ("service", "reader", [Grant(role="viewer")]),
        ("service", "fin-op", [Grant(role="operator", collection="fin")]),
        ("edge", "plant-7", []),
    ):
        issued = ca.issue(kind, name, out_dir=out, grants=grants)  # type: ignore[arg-type]
        certs[name] = (issued.cert_path, issued.key_path)
    certs["server-as-client"] = (server.cert_path, server.key_path)
    certs["expired"] = expired_client_cert(root / "ca", out, role="admin")
    forged = CertificateAuthority.init(root / "forged", name="datawave CA")
    f = forged.issue(
        "service", "intruder", out_dir=root / "forged-out", grants=[Grant(role="admin")]
    )
    certs["forged"] = (f.cert_path, f.key_path)
    tls = TlsSettings(certfile=server.cert_path, keyfile=server.key_path,
                      client_ca_file=ca.ca_cert_path)  # fmt: skip
    return Pki(ca, tls, certs)


def client_context(pki: Pki, who: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.ca_cert_path))
    if who is not None:
        cert, key = pki.certs[who]
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


@contextmanager
def serving(app: Any, tls: TlsSettings, *, lifespan: str = "off") -> Iterator[str]:
    """Run uvicorn on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(app, host="127.0.0.1", port=port, tls=tls, lifespan=lifespan,
                           log_level="warning")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ready = threading.Event()
    while not server.started and thread.is_alive():
        ready.wait(0.02)
    assert server.started, "uvicorn did not start"
    scheme = "https" if tls.certfile else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def echo_app(ca_pem: bytes) -> Any:
    """Answers with the principal of the connection's client certificate (or the refusal)."""

    def describe(scope: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        tls = (scope.get("extensions") or {}).get("tls")
        try:
            p = principal_from_asgi_scope(scope, ca_pem)
        except Unauthenticated as exc:
            return 401, {"reason": exc.context["reason"], "tls": tls is not None}
        return 200, {"principal": p.model_dump(mode="json") if p else None,
                     "tls": tls is not None,
                     "tls_version": (tls or {}).get("tls_version")}  # fmt: skip

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status, body = describe(scope)
        if scope["type"] == "http":
            data = json.dumps(body).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": data})
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(body)})
            await send({"type": "websocket.close", "code": 1000})

    return app


@pytest.fixture(scope="module")
def echo_url(pki: Pki) -> Iterator[str]:
    with serving(echo_app(pki.ca.ca_pem), pki.server) as url:
        yield url


def get(pki: Pki, url: str, who: str | None) -> httpx.Response:
    with httpx.Client(verify=client_context(pki, who), timeout=10) as c:
        return c.get(url + "/whoami")


def test_service_and_edge_certificates_become_principals(pki: Pki, echo_url: str) -> None:
    r = get(pki, echo_url, "reader")
    assert r.status_code == 200, r.text
    p = r.json()["principal"]
    assert (p["kind"], p["name"]) == ("cert", "reader")
    assert p["id"].startswith("cert:") and p["grants"] == [
        {"role": "viewer", "collection": None, "source": None}
    ]
    assert r.json()["tls_version"] in (0x0303, 0x0304)
    fin = get(pki, echo_url, "fin-op").json()["principal"]
    assert fin["grants"] == [{"role": "operator", "collection": "fin", "source": None}]
    edge = get(pki, echo_url, "plant-7").json()["principal"]
    assert (edge["kind"], edge["name"], edge["grants"]) == ("edge", "plant-7", [])


def test_no_certificate_is_anonymous_not_refused(pki: Pki, echo_url: str) -> None:
    r = get(pki, echo_url, None)
    assert r.status_code == 200 and r.json() == {"principal": None, "tls": True,
                                                 "tls_version": r.json()["tls_version"]}  # fmt: skip


def test_expired_certificate_reaches_the_app_and_gets_a_reason(pki: Pki, echo_url: str) -> None:
    r = get(pki, echo_url, "expired")
    assert r.status_code == 401 and r.json()["reason"] == "cert_expired"


def test_certificate_of_another_ca_fails_the_handshake(pki: Pki, echo_url: str) -> None:
    with pytest.raises(httpx.HTTPError):
        get(pki, echo_url, "forged")
    assert get(pki, echo_url, "reader").status_code == 200  # the server is unharmed


def test_a_server_certificate_is_no_client_credential(pki: Pki, echo_url: str) -> None:
    try:
        r = get(pki, echo_url, "server-as-client")
    except httpx.HTTPError:
        return  # refused in the handshake (unsupported certificate purpose)
    assert r.status_code == 401 and r.json()["reason"] == "cert_untrusted"


def test_websocket_over_tls_carries_the_certificate(pki: Pki, echo_url: str) -> None:
    uri = echo_url.replace("https://", "wss://") + "/ws"
    with ws_connect(uri, ssl=client_context(pki, "fin-op"), open_timeout=10) as ws:
        body = json.loads(ws.recv(timeout=10))
    assert body["principal"]["name"] == "fin-op"
    with ws_connect(uri, ssl=client_context(pki, "expired"), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["reason"] == "cert_expired"


def test_plain_http_has_no_tls_extension(pki: Pki) -> None:
    with serving(echo_app(pki.ca.ca_pem), TlsSettings()) as url:
        r = httpx.get(url + "/whoami", timeout=10)
    assert r.json()["principal"] is None and r.json()["tls"] is False


def test_bad_tls_settings_are_clear_errors(pki: Pki, tmp_path: Path) -> None:
    app = echo_app(pki.ca.ca_pem)
    with pytest.raises(ConfigError, match="certfile: required"):
        server_config(app, host="127.0.0.1", port=0,
                      tls=TlsSettings(client_ca_file=pki.ca.ca_cert_path))  # fmt: skip
    with pytest.raises(ConfigError, match="does not exist"):
        server_config(app, host="127.0.0.1", port=0,
                      tls=TlsSettings(certfile=tmp_path / "nope.pem"))  # fmt: skip
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load"):
        server_config(app, host="127.0.0.1", port=0, tls=TlsSettings(certfile=junk))


def test_the_real_api_authenticates_by_client_certificate(pki: Pki, tmp_path: Path) -> None:
    """The product app (auth on) under the same runner ``serve.local`` uses."""
    from datawave.datasource.serve.app import create_app
    from datawave.datasource.serve.local import LocalBackend

    settings = load_settings(data_dir=tmp_path / "dw", owners={"shards": 1},
                             auth={"tls": pki.server.model_dump()})  # fmt: skip
    app = create_app(LocalBackend(settings), api=settings.api, auth=settings.auth,
                     owns_backend=True)  # fmt: skip
    with serving(app, settings.auth.tls, lifespan="on") as url:
        with httpx.Client(verify=client_context(pki, "reader"), timeout=30) as c:
            assert c.get(url + "/v1/sources").status_code == 200
        with httpx.Client(verify=client_context(pki, None), timeout=30) as c:
            assert c.get(url + "/healthz").status_code == 200
            anon = c.get(url + "/v1/sources")
            assert anon.status_code == 401
        with httpx.Client(verify=client_context(pki, "expired"), timeout=30) as c:
            r = c.get(url + "/v1/sources")
            assert r.status_code == 401 and "cert_expired" in r.text
        with httpx.Client(verify=client_context(pki, "plant-7"), timeout=30) as c:
            r = c.get(url + "/v1/apikeys")  # an edge without grants is authenticated, not allowed
            assert r.status_code == 403
