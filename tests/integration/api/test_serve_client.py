"""The packaged HTTP client (sync and async) and the CLI over HTTP, against the Serve app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from datawave.datasource.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthenticated,
    ValidationFailed,
)
from datawave.datasource.serve.client import AsyncHttpClient, HttpClient
from tests.fixtures.api import make_sqlite

from .conftest import unique

pytestmark = pytest.mark.ray

DATAWAVE = str(Path(sys.executable).with_name("datawave"))


def test_sync_client_roundtrip(api_url, api_keys, tmp_path):
    db = make_sqlite(tmp_path / "c.sqlite", tables=4)
    with HttpClient(api_url, api_key=api_keys["admin"]) as api:
        rec = api.create_source(unique(), "sqlite", {"path": str(db)}, labels={"via": "client"})
        assert api.get_source(rec.name).id == rec.id
        assert rec.id in {s.id for s in api.list_sources(labels={"via": "client"})}
        assert api.test_source(rec.id).ok
        view = api.wait_job(api.discover(rec.id).id, timeout_s=120)
        assert view.done == 1
        assert [t.name for t in api.tables(rec.id, limit=2)] == ["t0", "t1"]
        assert sorted(t.name for t in api.export(rec.id)) == ["t0", "t1", "t2", "t3"]
        assert api.table(rec.id, "c.main.t3").columns[2].name == "amount_3"
        assert api.update_source(rec.id, {"description": "d"}, if_match=1).version == 2
        with pytest.raises(Conflict):
            api.update_source(rec.id, {"description": "e"}, if_match=1)
        with pytest.raises(ValidationFailed) as bad:
            api.create_source(unique(), "sqlite", {"path": 3})
        assert any(e["field"].endswith("path") for e in bad.value.errors)
        api.delete_source(rec.id)
        with pytest.raises(NotFound):
            api.get_source(rec.id)


async def test_async_client(api_url, api_keys, tmp_path):
    db = make_sqlite(tmp_path / "a.sqlite", tables=2)
    async with AsyncHttpClient(api_url, api_key=api_keys["admin"]) as api:
        rec = await api.create_source(unique(), "sqlite", {"path": str(db)})
        job = await api.discover_many(sources=[rec.name])
        view = await api.wait_job(job.id, timeout_s=120)
        assert view.status == "succeeded"
        names = [t.name async for t in api.export(rec.id)]
        assert names == ["t0", "t1"]
        with pytest.raises(NotFound):
            await api.job("no-such-job")


def test_client_without_a_key_is_unauthenticated(api_url, api_keys):
    with HttpClient(api_url) as api, pytest.raises(Unauthenticated) as refused:
        api.list_sources()
    assert refused.value.context["reason"] == "missing"
    with HttpClient(api_url, api_key=api_keys["viewer"]) as api:
        with pytest.raises(Forbidden):
            api.create_source(unique(), "sqlite", {"path": "/nowhere.sqlite"})
        assert isinstance(api.list_sources(), list)


def test_cli_uses_the_api_when_recorded(api_url, api_keys, tmp_path):
    data = tmp_path / "dw"
    data.mkdir()
    (data / "core.json").write_text(json.dumps({"api_url": api_url}))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATAWAVE_DATA_DIR": str(data)}
    keyless = subprocess.run([DATAWAVE, "sources", "list"], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert keyless.returncode == 1 and "no API key: export DATAWAVE_API_KEY=" in keyless.stderr
    assert "Traceback" not in keyless.stderr
    (data / "admin.key").write_text(api_keys["viewer"] + "\n")  # the bootstrap key file is read
    assert subprocess.run([DATAWAVE, "sources", "list", "--json"], env=env, capture_output=True,
                          text=True, timeout=120).returncode == 0  # fmt: skip
    env["DATAWAVE_API_KEY"] = api_keys["admin"]  # and the environment wins over it
    db = make_sqlite(tmp_path / "cli.sqlite")
    name = unique("cli")

    def dw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DATAWAVE, *args], env=env, capture_output=True, text=True, timeout=120
        )

    add = dw("sources", "add", name, "--type", "sqlite", "--set", f"path={db}", "--json")
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)["name"] == name
    listed = json.loads(dw("sources", "list", "--json").stdout)
    assert name in {s["name"] for s in listed}
    assert dw("sources", "test", name).returncode == 0
    disc = dw("discover", name, "--json")
    assert disc.returncode == 0, disc.stderr
    assert json.loads(disc.stdout)["done"] == 1
    shown = json.loads(dw("sources", "show", name, "--json").stdout)
    assert shown["counts"]["tables"] == 3 and len(shown["tables"]) == 3
    assert json.loads(dw("drift", name, "--json").stdout) == []
    missing = dw("sources", "show", "no-such-source-xyz")
    assert missing.returncode != 0 and "no source" in missing.stderr
