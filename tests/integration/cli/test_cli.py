"""The real `datawave` command line, run as a subprocess against the session core."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from datawave.datasource.actors.factory import RayOwnerDirectory

pytestmark = pytest.mark.ray

DATAWAVE = str(Path(sys.executable).with_name("datawave"))


def dw(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DATAWAVE, *args], env=env, input=stdin, capture_output=True, text=True, timeout=180
    )


def dw_json(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    proc = dw(env, *args, "--json", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def err(proc: subprocess.CompletedProcess[str]) -> str:
    return " ".join(proc.stderr.split())


def names(env: dict[str, str]) -> set[str]:
    return {s["name"] for s in dw_json(env, "sources", "list")}


def _name() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def _pg_args(pg_db: Any) -> list[str]:
    return [
        "--type", "postgresql",
        "--set", f"host={pg_db.host}", "--set", f"port={pg_db.port}", "--set", f"user={pg_db.user}",
        "--set", f"databases={json.dumps([pg_db.dbname])}", "--set", f"database={pg_db.dbname}",
    ]  # fmt: skip


def test_connectors_lists_the_builtin_plugins(core_env):
    plugins = {p["name"]: p for p in dw_json(core_env, "connectors")}

    for name in ("postgresql", "mysql", "sqlite", "files"):
        assert plugins[name]["enabled"], plugins[name]


def test_status_says_running(core_env, core):
    info = dw_json(core_env, "status")

    assert info["running"] is True
    assert info["ray_address"] == core["ray_address"]
    assert isinstance(info["sources"], int)


def test_add_test_discover_drift_remove(core_env, pg_db):
    pg_db.execute(
        "CREATE SCHEMA app;\n"
        "CREATE TABLE app.t0 (id int PRIMARY KEY, name text NOT NULL, v numeric(10,2));\n"
        "CREATE TABLE app.t1 (id int PRIMARY KEY)"
    )
    name = _name()

    rec = dw_json(core_env, "sources", "add", name, *_pg_args(pg_db), "--set", "auth=none",
                  "--label", "team=x")  # fmt: skip
    assert (rec["name"], rec["type"], rec["labels"]) == (name, "postgresql", {"team": "x"})
    assert rec["config"]["databases"] == [pg_db.dbname] and rec["secret_fields"] == []
    listed = [s for s in dw_json(core_env, "sources", "list") if s["name"] == name]
    assert [s["id"] for s in listed] == [rec["id"]]
    shown = dw_json(core_env, "sources", "show", name)
    assert shown["source"]["id"] == rec["id"] and shown["runs"] == [] and shown["tables"] == []

    report = dw_json(core_env, "sources", "test", name)
    assert report["ok"] is True
    assert report["steps"] and {s["status"] for s in report["steps"]} == {"ok"}

    job = dw_json(core_env, "discover", name)
    assert job["status"] == "succeeded" and (job["total"], job["done"], job["failed"]) == (1, 1, 0)
    shown = dw_json(core_env, "sources", "show", name)
    assert shown["counts"]["tables"] == 2 and shown["counts"]["columns"] == 4
    assert sorted(t["name"] for t in shown["tables"]) == ["t0", "t1"]

    pg_db.execute("ALTER TABLE app.t0 ADD COLUMN extra text;\nALTER TABLE app.t0 DROP COLUMN v")
    assert dw_json(core_env, "discover", name)["status"] == "succeeded"

    events = dw_json(core_env, "drift", name)
    t0 = f"{pg_db.dbname}.app.t0"
    changes = {(e["kind"], e["table"], e["column"]): e["breaking"] for e in events}
    assert changes == {("column_added", t0, "extra"): False, ("column_removed", t0, "v"): True}
    breaking = dw_json(core_env, "drift", name, "--breaking")
    assert [(e["kind"], e["column"]) for e in breaking] == [("column_removed", "v")]

    removed = dw(core_env, "sources", "remove", name)
    assert removed.returncode == 0, removed.stderr
    gone = dw(core_env, "sources", "show", name)
    assert gone.returncode == 1 and f"no source '{name}'" in err(gone)
    assert name not in names(core_env)


def test_invalid_config_is_refused_and_nothing_stored(core_env):
    name = _name()

    proc = dw(core_env, "sources", "add", name, "--type", "postgresql", "--set", "host=127.0.0.1",
              "--set", "port=notaport", "--set", "user=postgres", "--set", "auth=none")  # fmt: skip

    assert proc.returncode == 2, proc.stderr
    assert "config.port" in err(proc) and "valid integer" in err(proc)
    assert "Traceback" not in proc.stderr
    assert name not in names(core_env)


def test_duplicate_name_is_refused(core_env, pg_db):
    name = _name()
    first = dw(core_env, "sources", "add", name, *_pg_args(pg_db), "--set", "auth=none")
    assert first.returncode == 0, first.stderr

    again = dw(core_env, "sources", "add", name, *_pg_args(pg_db), "--set", "auth=none")

    assert again.returncode != 0
    assert "already exists" in err(again)
    assert [s["name"] for s in dw_json(core_env, "sources", "list")].count(name) == 1


def test_secret_from_stdin_is_never_printed(core_env, pg_db):
    name = _name()
    secret = f"pw-{uuid.uuid4().hex}"

    added = dw(core_env, "sources", "add", name, *_pg_args(pg_db), "--secret", "password",
               "--json", stdin=secret + "\n")  # fmt: skip

    assert added.returncode == 0, added.stderr
    rec = json.loads(added.stdout)
    assert rec["secret_fields"] == ["password"] and rec["config"]["auth"] == "password"
    outputs = [added.stdout + added.stderr]
    for args in (["sources", "show", name, "--json"], ["sources", "list", "--json"],
                 ["sources", "show", name], ["sources", "list"],
                 ["sources", "test", name, "--json"]):  # fmt: skip
        proc = dw(core_env, *args)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    assert not [out for out in outputs if secret in out]
    assert "password (sealed)" in outputs[3]


def test_error_messages_are_printed_verbatim(core_env):
    """Names are user input: a bracket in one must not be taken for rich markup."""
    proc = dw(core_env, "sources", "show", "[/bold]no-such-source")

    assert proc.returncode == 1
    assert "no source '[/bold]no-such-source'" in err(proc)
    assert "Traceback" not in proc.stderr


def test_unreachable_core_is_a_clean_error(core_env, core_settings, tmp_path):
    """The Ray cluster answers but holds no core in this namespace."""
    state = json.loads(core_settings.state_file.read_text())
    state.pop("api_url", None)  # go through Ray, not through an API someone deployed
    (tmp_path / "core.json").write_text(json.dumps(state))
    env = {**core_env, "DATAWAVE_DATA_DIR": str(tmp_path),
           "RAY_AUTH_TOKEN_PATH": str(core_settings.data_dir / "ray_token"),
           "DATAWAVE_RAY__NAMESPACE": f"nowhere-{uuid.uuid4().hex[:6]}"}  # fmt: skip

    proc = dw(env, "sources", "list")

    assert proc.returncode == 1
    assert "cannot reach the datawave core" in err(proc)
    assert "Traceback" not in proc.stderr


def test_deploy_finds_the_running_core(core_env, core, core_settings):
    env = {**core_env, "DATAWAVE_RAY__ADDRESS": str(core["ray_address"])}

    info = dw_json(env, "deploy")

    ns = core_settings.ray.namespace
    assert info["namespace"] == ns
    assert [o["shard"] for o in info["owners"]] == list(range(core_settings.owners.shards))
    directory = RayOwnerDirectory(ns, core_settings.owners.process_count)
    live = [ray.get(directory.ref(i, "ping"))["pid"] for i in range(core_settings.owners.shards)]
    assert [o["pid"] for o in info["owners"]] == live  # the same actors, none created twice
