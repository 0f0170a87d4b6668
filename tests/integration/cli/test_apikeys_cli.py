"""`datawave apikeys` as a subprocess against a fresh store (SQLite file and PostgreSQL); no
core needed: this is the bootstrap path for the first admin key."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from datawave.datasource.errors import Unauthenticated
from datawave.datasource.security import Grant
from datawave.datasource.store import MetadataStore

DATAWAVE = str(Path(sys.executable).with_name("datawave"))


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWAVE_")}
    env.update(DATAWAVE_DATA_DIR=str(tmp_path / "data"), COLUMNS="200", **extra)
    return env


def dw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DATAWAVE, *args], env=env, capture_output=True, text=True, timeout=120)


def dw_json(env: dict[str, str], *args: str) -> Any:
    proc = dw(env, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield clean_env(tmp_path)
    else:
        yield clean_env(tmp_path, DATAWAVE_STORE_URL=request.getfixturevalue("pg_store_url"))


def open_store(env: dict[str, str]) -> MetadataStore:
    url = env.get("DATAWAVE_STORE_URL") or f"sqlite:///{env['DATAWAVE_DATA_DIR']}/datawave.db"
    return MetadataStore.open(url, migrate=False)


def test_create_shows_the_token_once_then_list_and_revoke(env: dict[str, str]) -> None:
    proc = dw(env, "apikeys", "create", "--name", "first admin", "--role", "admin")
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert token.startswith("dwk_") and "\n" not in token  # stdout holds the token alone
    assert "shown only this once" in " ".join(proc.stderr.split())
    assert token not in proc.stderr

    store = open_store(env)
    try:
        p = store.authenticate_api_key(token)
        assert (p.kind, p.name, p.grants) == ("apikey", "first admin", (Grant(role="admin"),))

        listed = dw(env, "apikeys", "list")
        assert listed.returncode == 0 and "first admin" in listed.stdout
        keys = dw_json(env, "apikeys", "list")
        assert [k["id"] for k in keys] == [p.id]
        dump = json.dumps(keys) + listed.stdout
        assert token not in dump and token[17:] not in dump and "hash" not in keys[0]

        revoked = dw(env, "apikeys", "revoke", p.id)
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(Unauthenticated) as exc:
            store.authenticate_api_key(token)
        assert exc.value.context["reason"] == "revoked"
        assert dw_json(env, "apikeys", "list") == []
        assert [k["id"] for k in dw_json(env, "apikeys", "list", "--all")] == [p.id]

        entries = store.query_audit(action="apikey.*")
        actor = f"local:{getpass.getuser()}"
        assert [(e.action, e.principal, e.target) for e in entries] == [
            ("apikey.create", actor, p.id),
            ("apikey.revoke", actor, p.id),
        ]
        assert token not in json.dumps([e.model_dump(mode="json") for e in entries])
        assert store.verify_audit().ok
    finally:
        store.close()


def test_scoped_expiring_key(env: dict[str, str]) -> None:
    before = datetime.now(UTC)
    out = dw_json(env, "apikeys", "create", "--name", "etl", "--role", "operator",
                  "--collection", "finance/emea", "--expires-in", "12h")  # fmt: skip
    key = out["key"]
    assert key["grants"] == [{"role": "operator", "collection": "finance/emea", "source": None}]
    expires = datetime.fromisoformat(key["expires_at"])
    assert before + timedelta(hours=12) <= expires <= datetime.now(UTC) + timedelta(hours=12)
    store = open_store(env)
    try:
        assert store.authenticate_api_key(out["token"]).grants[0].collection == "finance/emea"
        with pytest.raises(Unauthenticated) as exc:
            store.authenticate_api_key(out["token"], now=expires + timedelta(seconds=1))
        assert exc.value.context["reason"] == "expired"
    finally:
        store.close()


def test_default_ttl_and_custom_roles_from_settings(tmp_path: Path) -> None:
    env = clean_env(tmp_path, DATAWAVE_AUTH__API_KEY_TTL_DAYS="7",
                    DATAWAVE_AUTH__CUSTOM_ROLES=json.dumps({"auditor": ["audit:read"]}))  # fmt: skip
    out = dw_json(env, "apikeys", "create", "--name", "aud", "--role", "auditor")
    expires = datetime.fromisoformat(out["key"]["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    src = dw_json(env, "apikeys", "create", "--name", "one", "--role", "viewer",
                  "--source", "orders-db")  # fmt: skip
    assert src["key"]["grants"][0]["source"] == "orders-db"


def test_bad_input_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    cases = [
        (["--name", "x", "--role", "superuser"], "unknown role 'superuser'"),
        (["--name", "x", "--role", "viewer", "--expires-in", "soon"], "--expires-in"),
        (["--name", "x", "--role", "viewer", "--expires-in", "0d"], "--expires-in"),
        (["--name", "x", "--role", "viewer", "--collection", "a", "--source", "b"], "not both"),
        (["--name", " ", "--role", "viewer"], "name"),
    ]
    for args, message in cases:
        proc = dw(env, "apikeys", "create", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in " ".join(proc.stderr.split()), (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""
    assert dw_json(env, "apikeys", "list", "--all") == []
    proc = dw(env, "apikeys", "revoke", "no-such-key")
    assert proc.returncode == 1 and "no API key" in proc.stderr
