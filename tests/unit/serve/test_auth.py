"""Authentication and authorization of the API app, in process (no Ray, no network).

The app runs with auth on, as deployed; credentials are real API keys in the temp store.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient, WebSocketDenialResponse

from datawave.datasource.config import AuthSettings
from datawave.datasource.serve.app import create_app
from datawave.datasource.serve.auditing import FailureAudit
from datawave.datasource.serve.local import LocalBackend
from datawave.datasource.store.tables import api_keys
from tests.fixtures.api import bearer, make_sqlite

PROBLEM = "application/problem+json"


def audit(app, **filters):  # type: ignore[no-untyped-def]
    return app.state.ctx.auth_store.query_audit(limit=1000, **filters)


def assert_401(r, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "unauthenticated" and body["reason"] == reason, body
    assert r.headers["www-authenticate"].startswith('Bearer realm="datawave"')
    assert "Traceback" not in r.text


async def test_public_paths_need_no_credential(anon):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"):
        r = await anon.get(path)
        assert r.status_code == 200, (path, r.status_code)


async def test_every_other_route_needs_a_credential(app, anon, keys):
    for method, path in [("GET", "/v1/sources"), ("POST", "/v1/sources"), ("GET", "/v1/search?q=ab"),
                         ("GET", "/v1/jobs/x"), ("GET", "/v1/whoami"), ("GET", "/v1/apikeys"),
                         ("GET", "/v1/audit"), ("POST", "/graphql"), ("GET", "/v1/report"),
                         ("GET", "/v1/sources/x/export"), ("GET", "/v1/jobs/x/events"),
                         ("GET", "/v1/nowhere")]:  # fmt: skip
        r = await anon.request(method, path, json={} if method == "POST" else None)
        assert_401(r, "missing")
        assert r.headers["www-authenticate"] == 'Bearer realm="datawave"'
    failures = audit(app, action="auth.failure")
    assert failures and all(e.outcome == "denied" and e.principal == "anonymous" for e in failures)
    assert {e.detail["path"] for e in failures} >= {"/v1/sources", "/graphql", "/v1/jobs/x/events"}
    assert failures[0].detail["reason"] == "missing" and failures[0].detail["method"] == "GET"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Authorization": "Basic dXNlcjpwdw=="}, "malformed"),
        ({"Authorization": "Bearer"}, "malformed"),
        ({"Authorization": "Bearer a b"}, "malformed"),
        ({"Authorization": "Bearer <script>"}, "malformed"),
        ({"Authorization": "Bearer not-a-key"}, "malformed"),
        ({"Authorization": "Bearer dwk_short"}, "malformed"),
        ({"Authorization": "Bearer dwk_AAAAAAAAAAAA_" + "A" * 43}, "unknown_key"),
        ({"Authorization": "Bearer " + "x" * 9000}, "too_large"),
        ({"X-API-Key": "y" * 100_000}, "too_large"),
        ({"Authorization": "Bearer aaa.bbb.ccc"}, "jwt_not_accepted"),
        ({"X-API-Key": "garbage!"}, "malformed"),
    ],
)
async def test_bad_credentials_are_401_with_a_reason(app, anon, headers, reason):
    r = await anon.get("/v1/sources", headers=headers)
    assert_401(r, reason)
    sent = next(iter(headers.values())).split(" ")[-1][:40]
    last = audit(app, action="auth.failure")[-1]
    assert last.detail["reason"] == reason
    if len(sent) >= 8:  # the credential is never echoed, nor written to the audit log
        assert sent not in r.text and sent not in json.dumps(last.model_dump(mode="json"))


async def test_revoked_and_expired_keys(app, anon, api, keys):
    created = await api.post("/v1/apikeys", json={"name": "temp", "role": "viewer"})
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    token, key_id = created.json()["token"], created.json()["id"]
    assert (await anon.get("/v1/sources", headers=bearer(token))).status_code == 200
    assert (await anon.get("/v1/sources", headers={"X-API-Key": token})).status_code == 200
    assert (await api.delete(f"/v1/apikeys/{key_id}")).json()["status"] == "revoked"
    assert_401(await anon.get("/v1/sources", headers=bearer(token)), "revoked")
    # expired: move a key's expiry into the past behind the API's back
    store = app.state.ctx.auth_store
    rec, tok = store.create_api_key(name="old", grants=[], created_by="t",
                                    expires_at=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == rec.id)
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))  # fmt: skip
    assert_401(await anon.get("/v1/sources", headers=bearer(tok)), "expired")
    reasons = [e.detail["reason"] for e in audit(app, action="auth.failure")]
    assert "revoked" in reasons and "expired" in reasons
    revokes = audit(app, action="apikey.revoke")
    assert revokes[-1].target == key_id and revokes[-1].outcome == "ok"


async def test_api_keys_are_admin_only_and_never_leak(app, anon, api, keys):
    viewer = bearer(keys["viewer"])
    denied = await anon.post("/v1/apikeys", json={"name": "x", "role": "admin"}, headers=viewer)
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    assert (await anon.get("/v1/apikeys", headers=viewer)).status_code == 403
    assert audit(app, action="apikey.create")[-1].outcome == "denied"
    bad_role = await api.post("/v1/apikeys", json={"name": "x", "role": "wizard"})
    assert bad_role.status_code == 422 and bad_role.json()["errors"][0]["field"] == "role"
    scoped = await api.post(
        "/v1/apikeys",
        json={"name": "fin-ops", "role": "operator", "collections": ["fin/"], "expires_in_days": 2},
    )
    assert scoped.status_code == 201, scoped.text
    body = scoped.json()
    assert body["grants"] == [{"role": "operator", "collection": "fin", "source": None}]
    assert body["token"].startswith("dwk_" + body["prefix"]) and body["expires_at"]
    listing = (await api.get("/v1/apikeys")).text
    assert body["token"] not in listing and body["token"].split("_")[-1] not in listing
    assert "hash" not in (await api.get("/v1/apikeys")).json()[0]
    created = audit(app, action="apikey.create")[-1]
    assert created.outcome == "ok" and created.target == body["id"]
    assert body["token"] not in json.dumps(created.model_dump(mode="json"))
    me = (await anon.get("/v1/whoami", headers=bearer(body["token"]))).json()
    assert (
        me["kind"] == "apikey" and me["name"] == "fin-ops" and "sources:write" in me["permissions"]
    )


async def test_roles_and_collections(app, anon, api, keys, tmp_path):
    db = str(make_sqlite(tmp_path / "s.sqlite"))
    fin_op, viewer, shop_viewer = (
        bearer(keys[k]) for k in ("fin-operator", "viewer", "shop-viewer")
    )

    def spec(name: str, collection: str | None) -> dict[str, object]:
        return {"name": name, "type": "sqlite", "config": {"path": db}, "collection": collection}

    # viewer: reads everything, changes nothing (403, audited as denied)
    assert (await api.post("/v1/sources", json=spec("shop", "retail"))).status_code == 201
    r = await anon.post("/v1/sources", json=spec("v1", "fin"), headers=viewer)
    assert r.status_code == 403
    denied = audit(app, action="source.create")[-1]
    assert denied.outcome == "denied" and denied.principal == "apikey:viewer"
    assert (await anon.post("/v1/sources/shop/discover", headers=viewer)).status_code == 403
    assert (await anon.get("/v1/sources/shop", headers=viewer)).status_code == 200
    # a collection-scoped operator registers and discovers inside its collection only
    made = await anon.post("/v1/sources", json=spec("ledger", "fin/emea"), headers=fin_op)
    assert made.status_code == 201, made.text
    ok = audit(app, action="source.create")[-1]
    assert ok.outcome == "ok" and ok.source_id == made.json()["id"]
    assert (
        await anon.post("/v1/sources", json=spec("x", "retail"), headers=fin_op)
    ).status_code == 403
    assert (await anon.post("/v1/sources", json=spec("y", None), headers=fin_op)).status_code == 403
    job = await anon.post("/v1/sources/ledger/discover", headers=fin_op)
    assert job.status_code == 202, job.text
    assert (await anon.get(f"/v1/jobs/{job.json()['id']}", headers=fin_op)).status_code == 200
    # ... and cannot see, list, search or discover the other collection's source: 404, absent
    for path in ("/v1/sources/shop", "/v1/sources/shop/tables", "/v1/sources/shop/drift",
                 "/v1/sources/shop/export", "/v1/search?q=t0&source=shop"):  # fmt: skip
        r = await anon.get(path, headers=fin_op)
        assert r.status_code == 404 and r.json()["detail"] == "no source 'shop'", (path, r.text)
    assert (await anon.post("/v1/sources/shop/discover", headers=fin_op)).status_code == 404
    assert (await anon.patch("/v1/sources/ledger", json={"collection": "retail"},
                             headers=fin_op)).status_code == 403  # fmt: skip
    names = [s["name"] for s in (await anon.get("/v1/sources", headers=fin_op)).json()["items"]]
    assert names == ["ledger"]
    bulk = await anon.post("/v1/discoveries", json={"selector": {"all": True}}, headers=fin_op)
    assert bulk.status_code == 202 and bulk.json()["total"] == 1, bulk.text
    hidden = await anon.post("/v1/discoveries", json={"sources": ["shop"]}, headers=fin_op)
    assert hidden.status_code == 404
    admin_job = (await api.post("/v1/sources/shop/discover")).json()["id"]
    assert (await anon.get(f"/v1/jobs/{admin_job}", headers=fin_op)).status_code == 404
    assert (await anon.post(f"/v1/jobs/{admin_job}/cancel", headers=fin_op)).status_code == 404
    assert (await anon.get(f"/v1/jobs/{admin_job}", headers=viewer)).status_code == 200
    # GraphQL: the same scope
    q = '{ sources { items { name } } source(ref: "shop") { name } }'
    data = (await anon.post("/graphql", json={"query": q}, headers=fin_op)).json()["data"]
    assert data == {"sources": {"items": [{"name": "ledger"}]}, "source": None}
    data = (await anon.post("/graphql", json={"query": q}, headers=shop_viewer)).json()["data"]
    assert data == {"sources": {"items": [{"name": "shop"}]}, "source": {"name": "shop"}}
    # edges are global-only; audit needs audit:read
    assert (await anon.get("/v1/edges", headers=fin_op)).status_code == 403
    assert (await anon.get("/v1/audit", headers=fin_op)).status_code == 403
    assert (await anon.get("/v1/audit", headers=viewer)).status_code == 403


async def test_audit_route_pages_and_filters(app, api, keys, anon):
    await anon.get("/v1/sources", headers=bearer("dwk_AAAAAAAAAAAA_" + "B" * 43))
    first = await api.get("/v1/audit", params={"action": "auth.failure", "limit": 1})
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["items"]) == 1 and page["items"][0]["detail"]["reason"] == "unknown_key"
    everything = (await api.get("/v1/audit", params={"limit": 1000})).json()["items"]
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs) and all(len(e["hash"]) == 64 for e in everything)
    assert (await api.get("/v1/audit", params={"cursor": "bad!"})).status_code == 400
    assert app.state.ctx.auth_store.verify_audit().ok


def test_websocket_credentials(app, keys, shop):
    token = keys["admin"]
    with TestClient(app) as client:
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect("/v1/events"),
        ):
            pass
        assert refused.value.status_code == 401
        assert refused.value.json()["reason"] == "missing"
        with (
            pytest.raises(WebSocketDenialResponse) as bad,
            client.websocket_connect("/v1/events?access_token=dwk_nope"),
        ):
            pass
        assert bad.value.status_code == 401 and bad.value.json()["reason"] == "malformed"
        with client.websocket_connect(f"/v1/events?access_token={token}") as ws:
            assert ws.receive_json()["type"] == "subscribed"
        with client.websocket_connect("/v1/events", subprotocols=["bearer", token]) as ws:
            assert ws.accepted_subprotocol == "bearer"
            assert ws.receive_json()["type"] == "subscribed"
        client.post("/v1/sources", json={"name": "shop", "type": "sqlite",
                                         "config": {"path": str(shop)}, "collection": "retail"},
                    headers=bearer(token))  # fmt: skip
        fin = bearer(keys["fin-operator"])
        with (
            pytest.raises(WebSocketDenialResponse) as hidden,
            client.websocket_connect("/v1/events?source=shop", headers=fin),
        ):
            pass
        assert hidden.value.status_code == 404
    assert [e.detail["protocol"] for e in audit(app, action="auth.failure")] == ["websocket"] * 2


async def test_events_are_filtered_by_scope(app, keys):
    from datawave.datasource.serve.access import Access, SourceGate

    ctx = app.state.ctx
    rec = ctx.backend.store  # the read store answers the gate's lookups
    assert rec is not None
    principal = ctx.auth_store.authenticate_api_key(keys["fin-operator"])
    gate = SourceGate(Access(ctx, principal))
    assert not await gate.allows({"type": "edge.offline"})  # fleet-wide: global only
    assert not await gate.allows({"type": "drift", "source_id": "no-such-source"})
    admin = ctx.auth_store.authenticate_api_key(keys["admin"])
    assert await SourceGate(Access(ctx, admin)).allows({"type": "edge.offline"})


def test_failure_audit_is_rate_limited_but_keeps_the_first():
    fa = FailureAudit(appender=None, burst=3, per_s=1.0)  # type: ignore[arg-type]
    key = ("10.0.0.1", "missing")
    got = [fa.admit(key, 100.0) for _ in range(6)]
    assert [w for w, _ in got] == [True, True, True, False, False, False]
    assert fa.admit(("10.0.0.2", "missing"), 100.0) == (True, 0)  # another remote: its own
    assert fa.admit(key, 101.5) == (True, 3)  # a token back: written, with the count held back


async def test_auth_disabled_lets_everyone_in(settings):
    import httpx

    application = create_app(LocalBackend(settings), api=settings.api,
                             auth=AuthSettings(enabled=False), owns_backend=True)  # fmt: skip
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            assert (await c.get("/v1/sources")).status_code == 200
            assert (await c.get("/v1/whoami")).json()["kind"] == "local"


async def test_patch_audits_field_names_not_values(app, api, shop):
    await api.post(
        "/v1/sources", json={"name": "p", "type": "sqlite", "config": {"path": str(shop)}}
    )
    r = await api.patch("/v1/sources/p", json={"description": "hunter2-secret-desc"})
    assert r.status_code == 200
    entry = audit(app, action="source.update")[-1]
    assert entry.detail["fields"] == ["description"] and entry.source_id == r.json()["id"]
    assert "hunter2" not in json.dumps(entry.model_dump(mode="json"))
