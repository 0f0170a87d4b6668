"""Authentication and access on every protocol, through the real Serve proxy and replicas.

Protocols: REST (``GET /v1/sources``), GraphQL (``POST /graphql``), server-sent job events,
the NDJSON export and the WebSocket event stream. Credentials: API keys (bootstrap admin and
scoped keys from tests/fixtures/core.py) and OIDC JWTs signed by a real local JWKS endpoint
(tests/fixtures/jwks.py) the deployment is configured with.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from sqlalchemy import update

from datawave.datasource.security import Grant
from datawave.datasource.store import MetadataStore
from datawave.datasource.store.tables import api_keys as api_keys_table
from tests.fixtures.api import bearer, make_sqlite
from tests.fixtures.jwks import claims_for, rsa_key

from .conftest import MAX_CREDENTIAL_BYTES, discover, unique, wait_job

pytestmark = pytest.mark.ray


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], alg: str = "none", kid: str = "api-rsa-1") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(claims: dict[str, Any], idp_key: Any) -> str:
    """The classic key confusion: HMAC-sign with the RSA *public* key as the shared secret."""
    import hashlib
    import hmac

    pem = idp_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp_key.kid}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


@pytest.fixture(scope="module")
def store(core_settings):  # type: ignore[no-untyped-def]
    s = MetadataStore.open(core_settings.resolved_store_url, migrate=False)
    yield s
    s.close()


@pytest.fixture(scope="module")
def dead_keys(store) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A revoked and an expired API key (the expiry moved into the past behind the API)."""
    revoked, rtok = store.create_api_key(name="revoked", grants=[Grant(role="admin")],
                                         created_by="test")  # fmt: skip
    store.revoke_api_key(revoked.id)
    expired, etok = store.create_api_key(name="expired", grants=[Grant(role="admin")],
                                         created_by="test",
                                         expires_at=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(update(api_keys_table).where(api_keys_table.c.id == expired.id)
                     .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))  # fmt: skip
    return {"revoked": rtok, "expired": etok}


@pytest.fixture(scope="module")
def probe(http, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Two discovered sources: ``auth-probe`` in collection ``other`` and one in ``fin``."""
    tmp = tmp_path_factory.mktemp("auth")
    out: dict[str, Any] = {}
    for key, name, coll in (("other", "auth-probe", "other"), ("fin", unique("fin"), "fin/emea")):
        r = http.post("/v1/sources", json={"name": name, "type": "sqlite", "collection": coll,
                                           "config": {"path": str(make_sqlite(tmp / f"{key}.sqlite"))}})  # fmt: skip
        if r.status_code == 409:  # module re-run against the same session core
            r = http.get(f"/v1/sources/{name}")
        assert r.status_code in (200, 201), r.text
        out[key] = r.json()
        out[f"{key}_job"] = discover(http, out[key]["id"])["id"]
    return out


def bad_credentials(idp_key, jwks, dead_keys) -> dict[str, tuple[dict[str, str], str]]:  # type: ignore[no-untyped-def]
    """name -> (headers, the reason the API must give)."""
    now = int(time.time())
    stranger = rsa_key("not-published")
    return {
        "missing": ({}, "missing"),
        "garbage": ({"Authorization": "Bearer !!not a token!!"}, "malformed"),
        "basic": ({"Authorization": "Basic YWRtaW46YWRtaW4="}, "malformed"),
        "oversized": (bearer("a" * (MAX_CREDENTIAL_BYTES + 500)), "too_large"),
        "unknown key": (bearer("dwk_AAAAAAAAAAAA_" + "A" * 43), "unknown_key"),
        "revoked key": (bearer(dead_keys["revoked"]), "revoked"),
        "expired key": (bearer(dead_keys["expired"]), "expired"),
        "jwt expired": (
            bearer(idp_key.sign(claims_for(jwks, exp=now - 60, iat=now - 120, nbf=now - 120))),
            "expired",
        ),
        "jwt wrong audience": (
            bearer(idp_key.sign(claims_for(jwks, aud="someone-else"))),
            "wrong_audience",
        ),
        "jwt alg none": (bearer(_unsigned(claims_for(jwks, roles=["admin"]))), "alg_not_allowed"),
        "jwt key confusion": (
            bearer(_hs256_with_public_key(claims_for(jwks, roles=["admin"]), idp_key)),
            "alg_not_allowed",
        ),
        "jwt unknown kid": (
            bearer(stranger.sign(claims_for(jwks, roles=["admin"]))),
            "unknown_kid",
        ),
    }


def _ws_url(api_url: str, query: str = "") -> str:
    return api_url.replace("http://", "ws://") + "/v1/events" + query


async def _ws_status(api_url: str, headers: dict[str, str], query: str = "") -> tuple[int, Any]:
    """The HTTP status a WebSocket handshake is refused with (101 when accepted)."""
    try:
        async with websockets.connect(_ws_url(api_url, query), open_timeout=30,
                                      additional_headers=headers) as ws:  # fmt: skip
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return 101, first
    except websockets.exceptions.InvalidStatus as exc:
        body = exc.response.body or b""
        return exc.response.status_code, json.loads(body) if body else None


def _http_calls(probe: dict[str, Any]) -> dict[str, tuple[str, str, Any]]:
    return {
        "rest": ("GET", "/v1/sources", None),
        "graphql": ("POST", "/graphql", {"query": "{ sources { items { name } } }"}),
        "sse": ("GET", f"/v1/jobs/{probe['other_job']}/events", None),
        "ndjson": ("GET", f"/v1/sources/{probe['other']['id']}/export", None),
    }


async def test_bad_credentials_are_401_on_every_protocol(
    api_url, anon, store, probe, idp_key, jwks, dead_keys
):
    since = datetime.now(UTC) - timedelta(seconds=5)
    for name, (headers, reason) in bad_credentials(idp_key, jwks, dead_keys).items():
        for proto, (method, path, body) in _http_calls(probe).items():
            r = anon.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (name, proto, r.status_code, r.text[:300])
            problem = r.json()
            assert problem["code"] == "unauthenticated" and problem["reason"] == reason, (
                name,
                proto,
                problem,
            )
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "Traceback" not in r.text
            cred = next(iter(headers.values()), "").split(" ")[-1]
            if len(cred) > 12:
                assert cred not in r.text
        status, problem = await _ws_status(api_url, headers)
        assert status == 401, (name, "websocket", status, problem)
        assert problem is None or problem["reason"] == reason, (name, problem)
    entries = store.query_audit(action="auth.failure", since=since, limit=1000)
    seen = {(e.detail["reason"], e.detail["path"]) for e in entries}
    for _name, (_h, reason) in bad_credentials(idp_key, jwks, dead_keys).items():
        for _m, path, _b in _http_calls(probe).values():
            assert (reason, path) in seen, (reason, path)
        assert (reason, "/v1/events") in seen, reason
    assert all(e.outcome == "denied" and e.principal == "anonymous" for e in entries)
    for token in dead_keys.values():
        assert token not in json.dumps([e.model_dump(mode="json") for e in entries])


async def test_valid_credentials_on_every_protocol(api_url, anon, api_keys, probe, idp_key, jwks):
    jwt_viewer = idp_key.sign(claims_for(jwks, roles=["viewer"], preferred_username="alice"))
    for cred in (bearer(api_keys["viewer"]), {"X-API-Key": api_keys["viewer"]}, bearer(jwt_viewer)):
        for proto, (method, path, body) in _http_calls(probe).items():
            r = anon.request(method, path, json=body, headers=cred)
            assert r.status_code == 200, (proto, r.text[:300])
        status, first = await _ws_status(api_url, cred)
        assert status == 101 and first["type"] == "subscribed"
    me = anon.get("/v1/whoami", headers=bearer(jwt_viewer)).json()
    assert me["kind"] == "jwt" and me["name"] == "alice" and me["grants"][0]["role"] == "viewer"
    # browsers: the token as a subprotocol or a query parameter
    async with websockets.connect(_ws_url(api_url), open_timeout=30,
                                  subprotocols=["bearer", api_keys["viewer"]]) as ws:  # type: ignore[list-item]  # fmt: skip
        assert ws.subprotocol == "bearer"
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "subscribed"
    status, first = await _ws_status(api_url, {}, f"?access_token={api_keys['viewer']}")
    assert status == 101 and first["type"] == "subscribed"


async def test_wrong_role_is_403_on_every_protocol(api_url, anon, store, api_keys, probe):
    since = datetime.now(UTC) - timedelta(seconds=5)
    viewer = bearer(api_keys["viewer"])
    r = anon.post("/v1/sources", json={"name": unique(), "type": "sqlite",
                                       "config": {"path": "/x.sqlite"}}, headers=viewer)  # fmt: skip
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert (
        anon.post(f"/v1/sources/{probe['fin']['id']}/discover", headers=viewer).status_code == 403
    )
    assert (
        anon.post("/v1/apikeys", json={"name": "x", "role": "admin"}, headers=viewer).status_code
        == 403
    )
    auditor = bearer(api_keys["auditor"])  # custom role: audit:read and nothing else
    for proto, (method, path, body) in _http_calls(probe).items():
        r = anon.request(method, path, json=body, headers=auditor)
        assert r.status_code == 403, (proto, r.status_code, r.text[:300])
        assert r.json()["code"] == "forbidden"
    status, problem = await _ws_status(api_url, auditor)
    assert status == 403 and problem["code"] == "forbidden"
    assert anon.get("/v1/audit", headers=auditor).status_code == 200
    denied = store.query_audit(since=since, limit=1000)
    got = {(e.action, e.principal) for e in denied if e.outcome == "denied"}
    assert ("source.create", "apikey:test-viewer") in got
    assert ("discovery.start", "apikey:test-viewer") in got
    assert ("apikey.create", "apikey:test-viewer") in got
    for action in ("get /sources", "graphql.query", "events.subscribe"):
        assert (action, "apikey:test-auditor") in got, (action, got)
    fin_denied = [e for e in denied if e.action == "discovery.start" and e.outcome == "denied"]
    assert fin_denied[-1].source_id == probe["fin"]["id"]


async def test_other_collection_is_not_found_and_not_listed(api_url, anon, http, api_keys, probe):
    fin = bearer(api_keys["fin-viewer"])
    other = probe["other"]
    for path in (f"/v1/sources/{other['id']}", f"/v1/sources/{other['name']}/tables",
                 f"/v1/sources/{other['id']}/export", f"/v1/jobs/{probe['other_job']}",
                 f"/v1/jobs/{probe['other_job']}/events", f"/v1/sources/{other['id']}/drift"):  # fmt: skip
        r = anon.get(path, headers=fin)
        assert r.status_code == 404, (path, r.status_code)
    listed = anon.get("/v1/sources", params={"limit": 1000}, headers=fin).json()["items"]
    assert all(s["collection"].startswith("fin/") for s in listed)
    assert probe["fin"]["id"] in {s["id"] for s in listed}
    hits = anon.get("/v1/search", params={"q": "amount_0", "limit": 1000}, headers=fin).json()
    assert hits and {h["source_id"] for h in hits} <= {s["id"] for s in listed}
    admin_hits = http.get("/v1/search", params={"q": "amount_0", "limit": 1000}).json()
    assert other["id"] in {h["source_id"] for h in admin_hits}
    q = ('query($ref: String!) { sources(first: 1000) { items { id } } '
         'source(ref: $ref) { name } }')  # fmt: skip
    data = anon.post("/graphql", json={"query": q, "variables": {"ref": other["id"]}},
                     headers=fin).json()["data"]  # fmt: skip
    assert data["source"] is None and other["id"] not in {s["id"] for s in data["sources"]["items"]}
    status, _ = await _ws_status(api_url, fin, f"?source={other['id']}")
    assert status == 404
    # a per-source viewer sees its one source
    probe_viewer = bearer(api_keys["probe-viewer"])
    only = anon.get("/v1/sources", headers=probe_viewer).json()["items"]
    assert [s["name"] for s in only] == ["auth-probe"]
    # the event stream drops events of sources outside the subscriber's scope
    async with websockets.connect(_ws_url(api_url, "?type=discovery"), open_timeout=30,
                                  additional_headers=fin) as ws:  # fmt: skip
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "subscribed"
        http.post(f"/v1/sources/{other['id']}/discover")
        http.post(f"/v1/sources/{probe['fin']['id']}/discover")
        seen: list[dict[str, Any]] = []
        while not any(e["type"] == "discovery.finished" and e["source_id"] == probe["fin"]["id"]
                      for e in seen):  # fmt: skip
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    assert {e["source_id"] for e in seen} == {probe["fin"]["id"]}


def test_operator_works_inside_its_collection(anon, api_keys, tmp_path):
    op = bearer(api_keys["fin-operator"])
    db = make_sqlite(tmp_path / "op.sqlite")
    name = unique("fin-op")
    made = anon.post("/v1/sources", json={"name": name, "type": "sqlite", "collection": "fin/ops",
                                          "config": {"path": str(db)}}, headers=op)  # fmt: skip
    assert made.status_code == 201, made.text
    assert anon.post(f"/v1/sources/{name}/test", headers=op).json()["ok"]
    job = anon.post(f"/v1/sources/{name}/discover", headers=op)
    assert job.status_code == 202, job.text
    with httpx.Client(base_url=str(anon.base_url), headers=op, timeout=60) as c:
        assert wait_job(c, job.json()["id"])["status"] == "succeeded"
    outside = anon.post("/v1/sources", json={"name": unique(), "type": "sqlite",
                                             "collection": "hr", "config": {"path": str(db)}},
                        headers=op)  # fmt: skip
    assert outside.status_code == 403
    assert anon.delete(f"/v1/sources/{name}", headers=op).status_code == 204


def test_api_keys_and_audit_routes(anon, http, store, api_keys):
    created = http.post("/v1/apikeys", json={"name": "route-made", "role": "viewer",
                                             "collections": ["fin"]})  # fmt: skip
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    token, key_id = created.json()["token"], created.json()["id"]
    assert anon.get("/v1/sources", headers=bearer(token)).status_code == 200
    listed = http.get("/v1/apikeys").text
    assert key_id in listed and token not in listed
    assert http.delete(f"/v1/apikeys/{key_id}").json()["status"] == "revoked"
    r = anon.get("/v1/sources", headers=bearer(token))
    assert r.status_code == 401 and r.json()["reason"] == "revoked"
    page = http.get("/v1/audit", params={"action": "apikey.*", "limit": 1000}).json()
    actions = {(e["action"], e["target"]) for e in page["items"]}
    assert ("apikey.create", key_id) in actions and ("apikey.revoke", key_id) in actions
    assert token not in json.dumps(page)
    # a scoped auditor would only see entries of its sources; the admin sees the chain verify
    assert store.verify_audit().ok
    first = http.get("/v1/audit", params={"limit": 2}).json()
    second = http.get("/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert first["items"][-1]["seq"] < second["items"][0]["seq"]
    bogus = http.get("/v1/audit", params={"source": str(uuid.uuid4())})
    assert bogus.status_code == 404
