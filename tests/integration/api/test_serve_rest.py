"""REST routes against the real Serve deployment on the session core."""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import pytest

from datawave.datasource.engines import shard_for
from tests.fixtures.api import make_sqlite

from .conftest import discover, unique, wait_job

pytestmark = pytest.mark.ray

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["code"] == code and body["type"].endswith(code)
    return dict(body)


def test_health_ready_and_docs(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["status"] == "ready" and ready["owners"] == 3 and ready["runtime"] == "ray"
    spec = http.get("/openapi.json").json()
    assert "/v1/sources" in spec["paths"] and "Problem" in spec["components"]["schemas"]
    assert http.get("/docs").status_code == 200


def test_create_get_list_patch_delete(http, tmp_path):
    db = make_sqlite(tmp_path / "a.sqlite")
    label = uuid.uuid4().hex[:6]
    ids = []
    for _ in range(3):
        r = http.post(
            "/v1/sources",
            json={
                "name": unique(),
                "type": "sqlite",
                "collection": "fin/emea",
                "config": {"path": str(db)},
                "labels": {"batch": label},
            },
        )
        assert r.status_code == 201, r.text
        rec = r.json()
        assert r.headers["location"] == f"/v1/sources/{rec['id']}"
        assert r.headers["etag"] == '"1"'
        assert rec["owner_shard"] == shard_for(rec["id"], 3)
        ids.append(rec["id"])
    # get by id and by name
    got = http.get(f"/v1/sources/{ids[0]}")
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    assert http.get(f"/v1/sources/{got.json()['name']}").json()["id"] == ids[0]
    # cursor pagination with a label filter
    seen, cursor = [], None
    while True:
        params = {"label": f"batch={label}", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/sources", params=params).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids)
    assert (
        len(
            http.get("/v1/sources", params={"collection": "fin", "label": f"batch={label}"}).json()[
                "items"
            ]
        )
        == 3
    )
    assert (
        http.get("/v1/sources", params={"type": "mysql", "label": f"batch={label}"}).json()["items"]
        == []
    )
    # PATCH with If-Match
    stale = http.patch(
        f"/v1/sources/{ids[0]}", json={"description": "x"}, headers={"If-Match": '"7"'}
    )
    assert_problem(stale, 412, "precondition_failed")
    ok = http.patch(
        f"/v1/sources/{ids[0]}",
        json={"description": "x", "labels": {"a": "b"}},
        headers={"If-Match": '"1"'},
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] == '"2"' and ok.json()["description"] == "x"
    bad = http.patch(f"/v1/sources/{ids[0]}", json={"config": {"path": 5}})
    body = assert_problem(bad, 422, "validation_failed")
    assert any("path" in e["field"] for e in body["errors"])
    # soft delete then purge
    assert http.delete(f"/v1/sources/{ids[1]}").status_code == 204
    assert_problem(http.get(f"/v1/sources/{ids[1]}"), 404, "not_found")
    assert http.delete(f"/v1/sources/{ids[1]}", params={"purge": "true"}).status_code == 204
    assert_problem(http.delete(f"/v1/sources/{ids[1]}", params={"purge": "true"}), 404, "not_found")


def test_idempotency_key(http, tmp_path):
    db = make_sqlite(tmp_path / "i.sqlite")
    body = {"name": unique(), "type": "sqlite", "config": {"path": str(db)}}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    a = http.post("/v1/sources", json=body, headers=key)
    b = http.post("/v1/sources", json=body, headers=key)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] == b.json()["id"]
    other = http.post("/v1/sources", json={**body, "name": unique()}, headers=key)
    assert other.status_code in (409, 422), other.text
    assert other.headers["content-type"].startswith(PROBLEM)
    jkey = {"Idempotency-Key": uuid.uuid4().hex}
    j1 = http.post(f"/v1/sources/{a.json()['id']}/discover", headers=jkey)
    j2 = http.post(f"/v1/sources/{a.json()['id']}/discover", headers=jkey)
    assert j1.status_code == j2.status_code == 202 and j1.json()["id"] == j2.json()["id"]
    wait_job(http, j1.json()["id"])


def test_test_discover_and_metadata(http, sqlite_source):
    sid = sqlite_source["id"]
    rep = http.post(f"/v1/sources/{sid}/test")
    assert rep.status_code == 200 and rep.json()["ok"], rep.text
    assert [s["status"] for s in rep.json()["steps"]] == ["ok"] * len(rep.json()["steps"])
    view = discover(http, sid)
    assert view["status"] == "succeeded" and view["done"] == 1 and view["progress"] == 1.0
    assert view["items"][0]["run_id"]
    dbs = http.get(f"/v1/sources/{sid}/databases").json()["items"]
    assert [d["name"] for d in dbs] == ["shop"]
    schemas = http.get(f"/v1/sources/{sid}/schemas", params={"database": "shop"}).json()["items"]
    assert [s["name"] for s in schemas] == ["main"]
    page1 = http.get(f"/v1/sources/{sid}/tables", params={"limit": 2}).json()
    page2 = http.get(
        f"/v1/sources/{sid}/tables", params={"limit": 2, "cursor": page1["next_cursor"]}
    ).json()
    names = [t["name"] for t in page1["items"] + page2["items"]]
    assert names == ["t0", "t1", "t2"] and page2["next_cursor"] is None
    t0 = page1["items"][0]
    assert t0["schema"] == "main" and [c["name"] for c in t0["columns"]] == [
        "id",
        "name",
        "amount_0",
    ]
    assert t0["primary_key"]["columns"] == ["id"]
    one = http.get(f"/v1/sources/{sid}/tables/shop.main.t1").json()
    assert one["name"] == "t1" and len(one["columns"]) == 3
    assert_problem(http.get(f"/v1/sources/{sid}/tables/shop.main.nope"), 404, "not_found")
    assert_problem(http.get(f"/v1/sources/{sid}/tables/only.two"), 400, "invalid_parameter")
    hits = http.get("/v1/search", params={"q": "amount_2", "source": sid}).json()
    assert [(h["type"], h["table"], h["column"]) for h in hits] == [("column", "t2", "amount_2")]
    assert http.get(f"/v1/sources/{sid}/stats").json()["tables"] == 3
    runs = http.get(f"/v1/sources/{sid}/runs").json()
    assert runs[0]["status"] == "succeeded"


def test_drift_after_schema_change(http, sqlite_source):
    sid = sqlite_source["id"]
    discover(http, sid)
    conn = sqlite3.connect(sqlite_source["path"])
    conn.execute("ALTER TABLE t0 ADD COLUMN extra TEXT")
    conn.execute("DROP TABLE t1")
    conn.commit()
    conn.close()
    assert discover(http, sid)["status"] == "succeeded"
    drift = http.get(f"/v1/sources/{sid}/drift").json()["items"]
    kinds = {(d["kind"], d["table"].split(".")[-1]) for d in drift}
    assert ("column_added", "t0") in kinds and ("table_removed", "t1") in kinds
    breaking = http.get(f"/v1/sources/{sid}/drift", params={"breaking": "true"}).json()["items"]
    assert breaking and all(d["breaking"] for d in breaking)
    assert {d["kind"] for d in breaking} == {"table_removed"}
    page = http.get(f"/v1/sources/{sid}/drift", params={"limit": 1}).json()
    assert len(page["items"]) == 1 and page["next_cursor"]


def test_bulk_discoveries_and_cancel(http, tmp_path):
    db = make_sqlite(tmp_path / "b.sqlite")
    label = uuid.uuid4().hex[:6]
    names = []
    for _ in range(3):
        r = http.post(
            "/v1/sources",
            json={
                "name": unique(),
                "type": "sqlite",
                "config": {"path": str(db)},
                "labels": {"bulk": label},
            },
        )
        names.append(r.json()["name"])
    by_list = http.post("/v1/discoveries", json={"sources": names[:2]})
    assert by_list.status_code == 202, by_list.text
    assert by_list.headers["location"] == f"/v1/jobs/{by_list.json()['id']}"
    view = wait_job(http, by_list.json()["id"])
    assert view["total"] == 2 and view["done"] == 2
    by_sel = http.post("/v1/discoveries", json={"selector": {"labels": {"bulk": label}}})
    assert by_sel.status_code == 202 and by_sel.json()["total"] == 3
    cancelled = http.post(f"/v1/jobs/{by_sel.json()['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] in ("cancelled", "succeeded")
    assert_problem(
        http.post("/v1/discoveries", json={"sources": ["no-such-source"]}), 404, "not_found"
    )
    assert_problem(http.post("/v1/discoveries", json={}), 422, "validation_failed")
    assert_problem(http.get(f"/v1/jobs/{uuid.uuid4()}"), 404, "not_found")
    assert_problem(http.post(f"/v1/jobs/{uuid.uuid4()}/cancel"), 404, "not_found")


def test_bad_input_is_4xx_problem_and_writes_nothing(http, core_settings):
    before = len(http.get("/v1/sources", params={"limit": 1000}).json()["items"])
    p = assert_problem(
        http.post(
            "/v1/sources", content=b'{"name": ', headers={"content-type": "application/json"}
        ),
        400,
        "malformed_json",
    )
    assert p["instance"] == "/v1/sources"
    wrong = assert_problem(
        http.post("/v1/sources", json={"name": 5, "type": "sqlite"}), 422, "validation_failed"
    )
    assert [e["field"] for e in wrong["errors"]] == ["name"]
    unknown = assert_problem(
        http.post("/v1/sources", json={"name": unique(), "type": "sqlite", "nope": 1}),
        422,
        "validation_failed",
    )
    assert unknown["errors"][0]["field"] == "nope"
    cfg = assert_problem(
        http.post(
            "/v1/sources",
            json={"name": unique(), "type": "sqlite", "config": {"path": "/x", "bogus": True}},
        ),
        422,
        "validation_failed",
    )
    assert any(e["field"].endswith("bogus") for e in cfg["errors"])
    assert_problem(
        http.post("/v1/sources", json={"name": unique(), "type": "nosuch"}),
        422,
        "validation_failed",
    )
    big = b'{"name": "' + b"x" * (core_settings.api.max_body_bytes + 10) + b'"}'
    assert_problem(
        http.post("/v1/sources", content=big, headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )
    assert_problem(
        http.post("/v1/sources", content=b"name=x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_problem(
        http.get("/v1/sources", params={"cursor": "!!not-a-cursor"}), 400, "invalid_cursor"
    )
    assert_problem(http.get("/v1/sources", params={"limit": 0}), 422, "validation_failed")
    assert_problem(http.get("/v1/sources", params={"label": "novalue"}), 422, "validation_failed")
    assert_problem(http.get(f"/v1/sources/{uuid.uuid4()}"), 404, "not_found")
    assert_problem(http.post(f"/v1/sources/{uuid.uuid4()}/test"), 404, "not_found")
    assert_problem(http.get("/v1/nowhere"), 404, "route_not_found")
    assert_problem(http.put("/v1/sources", json={}), 405, "method_not_allowed")
    after = len(http.get("/v1/sources", params={"limit": 1000}).json()["items"])
    assert after == before


def test_export_ndjson_streams_every_table(http, tmp_path):
    db = make_sqlite(tmp_path / "many.sqlite", tables=450)
    r = http.post(
        "/v1/sources", json={"name": unique(), "type": "sqlite", "config": {"path": str(db)}}
    )
    sid = r.json()["id"]
    discover(http, sid)
    lines = []
    with http.stream("GET", f"/v1/sources/{sid}/export") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        for line in resp.iter_lines():
            if line:
                lines.append(line)
    import json

    rows = [json.loads(x) for x in lines]
    assert len(rows) == 450 and len({r["name"] for r in rows}) == 450
    assert all(len(r["columns"]) == 3 for r in rows)


def test_job_events_sse(http, sqlite_source):
    sid = sqlite_source["id"]
    job = http.post(f"/v1/sources/{sid}/discover").json()
    events: list[tuple[str, str]] = []
    with http.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                events.append((name, line[6:]))
    kinds = [k for k, _ in events]
    assert kinds[0] == "progress" and kinds[-1] == "done"
    import json

    assert json.loads(events[-1][1])["status"] == "succeeded"
    assert_problem(http.get(f"/v1/jobs/{uuid.uuid4()}/events"), 404, "not_found")
