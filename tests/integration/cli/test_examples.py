"""The example driver scripts run as written against the session core."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[3]


def test_bulk_discover_registers_and_discovers_a_fleet(core_env, client, pg_db):
    pg_db.execute(";\n".join(
        ["CREATE SCHEMA app"] + [f"CREATE TABLE app.t{i} (id int PRIMARY KEY, v text)" for i in range(3)]
    ))  # fmt: skip
    prefix = f"ex-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, str(ROOT / "examples" / "bulk_discover.py"),
           "--pg-host", pg_db.host, "--pg-port", str(pg_db.port), "--pg-user", pg_db.user,
           "--database", pg_db.dbname, "--count", "5", "--prefix", prefix]  # fmt: skip
    env = {k: v for k, v in core_env.items() if k != "PGPASSWORD"}

    first = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert first.returncode == 0, first.stdout + first.stderr
    assert "5 sources registered" in first.stdout
    fleet = client.sources(labels={"fleet": prefix})
    assert sorted(s.name for s in fleet) == [f"{prefix}-{i:04d}" for i in range(5)]
    for src in fleet:
        assert sorted(t.name for t in client.tables(src.id)) == ["t0", "t1", "t2"]

    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 sources registered, 5 already there" in again.stdout
    assert len(client.sources(labels={"fleet": prefix})) == 5


def test_bulk_discover_exits_non_zero_when_a_discovery_fails(core_env, client, pg_db):
    prefix = f"ex-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, str(ROOT / "examples" / "bulk_discover.py"),
           "--pg-host", pg_db.host, "--pg-port", str(pg_db.port), "--pg-user", pg_db.user,
           "--database", f"{pg_db.dbname}_missing", "--count", "2", "--prefix", prefix]  # fmt: skip

    proc = subprocess.run(cmd, env=core_env, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "0 succeeded, 2 failed" in " ".join(proc.stdout.split())
