"""The edge on the session core: `datawave up` runs the hub and the gateway actor; the CLI mints a
token, an edge joins with it, and the owners send an edge source's test and discovery there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from datawave.datasource.models import RunStatus

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def dw(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "datawave.datasource.cli.main", *args],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"datawave {' '.join(args[:3])} failed: {res.stderr}{res.stdout}")
    return res


def wait_for(check: Any, within: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within:g}s")
        time.sleep(0.2)


def test_up_records_the_hub(core: dict[str, Any]) -> None:
    assert core["nats_embedded"] and core["nats_pid"]
    assert core["nats_url"].startswith("nats://127.0.0.1:") and ":4222" not in core["nats_url"]
    assert core["nats_leaf_url"].startswith("tls://127.0.0.1:") and core["nats_leaf_tls"]
    varz = httpx.get(f"{core['nats_monitor_url']}/varz", timeout=5, trust_env=False).json()
    assert varz["jetstream"]["config"]["domain"] == "core"


def test_token_join_and_owner_delegation(
    core: dict[str, Any], core_env: dict[str, str], client: Any, pg_db: Any, tmp_path: Path
) -> None:
    site = f"s{uuid.uuid4().hex[:6]}"
    pg_db.execute("CREATE TABLE plants (id int primary key, city text)")
    token = json.loads(dw(core_env, "edge", "token", "create", "--site", site, "--json").stdout)[
        "token"
    ]
    root = tmp_path / "node"
    env = {**core_env, "DATAWAVE_DATA_DIR": str(tmp_path / "edge-home")}
    joined = json.loads(dw(env, "edge", "join", token, "--state-dir", str(root), "--json").stdout)
    try:
        assert joined["site"] == site and joined["agent_pid"] and joined["tls"]
        # Registered once the site has joined: its secrets are sealed to the edge's key.
        rec = client.register(f"edge-{site}", "postgresql", pg_db.config(password="pw-edge"),
                              edge_site=site)  # fmt: skip
        again = dw(env, "edge", "join", token, "--state-dir", str(tmp_path / "again"), check=False)
        assert again.returncode != 0 and "already used" in again.stderr
        assert not (tmp_path / "again").exists()

        # The owner delegates: the test runs on the edge (once it has the source definitions).
        report = wait_for(lambda: (r := client.test(rec.id)).ok and r, 60, "edge test")
        assert report.source_id == rec.id

        run = client.discover(rec.id)
        assert run.status is RunStatus.RUNNING  # finished when the edge's result syncs

        def finished() -> Any:
            r = client.store.get_run(run.run_id)
            return r.status is not RunStatus.RUNNING and r

        done = wait_for(finished, 60, "edge discovery")
        assert done.status is RunStatus.SUCCEEDED, done.errors
        assert [t.name for t in client.tables(rec.id)] == ["plants"]

        import ray

        from datawave.datasource.actors.gateway import GATEWAY_NAME

        gateway = ray.get_actor(GATEWAY_NAME, namespace=client.settings.ray.namespace)
        stats = ray.get(gateway.stats.remote(), timeout=30)
        assert stats["counters"]["registered"] >= 1 and stats["counters"]["refused"] >= 1

        fleet = json.loads(dw(core_env, "edge", "list", "--json").stdout)
        mine = [n for n in fleet if n["site"] == site]
        assert mine and mine[0]["link_state"] == "up" and mine[0]["node"] == joined["node"]

        status = json.loads(dw(env, "edge", "status", "--state-dir", str(root), "--json").stdout)
        assert status["link"] == "up" and status["agent_pid"]
        shown = json.loads(
            dw(env, "edge", "show", rec.name, "--state-dir", str(root), "--json").stdout
        )
        assert [t["name"] for t in shown["result"]["tables"]] == ["plants"]
    finally:
        dw(env, "edge", "leave", "--state-dir", str(root), check=False)
    assert not root.exists()
