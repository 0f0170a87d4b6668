"""WebSocket events and GraphQL through the real Serve proxy."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.fixtures.api import bearer, make_sqlite

from .conftest import discover, unique

pytestmark = pytest.mark.ray


async def test_websocket_events_filtered_by_source_and_type(
    api_url, api_keys, ahttp, http, sqlite_source, tmp_path
):
    sid = sqlite_source["id"]
    other = http.post(
        "/v1/sources",
        json={
            "name": unique(),
            "type": "sqlite",
            "config": {"path": str(make_sqlite(tmp_path / "o.sqlite"))},
        },
    ).json()
    ws_url = api_url.replace("http://", "ws://") + f"/v1/events?source={sid}&type=discovery"
    admin = bearer(api_keys["admin"])
    async with websockets.connect(ws_url, open_timeout=30, additional_headers=admin) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert hello["type"] == "subscribed" and hello["data"]["sources"] == [sid]
        await ahttp.post(f"/v1/sources/{other['id']}/discover")  # filtered out
        await ahttp.post(f"/v1/sources/{sid}/discover")
        seen = []
        while "discovery.finished" not in [e["type"] for e in seen]:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    assert {e["source_id"] for e in seen} == {sid}
    assert [e["type"] for e in seen][:1] == ["discovery.started"]
    assert all(e["type"].startswith("discovery.") for e in seen)
    assert all(isinstance(e["seq"], int) for e in seen)


async def test_websocket_unknown_source_is_refused(api_url, api_keys):
    ws_url = api_url.replace("http://", "ws://") + "/v1/events?source=does-not-exist"
    admin = bearer(api_keys["admin"])
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(ws_url, open_timeout=30, additional_headers=admin) as ws:
            await ws.recv()
    assert refused.value.response.status_code == 404


def test_graphql_tree_with_pagination(http, sqlite_source):
    sid = sqlite_source["id"]
    discover(http, sid)
    q = """query($ref: String!, $after: String) { source(ref: $ref) { name databases { name
      schemas { name tables(first: 2, after: $after) { items { name columns { name dataType } }
      nextCursor } } } } }"""
    r = http.post("/graphql", json={"query": q, "variables": {"ref": sid}})
    assert r.status_code == 200, r.text
    data = r.json()["data"]["source"]
    tables = data["databases"][0]["schemas"][0]["tables"]
    assert [t["name"] for t in tables["items"]] == ["t0", "t1"]
    assert [c["name"] for c in tables["items"][0]["columns"]] == ["id", "name", "amount_0"]
    r2 = http.post(
        "/graphql", json={"query": q, "variables": {"ref": sid, "after": tables["nextCursor"]}}
    )
    rest = r2.json()["data"]["source"]["databases"][0]["schemas"][0]["tables"]
    assert [t["name"] for t in rest["items"]] == ["t2"] and rest["nextCursor"] is None
    listing = http.post(
        "/graphql", json={"query": "{ sources(first: 1) { items { id } nextCursor } }"}
    )
    assert listing.json()["data"]["sources"]["nextCursor"]
