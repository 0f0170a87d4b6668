"""Operator views through the real Serve proxy: /metrics, /v1/edges, /v1/alerts, /v1/report."""

from __future__ import annotations

import pytest

from .conftest import discover

pytestmark = pytest.mark.ray


def test_metrics_exposes_sources_by_state(http, sqlite_source):
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    lines = [ln for ln in r.text.splitlines() if ln.startswith("datawave_sources{")]
    total = sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)
    listed = http.get("/v1/sources", params={"limit": 500}).json()
    assert lines and total >= 1
    assert total >= len(listed["items"]) or listed.get("next_cursor")


def test_fleet_views_answer_with_typed_lists(http, sqlite_source):
    discover(http, sqlite_source["id"])
    edges = http.get("/v1/edges")
    assert edges.status_code == 200 and isinstance(edges.json(), list)
    alerts = http.get("/v1/alerts", params={"status": "firing"})
    assert alerts.status_code == 200 and isinstance(alerts.json(), list)
    bad = http.get("/v1/alerts", params={"status": "maybe"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    report = http.get("/v1/report", params={"hours": 1})
    assert report.status_code == 200
    rows = {row["source_id"]: row for row in report.json()}
    assert sqlite_source["id"] in rows
    assert rows[sqlite_source["id"]]["discoveries"] >= 1
