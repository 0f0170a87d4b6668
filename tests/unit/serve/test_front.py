"""The mTLS front's signature and the API middleware that checks it, without a network: the
middleware is called as an ASGI app, and the product app runs over the in-process backend."""

from __future__ import annotations

import base64
import json
import ssl
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from datawave.datasource.config import load_settings
from datawave.datasource.errors import ConfigError, Unauthenticated
from datawave.datasource.security import Grant
from datawave.datasource.security.certs import CertificateAuthority
from datawave.datasource.serve.front import (
    CERT_HEADER,
    SIG_HEADER,
    TS_HEADER,
    ForwardedCertificate,
    Front,
    check_signature,
    decode_chain,
    encode_chain,
    ensure_front_key,
    load_front_key,
    sign,
    with_front_key,
)

KEY = b"k" * 32
NOW = 1_800_000_000.0
CERT = base64.b64encode(b"\x30\x82leaf").decode() + "," + base64.b64encode(b"\x30\x82ca").decode()


def _good() -> dict[str, Any]:
    return {"method": "GET", "target": "/v1/sources?limit=5", "ts": str(int(NOW)), "cert": CERT}


def _check(sig: str, **fields: Any) -> None:
    check_signature(KEY, **{**_good(), **fields}, sig=sig, now=NOW)


def _reason(sig: str | None, **fields: Any) -> str:
    with pytest.raises(Unauthenticated) as info:
        check_signature(KEY, **{**_good(), **fields}, sig=sig, now=NOW)
    return str(info.value.context["reason"])


def test_the_signature_binds_method_path_query_time_and_certificate() -> None:
    sig = sign(KEY, **_good())
    _check(sig)  # accepted as signed
    _check(sig.upper())  # hex case does not matter
    for tampered in ({"method": "POST"}, {"method": "WEBSOCKET"}, {"target": "/v1/apikeys"},
                     {"target": "/v1/sources?limit=500"}, {"target": "/v1/sources"},
                     {"ts": str(int(NOW) - 1)}, {"cert": CERT.split(",")[0]}, {"cert": ""},
                     {"cert": CERT[:-2] + "AA"}):  # fmt: skip
        assert _reason(sig, **tampered) == "front_signature", tampered
    assert _reason(sign(b"x" * 32, **_good())) == "front_signature"  # another front's key
    assert _reason(None) == "front_signature"
    assert _reason("") == "front_signature"
    assert _reason(sig[:-1]) == "front_signature"
    assert _reason(sig, ts=None) == "front_signature"
    assert _reason(sign(KEY, **{**_good(), "ts": "-5"}), ts="-5") == "front_signature"
    assert _reason(sign(KEY, **{**_good(), "ts": "1e9"}), ts="1e9") == "front_signature"


def test_a_correct_signature_expires_after_a_minute_either_way() -> None:
    for skew in (-61, 61, -3600):
        ts = str(int(NOW) + skew)
        assert _reason(sign(KEY, **{**_good(), "ts": ts}), ts=ts) == "front_stale"
    for skew in (-60, 0, 60):
        ts = str(int(NOW) + skew)
        _check(sign(KEY, **{**_good(), "ts": ts}), ts=ts)


def test_chain_encoding_round_trips_and_rejects_garbage(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    issued = ca.issue("service", "svc", out_dir=tmp_path / "out")
    pem = issued.cert_path.read_text()
    value = encode_chain([pem, ca.ca_pem.decode()])
    assert "\n" not in value and value.count(",") == 1
    back = decode_chain(value)
    assert [ssl.PEM_cert_to_DER_cert(p) for p in back] == [
        ssl.PEM_cert_to_DER_cert(pem), ssl.PEM_cert_to_DER_cert(ca.ca_pem.decode())]  # fmt: skip
    assert decode_chain("") == []
    for bad in ("not base64!", "QUJD,,QUJD", ",".join(["QUJD"] * 5), "A" * 40_000):
        with pytest.raises(Unauthenticated) as info:
            decode_chain(bad)
        assert info.value.context["reason"] == "cert_malformed"


def test_the_front_key_is_made_once_private_and_never_defaulted(tmp_path: Path) -> None:
    path = tmp_path / "dw" / "front.key"
    key = ensure_front_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_front_key(path) == key == load_front_key(path)
    with pytest.raises(ConfigError, match="front_key_file: cannot read"):
        load_front_key(tmp_path / "missing.key")
    short = tmp_path / "short.key"
    short.write_bytes(b"tiny")
    with pytest.raises(ConfigError, match="needs >= 32"):
        load_front_key(short)


def test_with_front_key_applies_only_when_the_api_has_mtls(tmp_path: Path) -> None:
    plain = load_settings(data_dir=tmp_path / "dw")
    assert with_front_key(plain) is plain
    tls = {"certfile": tmp_path / "s.pem", "keyfile": tmp_path / "s.key",
           "client_ca_file": tmp_path / "ca.pem"}  # fmt: skip
    s = with_front_key(load_settings(data_dir=tmp_path / "dw", auth={"tls": tls}))
    assert s.auth.tls.front_key_file == tmp_path / "dw" / "front.key"
    assert len(s.auth.tls.front_key_file.read_bytes()) == 32


# -- the middleware as an ASGI app -----------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: Any, scope: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    status = int(sent[0]["status"])
    return status, json.loads(body) if status != 200 else None


def _scope(path: str = "/v1/sources", query: bytes = b"", method: str = "GET",
           headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"type": "http", "method": method, "path": path, "query_string": query,
            "headers": [(b"host", b"api"), *(headers or [])], "client": ("127.0.0.1", 5)}  # fmt: skip


def _signed(cert: str, *, method: str = "GET", target: str = "/v1/sources",
            ts: float = NOW, key: bytes = KEY) -> list[tuple[bytes, bytes]]:  # fmt: skip
    t = str(int(ts))
    sig = sign(key, method=method, target=target, ts=t, cert=cert)
    out = [(TS_HEADER, t.encode()), (SIG_HEADER, sig.encode())]
    return ([(CERT_HEADER, cert.encode())] if cert else []) + out


async def test_middleware_moves_a_signed_chain_into_the_tls_extension(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    pem = ca.issue("service", "svc", out_dir=tmp_path / "out").cert_path.read_text()
    cert = encode_chain([pem])
    inner = Recorder()
    failures: list[str] = []

    async def on_failure(scope: Any, exc: Unauthenticated) -> None:
        failures.append(str(exc.context["reason"]))

    mw = ForwardedCertificate(inner, key=KEY, on_failure=on_failure, clock=lambda: NOW)
    status, _ = await _call(mw, _scope(headers=_signed(cert)))
    assert status == 200
    seen = inner.scopes[-1]
    assert seen["extensions"]["tls"]["client_cert_chain"] == decode_chain(cert)
    assert not any(n.startswith(b"x-datawave-") for n, _ in seen["headers"])
    # signed, without a certificate: passes, with nothing to authenticate by
    status, _ = await _call(mw, _scope(headers=_signed("")))
    assert status == 200 and "tls" not in (inner.scopes[-1].get("extensions") or {})
    # no X-Datawave-* headers at all: untouched
    await _call(mw, _scope())
    assert "extensions" not in inner.scopes[-1]
    assert failures == []


async def test_middleware_refuses_every_unsigned_or_tampered_forward(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    cert = encode_chain([ca.issue("service", "svc", out_dir=tmp_path / "o").cert_path.read_text()])
    inner = Recorder()
    failures: list[str] = []

    async def on_failure(scope: Any, exc: Unauthenticated) -> None:
        failures.append(str(exc.context["reason"]))

    mw = ForwardedCertificate(inner, key=KEY, on_failure=on_failure, clock=lambda: NOW)
    good = _signed(cert)
    cases = {
        "cert only": ([(CERT_HEADER, cert.encode())], _scope(), "front_signature"),
        "wrong key": (_signed(cert, key=b"z" * 32), _scope(), "front_signature"),
        "other path": (good, _scope(path="/v1/apikeys"), "front_signature"),
        "added query": (good, _scope(query=b"limit=1"), "front_signature"),
        "other method": (good, _scope(method="POST"), "front_signature"),
        "other cert": ([(CERT_HEADER, b"QUJD"), *good[1:]], _scope(), "front_signature"),
        "cert dropped": (good[1:], _scope(), "front_signature"),
        "stale": (_signed(cert, ts=NOW - 120), _scope(), "front_stale"),
        "two sigs": ([*good, good[-1]], _scope(), "front_signature"),
        "unknown header": (
            [*good, (b"x-datawave-principal", b"admin")], _scope(), "front_signature"),
    }  # fmt: skip
    for name, (headers, scope, reason) in cases.items():
        scope["headers"] += headers
        status, problem = await _call(mw, scope)
        assert status == 401, name
        assert problem is not None and problem["reason"] == reason, (name, problem)
        assert problem["code"] == "unauthenticated" and cert not in json.dumps(problem)
    assert inner.scopes == [] and len(failures) == len(cases)
    # a WebSocket is signed as WEBSOCKET: a signed GET cannot open one
    ws_scope = {**_scope(headers=good), "type": "websocket"}
    ws_scope.pop("method")
    sent: list[dict[str, Any]] = []

    async def ws_receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def ws_send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await mw(ws_scope, ws_receive, ws_send)
    assert inner.scopes == [] and sent[0]["type"] == "websocket.close"
    # public paths lose the headers but still answer
    status, _ = await _call(mw, _scope(path="/healthz", headers=[(CERT_HEADER, cert.encode())]))
    assert status == 200 and not any(n.startswith(b"x-datawave-")
                                     for n, _ in inner.scopes[-1]["headers"])  # fmt: skip


def test_front_headers_drop_client_spoofs_and_sign_what_it_forwards() -> None:
    front = Front("http://127.0.0.1:9", KEY, clock=lambda: NOW)
    scope = _scope(path="/v1/x", query=b"a=1", headers=[
        (b"x-datawave-client-cert", b"forged"), (b"x-datawave-front-sig", b"00"),
        (b"x-forwarded-for", b"10.9.9.9"), (b"connection", b"keep-alive, x-hop"),
        (b"x-hop", b"1"), (b"authorization", b"Bearer dwk_x"), (b"transfer-encoding", b"chunked"),
    ])  # fmt: skip
    out = front.forward_headers(scope)
    names = [n for n, _ in out]
    assert b"x-hop" not in names and b"connection" not in names and b"host" not in names
    assert b"transfer-encoding" not in names and (b"authorization", b"Bearer dwk_x") in out
    assert dict(out)[b"x-forwarded-for"] == b"127.0.0.1" and names.count(b"x-forwarded-for") == 1
    assert CERT_HEADER not in names  # no peer certificate: nothing to forward
    got = dict(out)
    check_signature(KEY, method="GET", target="/v1/x?a=1", ts=got[TS_HEADER].decode(), cert="",
                    sig=got[SIG_HEADER].decode(), now=NOW)  # fmt: skip


# -- the product app over the in-process backend ---------------------------------------------
async def test_the_api_authenticates_a_forwarded_certificate(tmp_path: Path) -> None:
    from datawave.datasource.serve.app import create_app
    from datawave.datasource.serve.local import LocalBackend

    ca = CertificateAuthority.init(tmp_path / "ca")
    viewer = ca.issue("service", "reader", out_dir=tmp_path / "o", grants=[Grant(role="viewer")])
    key_file = tmp_path / "front.key"
    key = ensure_front_key(key_file)
    settings = load_settings(data_dir=tmp_path / "dw", owners={"shards": 1},
                             auth={"tls": {"client_ca_file": ca.ca_cert_path,
                                           "front_key_file": key_file}})  # fmt: skip
    app = create_app(LocalBackend(settings), api=settings.api, auth=settings.auth,
                     owns_backend=True)  # fmt: skip
    cert = encode_chain([viewer.cert_path.read_text()])

    def forwarded(method: str, target: str, *, k: bytes = key) -> dict[str, str]:
        signed = _signed(cert, method=method, target=target, key=k, ts=time.time())
        return {name.decode(): value.decode() for name, value in signed}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            me = await c.get("/v1/whoami", headers=forwarded("GET", "/v1/whoami"))
            assert me.status_code == 200, me.text
            assert (me.json()["kind"], me.json()["name"]) == ("cert", "reader")
            body = {"name": "x", "type": "sqlite", "config": {"path": str(tmp_path / "x.db")}}
            made = await c.post("/v1/sources", json=body, headers=forwarded("POST", "/v1/sources"))
            assert made.status_code == 403
            forged = await c.get("/v1/whoami", headers={"X-Datawave-Client-Cert": cert})
            assert forged.status_code == 401 and forged.json()["reason"] == "front_signature"
            other = await c.get("/v1/whoami", headers=forwarded("GET", "/v1/whoami", k=KEY))
            assert other.status_code == 401 and other.json()["reason"] == "front_signature"
        audit = app.state.ctx.auth_store.query_audit(action="auth.failure", limit=10)
        assert [e.detail["reason"] for e in audit] == ["front_signature", "front_signature"]
