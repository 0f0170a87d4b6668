"""The app over the in-process backend: protocol details that need no Ray."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from sqlalchemy import event
from starlette.websockets import WebSocketDisconnect

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from datawave.datasource.serve.events import Broadcaster
from tests.fixtures.api import bearer, make_sqlite


async def _discover(api, ref: str) -> dict:
    job = (await api.post(f"/v1/sources/{ref}/discover")).json()
    for _ in range(200):
        view = (await api.get(f"/v1/jobs/{job['id']}")).json()
        if view["status"] not in ("pending", "running"):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError("job did not finish")


async def test_crud_roundtrip(api, shop):
    r = await api.post(
        "/v1/sources", json={"name": "shop", "type": "sqlite", "config": {"path": str(shop)}}
    )
    assert r.status_code == 201 and r.headers["etag"] == '"1"'
    assert (await _discover(api, "shop"))["status"] == "succeeded"
    tables = (await api.get("/v1/sources/shop/tables", params={"columns": "false"})).json()["items"]
    assert [t["name"] for t in tables] == ["t0", "t1", "t2"] and tables[0]["columns"] == []
    export = await api.get("/v1/sources/shop/export")
    assert len(export.text.splitlines()) == 3


async def test_chunked_oversized_body_is_413(api):
    async def gen():
        for _ in range(10):
            yield b"x" * 1000

    r = await api.post("/v1/sources", content=gen(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


async def test_idempotency_key_replay_and_reuse(api, shop):
    body = {"name": "k1", "type": "sqlite", "config": {"path": str(shop)}}
    a = await api.post("/v1/sources", json=body, headers={"Idempotency-Key": "abc"})
    b = await api.post("/v1/sources", json=body, headers={"Idempotency-Key": "abc"})
    assert a.json() == b.json() and b.headers["idempotent-replayed"] == "true"
    c = await api.post(
        "/v1/sources", json={**body, "name": "k2"}, headers={"Idempotency-Key": "abc"}
    )
    assert c.status_code == 422 and c.json()["code"] == "idempotency_key_reused"
    assert len((await api.get("/v1/sources")).json()["items"]) == 1


async def test_graphql_batches_one_query_per_level(app, api, tmp_path):
    for i in range(4):
        db = make_sqlite(tmp_path / f"s{i}.sqlite", tables=3)
        await api.post(
            "/v1/sources", json={"name": f"s{i}", "type": "sqlite", "config": {"path": str(db)}}
        )
        await _discover(api, f"s{i}")
    q = "{ sources(first: %d) { items { name databases { name schemas { name tables { items { name columns { name } } } } } } } }"
    engine = app.state.ctx.store.engine
    counts: list[int] = []
    for n in (1, 4):
        stmts: list[str] = []

        def count(*args, _s=stmts):  # type: ignore[no-untyped-def]
            _s.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        try:
            r = await api.post("/graphql", json={"query": q % n})
        finally:
            event.remove(engine, "before_cursor_execute", count)
        data = r.json()["data"]["sources"]["items"]
        assert len(data) == n
        assert all(len(s["databases"][0]["schemas"][0]["tables"]["items"]) == 3 for s in data)
        counts.append(len([s for s in stmts if s.lstrip().upper().startswith("SELECT")]))
    assert counts[0] == counts[1], counts  # 4x the sources, same number of queries


def test_websocket_filter_and_close_codes(app, keys, shop):
    with TestClient(app, headers=bearer(keys["admin"])) as client:
        rec = client.post(
            "/v1/sources", json={"name": "ws", "type": "sqlite", "config": {"path": str(shop)}}
        ).json()
        with client.websocket_connect("/v1/events?source=ws&type=discovery") as ws:
            assert ws.receive_json()["type"] == "subscribed"
            client.post("/v1/sources/ws/discover")
            types = []
            while "discovery.finished" not in types:
                ev = ws.receive_json()
                assert ev["source_id"] == rec["id"]
                types.append(ev["type"])
        ctx = app.state.ctx
        assert isinstance(ctx.broadcaster, Broadcaster)
        with client.websocket_connect("/v1/events") as ws:
            assert ws.receive_json()["type"] == "subscribed"
            sub = next(iter(ctx.broadcaster.subs))
            ctx.broadcaster.dispatch({"type": "x", "seq": i} for i in range(sub.queue.maxsize + 50))
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    ws.receive_json()
            assert closed.value.code == 1013


async def test_search_index_matches_store_and_follows_discoveries(app, api, tmp_path):
    import sqlite3

    db = make_sqlite(tmp_path / "s.sqlite", tables=5)
    await api.post(
        "/v1/sources", json={"name": "srch", "type": "sqlite", "config": {"path": str(db)}}
    )
    await _discover(api, "srch")
    ctx = app.state.ctx
    ctx.search.recheck_s = 0
    for q in ("amount", "T3", "name", "zzz"):
        got = (await api.get("/v1/search", params={"q": q})).json()
        want = ctx.store.search(q)
        key = lambda h: (h["type"], h["table"], h.get("column"))  # noqa: E731
        assert sorted(map(key, got)) == sorted(map(key, want)), q
    assert (await api.get("/v1/search", params={"q": "fresh_col"})).json() == []
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE t1 ADD COLUMN fresh_col TEXT")
    conn.commit()
    conn.close()
    await _discover(api, "srch")
    hits = (await api.get("/v1/search", params={"q": "FRESH_col"})).json()
    assert [(h["table"], h["column"]) for h in hits] == [("t1", "fresh_col")]
    short = await api.get("/v1/search", params={"q": "x"})
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "q"
