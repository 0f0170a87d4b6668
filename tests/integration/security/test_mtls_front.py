"""The mTLS front (serve/front.py) with real TLS handshakes.

First against a small local upstream (no Ray): what the front forwards, that streams flow as
they are produced, and that WebSockets keep their subprotocol and close codes. Then in front of
the real API on the session's Ray core, deployed by ``deploy_api`` with the front's key, the
front started as ``datawave up`` starts it (its own process, ``python -m ...serve.front``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from datawave.datasource.config import DatawaveSettings, TlsSettings
from datawave.datasource.security import Grant
from datawave.datasource.security.certs import CertificateAuthority
from datawave.datasource.serve.front import (
    ForwardedCertificate,
    Front,
    encode_chain,
    sign,
    start_front,
    stop_front,
    with_front_key,
)
from datawave.datasource.serve.tls import server_config
from tests.fixtures.api import deploy_ready, undeploy
from tests.fixtures.pki import expired_client_cert

KEY = bytes(range(32))


# -- certificates ----------------------------------------------------------------------------
@dataclass
class Pki:
    ca: CertificateAuthority
    server: TlsSettings
    certs: dict[str, tuple[Path, Path]]

    def context(self, who: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.ca_cert_path))
        if who is not None:
            cert, key = self.certs[who]
            ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def der(self, who: str) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.certs[who][0].read_text())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("front-pki")
    ca = CertificateAuthority.init(root / "ca")
    out = root / "certs"
    server = ca.issue("server", "front", out_dir=out, hosts=["127.0.0.1"])
    reader = ca.issue("service", "reader", out_dir=out, grants=[Grant(role="viewer")])
    certs = {
        "reader": (reader.cert_path, reader.key_path),
        "expired": expired_client_cert(root / "ca", out, role="viewer"),
    }
    other = CertificateAuthority.init(root / "other", name="datawave CA")
    o = other.issue("service", "intruder", out_dir=root / "other-out", grants=[Grant(role="admin")])
    certs["other-ca"] = (o.cert_path, o.key_path)
    tls = TlsSettings(certfile=server.cert_path, keyfile=server.key_path,
                      client_ca_file=ca.ca_cert_path)  # fmt: skip
    return Pki(ca, tls, certs)


@contextlib.contextmanager
def serving(app: Any, tls: TlsSettings) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread, as ``serve.tls.server_config`` builds it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(app, host="127.0.0.1", port=port, tls=tls, lifespan="on",
                           log_level="warning", proxy_headers=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    waiter = threading.Event()
    while not server.started and thread.is_alive():
        waiter.wait(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"{'https' if tls.certfile else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# -- a local upstream ------------------------------------------------------------------------
class Upstream:
    """What the front talks to: echoes requests, holds a stream open until released, and
    records WebSocket close codes. Wrapped in :class:`ForwardedCertificate`, like the API."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closes: list[int] = []
        self.app = ForwardedCertificate(Starlette(routes=[
            Route("/echo/{rest:path}", self.echo, methods=["GET", "POST"]),
            Route("/stream", self.stream), Route("/upload", self.upload, methods=["POST"]),
            WebSocketRoute("/ws", self.ws), WebSocketRoute("/ws-deny", self.ws_deny),
        ]), key=KEY)  # fmt: skip

    @staticmethod
    def _chain(scope: Any) -> list[str] | None:
        return ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain")

    async def echo(self, request: Request) -> JSONResponse:
        return JSONResponse({"method": request.method, "path": request.scope["path"],
                             "query": request.scope["query_string"].decode(),
                             "headers": [[k, v] for k, v in request.headers.items()],
                             "chain": self._chain(request.scope)})  # fmt: skip

    async def stream(self, request: Request) -> StreamingResponse:
        async def lines() -> Any:
            yield b'{"n": 1}\n'
            released = await asyncio.to_thread(self.release.wait, 120)
            yield b'{"n": 2}\n' if released else b'{"n": "never released"}\n'

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def upload(self, request: Request) -> JSONResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})

    async def ws(self, websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="bearer" if "bearer" in offered else None)
        await websocket.send_json({"chain": self._chain(websocket.scope), "offered": offered,
                                   "authorization": websocket.headers.get("authorization")})  # fmt: skip
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                self.closes.append(int(msg.get("code", 1000)))
                return
            if msg.get("bytes") is not None:
                await websocket.send_bytes(msg["bytes"][::-1])
                continue
            text = str(msg.get("text"))
            if text.startswith("close:"):
                await websocket.close(code=int(text[6:]), reason="bye")
                return
            await websocket.send_text(text.upper())

    async def ws_deny(self, websocket: WebSocket) -> None:
        await websocket.close(code=1008)  # before accept: the handshake gets an HTTP 403


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Upstream, str]]:
    up = Upstream()
    with serving(up.app, TlsSettings()) as url:
        yield up, url


@pytest.fixture(scope="module")
def front_url(pki: Pki, upstream: tuple[Upstream, str]) -> Iterator[str]:
    with serving(Front(upstream[1], KEY), pki.server) as url:
        yield url


def test_front_forwards_the_verified_certificate_and_drops_spoofed_headers(
    pki: Pki, front_url: str
) -> None:
    spoof = {"X-Datawave-Client-Cert": encode_chain([pki.certs["other-ca"][0].read_text()]),
             "X-Datawave-Front-Sig": "00" * 32, "X-Forwarded-For": "10.6.6.6",
             "Authorization": "Bearer dwk_passthrough"}  # fmt: skip
    with httpx.Client(verify=pki.context("reader"), timeout=30) as c:
        r = c.post(front_url + "/echo/a%20b/c?x=1&y=%2F", headers=spoof, content=b"{}")
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["method"], got["path"], got["query"]) == ("POST", "/echo/a b/c", "x=1&y=%2F")
    assert [ssl.PEM_cert_to_DER_cert(p) for p in got["chain"]] == [pki.der("reader")]
    headers = dict((k, v) for k, v in got["headers"])
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "https"
    assert headers["authorization"] == "Bearer dwk_passthrough"
    assert not [k for k in headers if k.startswith("x-datawave-")]
    # no client certificate: the spoofed header is dropped, nothing is forwarded in its place
    with httpx.Client(verify=pki.context(None), timeout=30) as c:
        r = c.get(front_url + "/echo/x", headers=spoof)
    assert r.status_code == 200 and r.json()["chain"] is None


def test_a_response_streams_through_as_it_is_produced(
    pki: Pki, front_url: str, upstream: tuple[Upstream, str]
) -> None:
    up = upstream[0]
    up.release.clear()
    # A buffering front would hold the first line until the upstream finishes, which it does
    # only after it is released, which happens only after the first line arrived.
    timeout = httpx.Timeout(30, read=60)
    with (
        httpx.Client(verify=pki.context("reader"), timeout=timeout) as c,
        c.stream("GET", front_url + "/stream") as r,
    ):
        lines = r.iter_lines()
        assert json.loads(next(lines)) == {"n": 1}
        up.release.set()
        assert json.loads(next(lines)) == {"n": 2}


def test_a_request_body_streams_to_the_upstream(pki: Pki, front_url: str) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 17)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(blob), 65536):
            yield blob[i : i + 65536]

    with httpx.Client(verify=pki.context("reader"), timeout=60) as c:
        chunked = c.post(front_url + "/upload", content=chunks())
        sized = c.post(front_url + "/upload", content=blob)
    want = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    assert chunked.json() == want and sized.json() == want


async def test_websockets_keep_certificate_subprotocol_and_close_codes(
    pki: Pki, front_url: str, upstream: tuple[Upstream, str]
) -> None:
    up = upstream[0]
    uri = front_url.replace("https://", "wss://") + "/ws"
    async with websockets.connect(uri, ssl=pki.context("reader"), open_timeout=30,
                                  subprotocols=["bearer", "dwk_tok"],  # type: ignore[list-item]
                                  additional_headers={"Authorization": "Bearer x"}) as ws:  # fmt: skip
        assert ws.subprotocol == "bearer"
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert [ssl.PEM_cert_to_DER_cert(p) for p in hello["chain"]] == [pki.der("reader")]
        assert hello["offered"] == ["bearer", "dwk_tok"] and hello["authorization"] == "Bearer x"
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 30) == "HELLO"
        await ws.send(b"\x00bytes")
        assert await asyncio.wait_for(ws.recv(), 30) == b"setyb\x00"
        await ws.send("close:4001")
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 30)
    assert (ws.close_code, ws.close_reason) == (4001, "bye")
    # the client's close code reaches the upstream
    async with websockets.connect(uri, ssl=pki.context("reader"), open_timeout=30) as ws:
        await asyncio.wait_for(ws.recv(), 30)
        await ws.close(code=4002, reason="done here")
    for _ in range(300):
        if up.closes:
            break
        await asyncio.sleep(0.1)
    assert up.closes[-1] == 4002
    # a handshake the upstream refuses is refused with its status
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(uri + "-deny", ssl=pki.context("reader"), open_timeout=30):
            pass
    assert info.value.response.status_code == 403


async def test_an_unreachable_upstream_is_a_502_without_a_trace(pki: Pki) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with serving(Front(f"http://127.0.0.1:{dead}", KEY), pki.server) as url:
        async with httpx.AsyncClient(verify=pki.context("reader"), timeout=30) as c:
            r = await c.get(url + "/v1/sources")
        assert r.status_code == 502 and r.json()["code"] == "bad_gateway"
        assert "Traceback" not in r.text
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(url.replace("https", "wss") + "/v1/events",
                                          ssl=pki.context("reader"), open_timeout=30):  # fmt: skip
                pass
        assert info.value.response.status_code == 502


# -- in front of the real API on Ray Serve ---------------------------------------------------
@dataclass
class FrontedApi:
    api_url: str  # the Serve proxy, direct
    front_url: str
    key: bytes
    settings: DatawaveSettings
    log_file: Path


@pytest.fixture(scope="module")
def fronted(
    core: dict[str, object],
    core_settings: DatawaveSettings,
    api_keys: dict[str, str],
    pki: Pki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FrontedApi]:
    from ray import serve

    tmp = tmp_path_factory.mktemp("front")
    tls = pki.server.model_copy(update={"front_key_file": tmp / "front.key", "front_port": 0})
    settings = with_front_key(
        core_settings.model_copy(
            update={"auth": core_settings.auth.model_copy(update={"tls": tls})}
        )
    )
    serve.shutdown()  # a Serve left by another package keeps its own port: start clean
    api_url = deploy_ready(settings)
    state = start_front(settings, upstream=api_url, log_file=tmp / "front.log")
    try:
        yield FrontedApi(api_url, state["front_url"], (tmp / "front.key").read_bytes(), settings,
                         tmp / "front.log")  # fmt: skip
    finally:
        assert stop_front(state)
        with pytest.raises(ProcessLookupError):
            os.killpg(state["front_pid"], 0)
        undeploy(settings)
        serve.shutdown()


def _admin(fronted: FrontedApi, api_keys: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=fronted.api_url, timeout=60,
                        headers={"Authorization": f"Bearer {api_keys['admin']}"})  # fmt: skip


def _through(fronted: FrontedApi, pki: Pki, who: str | None, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=fronted.front_url, verify=pki.context(who), timeout=60, **kw)


def _new_sqlite(tmp: Path) -> Path:
    import sqlite3

    path = tmp / f"{uuid.uuid4().hex[:8]}.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
    return path


@pytest.mark.ray
def test_a_viewer_certificate_reads_and_may_not_write(fronted: FrontedApi, pki: Pki) -> None:
    with _through(fronted, pki, "reader") as c:
        assert c.get("/healthz").status_code == 200
        listed = c.get("/v1/sources")
        assert listed.status_code == 200, listed.text
        me = c.get("/v1/whoami").json()
        assert (me["kind"], me["name"]) == ("cert", "reader")
        assert me["grants"][0]["role"] == "viewer"
        made = c.post("/v1/sources", json={"name": f"front-{uuid.uuid4().hex[:6]}",
                                           "type": "sqlite", "config": {"path": "/x.sqlite"}})  # fmt: skip
        assert made.status_code == 403 and made.json()["code"] == "forbidden"


@pytest.mark.ray
def test_no_certificate_no_token_is_401_and_a_token_still_works(
    fronted: FrontedApi, pki: Pki, api_keys: dict[str, str]
) -> None:
    with _through(fronted, pki, None) as c:
        r = c.get("/v1/sources")
        assert r.status_code == 401 and r.json()["reason"] == "missing"
        assert r.headers["www-authenticate"].startswith("Bearer")
        ok = c.get("/v1/whoami", headers={"Authorization": f"Bearer {api_keys['viewer']}"})
        assert ok.status_code == 200 and ok.json()["kind"] == "apikey"


@pytest.mark.ray
async def test_an_expired_certificate_is_401_cert_expired_and_audited(
    fronted: FrontedApi, pki: Pki, api_keys: dict[str, str]
) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    with _through(fronted, pki, "expired") as c:
        r = c.get("/v1/sources")
    assert r.status_code == 401 and r.json()["reason"] == "cert_expired", r.text
    assert "Traceback" not in r.text
    uri = fronted.front_url.replace("https://", "wss://") + "/v1/events"
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(uri, ssl=pki.context("expired"), open_timeout=30):
            pass
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body or b"{}")["reason"] == "cert_expired"
    with _admin(fronted, api_keys) as admin:
        page = admin.get("/v1/audit", params={"action": "auth.failure", "limit": 1000,
                                              "since": since.isoformat()}).json()  # fmt: skip
    assert {e["detail"]["reason"] for e in page["items"]} >= {"cert_expired"}


@pytest.mark.ray
def test_a_certificate_of_another_ca_fails_the_handshake(fronted: FrontedApi, pki: Pki) -> None:
    with pytest.raises(httpx.HTTPError), _through(fronted, pki, "other-ca") as c:
        c.get("/v1/sources")
    with _through(fronted, pki, "reader") as c:  # the front is unharmed
        assert c.get("/v1/sources").status_code == 200


@pytest.mark.ray
def test_forged_certificate_headers_direct_to_serve_are_401(
    fronted: FrontedApi, pki: Pki, api_keys: dict[str, str]
) -> None:
    """Certificates are public: anyone could copy the viewer's into the header. Only the
    front's signature makes the API believe it."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    cert = encode_chain([pki.certs["reader"][0].read_text()])

    def signed(path: str, *, key: bytes = fronted.key, ts: int | None = None,
               method: str = "GET") -> dict[str, str]:  # fmt: skip
        t = str(int(time.time()) if ts is None else ts)
        return {"X-Datawave-Client-Cert": cert, "X-Datawave-Front-Ts": t,
                "X-Datawave-Front-Sig": sign(key, method=method, target=path, ts=t, cert=cert)}  # fmt: skip

    now = int(time.time())
    forgeries = {
        "no signature": ({"X-Datawave-Client-Cert": cert}, "front_signature"),
        "garbage signature": ({"X-Datawave-Client-Cert": cert, "X-Datawave-Front-Ts": str(now),
                               "X-Datawave-Front-Sig": "ab" * 32}, "front_signature"),
        "another key": (signed("/v1/whoami", key=os.urandom(32)), "front_signature"),
        "signed for another path": (signed("/v1/healthz"), "front_signature"),
        "signed for another method": (signed("/v1/whoami", method="POST"), "front_signature"),
        "replayed after two minutes": (signed("/v1/whoami", ts=now - 120), "front_stale"),
    }  # fmt: skip
    with httpx.Client(base_url=fronted.api_url, timeout=60) as direct:
        for name, (headers, reason) in forgeries.items():
            r = direct.get("/v1/whoami", headers=headers)
            assert r.status_code == 401, (name, r.status_code, r.text[:200])
            assert r.json()["reason"] == reason, (name, r.json())
            assert cert not in r.text
        # a valid token does not make a forged certificate header acceptable
        r = direct.get("/v1/whoami", headers={"X-Datawave-Client-Cert": cert,
                                              "Authorization": f"Bearer {api_keys['admin']}"})  # fmt: skip
        assert r.status_code == 401 and r.json()["reason"] == "front_signature"
        # control: what the front sends is accepted, so the refusals above are the signature's
        me = direct.get("/v1/whoami", headers=signed("/v1/whoami"))
        assert me.status_code == 200 and me.json()["name"] == "reader", me.text
    with _admin(fronted, api_keys) as admin:
        page = admin.get("/v1/audit", params={"action": "auth.failure", "limit": 1000,
                                              "since": since.isoformat()}).json()  # fmt: skip
    reasons = [e["detail"]["reason"] for e in page["items"]]
    assert reasons.count("front_signature") >= 6 and "front_stale" in reasons
    assert cert not in json.dumps(page)


@pytest.mark.ray
def test_server_sent_events_flow_through_the_front_while_the_job_runs(
    fronted: FrontedApi, pki: Pki, api_keys: dict[str, str], black_hole: tuple[str, int]
) -> None:
    """A discovery of a host that never answers runs until it is cancelled: a front that
    buffered the stream could not deliver its first event before the cancel."""
    host, port = black_hole
    with _admin(fronted, api_keys) as admin:
        src = admin.post("/v1/sources", json={
            "name": f"front-hole-{uuid.uuid4().hex[:6]}", "type": "postgresql",
            "config": {"host": host, "port": port, "user": "postgres", "auth": "none",
                       "database": "test", "connect_timeout_s": 600}})  # fmt: skip
        assert src.status_code == 201, src.text
        job = admin.post(f"/v1/sources/{src.json()['id']}/discover")
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        events: list[tuple[str, dict[str, Any]]] = []
        with (
            _through(fronted, pki, "reader") as c,
            c.stream("GET", f"/v1/jobs/{job_id}/events") as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            name = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if len(events) == 1:
                        status = admin.get(f"/v1/jobs/{job_id}").json()["status"]
                        assert status in ("pending", "running"), status
                        cancel = admin.post(f"/v1/jobs/{job_id}/cancel")
                        assert cancel.status_code == 200, cancel.text
    assert events[0][0] == "progress"
    assert events[-1][0] == "done" and events[-1][1]["status"] == "cancelled"


@pytest.mark.ray
async def test_a_websocket_through_the_front_receives_events(
    fronted: FrontedApi, pki: Pki, api_keys: dict[str, str], tmp_path: Path
) -> None:
    uri = fronted.front_url.replace("https://", "wss://") + "/v1/events?type=discovery"
    with _admin(fronted, api_keys) as admin:
        src = admin.post("/v1/sources", json={"name": f"front-ws-{uuid.uuid4().hex[:6]}",
                                              "type": "sqlite",
                                              "config": {"path": str(_new_sqlite(tmp_path))}})  # fmt: skip
        assert src.status_code == 201, src.text
        source_id = src.json()["id"]
        async with websockets.connect(uri, ssl=pki.context("reader"), open_timeout=30) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert first["type"] == "subscribed"
            assert admin.post(f"/v1/sources/{source_id}/discover").status_code == 202
            seen: list[dict[str, Any]] = []
            while not any(e["type"] == "discovery.finished" and e["source_id"] == source_id
                          for e in seen):  # fmt: skip
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
    assert {e["type"] for e in seen if e["source_id"] == source_id} >= {"discovery.finished"}
    # a browser's token in the query string works through the front and stays out of its log
    token = api_keys["viewer"]
    async with websockets.connect(f"{uri}&access_token={token}", ssl=pki.context(None),
                                  open_timeout=30) as ws:  # fmt: skip
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "subscribed"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{uri}&access_token={token}x", ssl=pki.context(None),
                                      open_timeout=30):  # fmt: skip
            pass
    log_text = fronted.log_file.read_text()
    assert "mTLS front on" in log_text and token not in log_text
