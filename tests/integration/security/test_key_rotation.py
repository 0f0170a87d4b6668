"""KEK rotation against real stores (SQLite file and PostgreSQL): `datawave keys rotate` runs
as its own process while this one keeps opening secrets; a wrong or missing key is a clear
start-up error; `datawave keys retire` refuses a key that still wraps a secret."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datawave.datasource.actors.owner import open_store
from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.errors import ConfigError
from datawave.datasource.security.kek import kek_id, read_key_file, write_key_file
from datawave.datasource.store import AesGcmSealer, MetadataStore
from datawave.datasource.store.sealing import blob_kek_id

DATAWAVE = str(Path(sys.executable).with_name("datawave"))
N_SOURCES = 60


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> DatawaveSettings:
    url = (
        f"sqlite:///{tmp_path / 'store.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_store_url")
    )
    return load_settings(data_dir=tmp_path, store_url=url)


def env_for(settings: DatawaveSettings) -> dict[str, str]:
    return {**os.environ, "DATAWAVE_DATA_DIR": str(settings.data_dir),
            "DATAWAVE_STORE_URL": settings.resolved_store_url}  # fmt: skip


def dw(settings: DatawaveSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DATAWAVE, *args], env=env_for(settings), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def dw_json(settings: DatawaveSettings, *args: str) -> Any:
    proc = dw(settings, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def stored_blobs(store: MetadataStore) -> dict[str, bytes]:
    from sqlalchemy import select

    from datawave.datasource.store.tables import sources

    with store.read() as conn:
        rows = conn.execute(select(sources.c.id, sources.c.secrets)).all()
    return {r[0]: bytes(r[1]) for r in rows if r[1] is not None}


@pytest.fixture
def populated(settings: DatawaveSettings) -> Iterator[MetadataStore]:
    """A migrated store (dev: the key file is created) with N sources holding secrets."""
    store = open_store(settings, migrate=True, environ={})
    for i in range(N_SOURCES):
        store.create_source(id=f"src-{i:03d}", name=f"s{i}", type="postgresql",
                            config={"host": "h"}, secrets={"password": f"pw-{i}"},
                            owner_shard=0)  # fmt: skip
    yield store
    store.close()


def test_rotation_under_concurrent_reads_then_retire(
    settings: DatawaveSettings, populated: MetadataStore
) -> None:
    old = read_key_file(settings.resolved_key_file)
    reader = open_store(settings, environ={})  # a running owner: holds only the old key
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def read_loop() -> None:
        nonlocal reads
        while not stop.is_set():
            for i in range(N_SOURCES):
                try:
                    got = reader.get_secrets(f"src-{i:03d}")
                    if got != {"password": f"pw-{i}"}:
                        failures.append(f"src-{i:03d}: wrong value")
                except Exception as exc:
                    failures.append(f"src-{i:03d}: {type(exc).__name__}: {exc}")
                reads += 1

    t = threading.Thread(target=read_loop, daemon=True)
    t.start()
    try:
        out = dw_json(settings, "keys", "rotate", "--generate")
        reads_at_rotation = reads
        # Read every secret at least once more after the rotation finished.
        while reads < reads_at_rotation + N_SOURCES + 1 and t.is_alive():
            stop.wait(0.05)
    finally:
        stop.set()
        t.join(60)

    new = read_key_file(settings.resolved_key_file)
    assert failures == []
    assert out["previous_kek_id"] == kek_id(old) and out["kek_id"] == kek_id(new) != kek_id(old)
    assert out["rewrapped"] == N_SOURCES and out["failed"] == []
    blobs = stored_blobs(populated)
    assert {blob_kek_id(b) for b in blobs.values()} == {kek_id(new)}
    only_new = AesGcmSealer(new)
    assert all(only_new.open(b, context=sid.encode()) for sid, b in blobs.items())
    assert reader.sealer is not None and kek_id(new) in reader.sealer.keyring.ids  # reloaded

    status = dw_json(settings, "keys", "status")
    roles = {k["kek_id"]: (k["role"], k["secrets"]) for k in status["keys"]}
    assert roles == {kek_id(new): ("current", N_SOURCES), kek_id(old): ("previous", 0)}

    # A stale process that still seals with the old key (a sealer without a reloadable
    # keyring never learns of the rotation) keeps that key alive ...
    stale = MetadataStore(settings.resolved_store_url, sealer=AesGcmSealer(old))
    stale.update_source("src-000", secrets={"password": "pw-0"})
    stale.close()
    refused = dw(settings, "keys", "retire", kek_id(old))
    assert refused.returncode != 0
    assert "1 secrets still use" in refused.stderr and "datawave keys rotate" in refused.stderr

    # ... until the next rotate pass re-wraps it; then the old key can go.
    again = dw_json(settings, "keys", "rotate")
    assert again["rewrapped"] == 1 and again["kek_id"] == kek_id(new)
    retired = dw_json(settings, "keys", "retire", kek_id(old))
    assert retired["removed"].endswith(f"previous-{kek_id(old)}")
    assert not Path(retired["removed"]).exists()
    reopened = open_store(settings, environ={})  # a fresh owner needs only the new key
    assert reopened.get_secrets("src-000") == {"password": "pw-0"}
    reopened.close()
    reader.close()

    actions = [e.action for e in populated.query_audit(action=None, limit=100)]
    assert actions.count("keys.rotate") == 2 and "keys.retire" in actions


def test_a_wrong_key_is_a_clear_start_up_error(
    settings: DatawaveSettings, populated: MetadataStore
) -> None:
    held = blob_kek_id(next(iter(stored_blobs(populated).values())))
    wrong = secrets.token_bytes(32)
    write_key_file(settings.resolved_key_file, wrong)

    with pytest.raises(ConfigError) as err:
        open_store(settings, environ={})

    msg = err.value.message
    assert "the key-encryption key does not match this store" in msg
    assert f"kek id {kek_id(wrong)}" in msg and f"store holds {held}" in msg
    assert wrong.hex() not in msg
    assert err.value.context["field"] == "key_file"


def test_a_missing_key_is_never_replaced_by_a_fresh_one(
    settings: DatawaveSettings, populated: MetadataStore
) -> None:
    settings.resolved_key_file.unlink()

    with pytest.raises(ConfigError) as err:
        open_store(settings, environ={})  # dev profile, but the store holds sealed secrets

    assert err.value.message.startswith("key_file:")
    assert not settings.resolved_key_file.exists()


def test_a_key_matching_by_id_but_not_by_content_is_refused(
    settings: DatawaveSettings, populated: MetadataStore
) -> None:
    from sqlalchemy import update

    from datawave.datasource.store.tables import sources

    blob = bytearray(stored_blobs(populated)["src-000"])
    blob[30] ^= 0xFF  # inside the wrapped data key: the kek id still matches
    with populated.begin() as conn:  # the check opens one blob per kek id: leave only this one
        conn.execute(update(sources).where(sources.c.id != "src-000").values(secrets=None))
        conn.execute(update(sources).where(sources.c.id == "src-000").values(secrets=bytes(blob)))

    with pytest.raises(ConfigError, match="does not open"):
        open_store(settings, environ={})


def test_env_provider_store_opens_and_a_missing_variable_fails(
    settings: DatawaveSettings, populated: MetadataStore
) -> None:
    key = read_key_file(settings.resolved_key_file)
    env_settings = settings.model_copy(
        update={"secrets": settings.secrets.model_copy(update={"kek_provider": "env"})}
    )

    store = open_store(env_settings, environ={"DATAWAVE_KEK": key.hex()})
    assert store.get_secrets("src-001") == {"password": "pw-1"}
    store.close()
    with pytest.raises(ConfigError) as err:
        open_store(env_settings, environ={})
    assert err.value.context["field"] == "secrets.kek_env"


def test_rotate_refuses_to_install_a_key_for_the_env_provider(
    settings: DatawaveSettings, populated: MetadataStore
) -> None:
    key = read_key_file(settings.resolved_key_file)
    env = {**env_for(settings), "DATAWAVE_SECRETS__KEK_PROVIDER": "env", "DATAWAVE_KEK": key.hex()}
    proc = subprocess.run([DATAWAVE, "keys", "rotate", "--generate"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip

    assert proc.returncode == 2
    assert "not managed by datawave" in " ".join(proc.stderr.split())
    assert {blob_kek_id(b) for b in stored_blobs(populated).values()} == {kek_id(key)}
