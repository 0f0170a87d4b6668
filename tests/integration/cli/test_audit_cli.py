"""`datawave audit verify | head | list`, run as the real command against a SQLite store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.engines import SourceService
from datawave.datasource.security.audit import GENESIS
from datawave.datasource.store import AesGcmSealer, AuditDraft, MetadataStore

DATAWAVE = str(Path(sys.executable).with_name("datawave"))


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATAWAVE_DATA_DIR": str(tmp_path / "data"),
        "DATAWAVE_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
    }


@pytest.fixture
def store(env):
    s = MetadataStore.open(env["DATAWAVE_STORE_URL"], sealer=AesGcmSealer(b"k" * 32))
    yield s
    s.close()


def dw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DATAWAVE, "audit", *args], env=env, capture_output=True, text=True, timeout=120
    )


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def filled(store, tmp_path) -> dict[str, str]:
    """Six entries over the last three hours, two about the source `shop`."""
    shop = SourceService(store, ConnectorRegistry(), shards=1).register(
        {"name": "shop", "type": "sqlite", "config": {"path": str(tmp_path / "shop.sqlite")}}
    )
    now = datetime.now(UTC)
    store.append_audit_many([
        AuditDraft("auth.failed", "anonymous", "denied", target="/v1/sources",
                   detail={"reason": "expired"}, at=now - timedelta(hours=3)),
        AuditDraft("source.create", "apikey:ops", source_id=shop.id, at=now - timedelta(hours=2)),
        AuditDraft("credential.use", "system:owner-0", source_id=shop.id,
                   detail={"purpose": "test"}, at=now - timedelta(minutes=90)),
        AuditDraft("apikey.create", "apikey:admin", target="key-1", at=now - timedelta(minutes=50)),
        AuditDraft("auth.failed", "anonymous", "denied", detail={"reason": "bad_signature"},
                   at=now - timedelta(minutes=20)),
        AuditDraft("source.update", "apikey:ops", "failed", target="other",
                   at=now - timedelta(minutes=5)),
    ])  # fmt: skip
    return {"shop": shop.id}


def test_verify_passes_on_an_intact_log_and_prints_its_head(env, store, filled):
    seq, digest = store.audit_head()

    proc = dw(env, "verify")

    assert proc.returncode == 0, proc.stderr
    assert flat(proc.stdout) == f"audit log verified: 6 entries, head {seq}:{digest}"


def test_head_prints_seq_and_hash_for_expect_head(env, store, filled):
    head = dw(env, "head")
    assert head.returncode == 0, head.stderr
    seq, digest = store.audit_head()
    assert head.stdout.strip() == f"{seq}:{digest}"
    as_json = json.loads(dw(env, "head", "--json").stdout)
    assert as_json == {"seq": seq, "hash": digest, "head": f"{seq}:{digest}"}

    ok = dw(env, "verify", "--expect-head", head.stdout.strip())
    assert ok.returncode == 0, ok.stderr
    assert "matches the recorded head 6" in flat(ok.stdout)


def test_a_cut_off_tail_fails_only_against_the_recorded_head(env, store, filled):
    recorded = dw(env, "head").stdout.strip()
    with sqlite3.connect(env["DATAWAVE_STORE_URL"].split("///", 1)[1]) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq >= 5")

    assert dw(env, "verify").returncode == 0
    proc = dw(env, "verify", "--expect-head", recorded)

    assert proc.returncode == 1
    assert "first at seq 5" in flat(proc.stderr)
    assert "truncated" in flat(proc.stderr)


def test_verify_json_lists_every_problem(env, store, filled):
    with sqlite3.connect(env["DATAWAVE_STORE_URL"].split("///", 1)[1]) as conn:
        conn.execute("UPDATE audit_log SET outcome = 'ok' WHERE seq = 1")
        conn.execute("DELETE FROM audit_log WHERE seq = 4")

    proc = dw(env, "verify", "--json")

    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["checked"] == 5
    assert [(p["seq"], p["kind"]) for p in report["problems"]] == [(1, "hash"), (4, "missing")]


@pytest.mark.parametrize("head", ["7", "x:abc", f"3:{'Z' * 64}"])
def test_a_malformed_expect_head_is_bad_input(env, store, head):
    proc = dw(env, "verify", "--expect-head", head)

    assert proc.returncode == 2
    assert "SEQ:HASH" in flat(proc.stderr)
    assert "Traceback" not in proc.stderr


def test_an_empty_log_has_the_genesis_head(env, store):
    head = dw(env, "head")

    assert head.stdout.strip() == f"0:{GENESIS}"
    assert dw(env, "verify", "--expect-head", head.stdout.strip()).returncode == 0


def test_list_filters_by_principal_source_action_and_time(env, store, filled):
    def seqs(*args: str) -> list[int]:
        proc = dw(env, "list", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return [e["seq"] for e in json.loads(proc.stdout)]

    assert seqs() == [1, 2, 3, 4, 5, 6]
    assert seqs("--principal", "apikey:ops") == [2, 6]
    assert seqs("--source", "shop") == [2, 3]
    assert seqs("--source", filled["shop"]) == [2, 3]
    assert seqs("--action", "auth.*") == [1, 5]
    assert seqs("--action", "credential.use") == [3]
    assert seqs("--since", "1h") == [4, 5, 6]
    assert seqs("--since", "150m", "--until", "30m") == [2, 3, 4]
    assert seqs("--limit", "2") == [5, 6]  # the newest, oldest of them first
    assert seqs("--principal", "nobody") == []


def test_list_renders_a_table_with_source_names(env, store, filled):
    proc = dw({**env, "COLUMNS": "200"}, "list", "--source", "shop")

    assert proc.returncode == 0, proc.stderr
    out = flat(proc.stdout)
    assert "credential.use" in out and "shop" in out and '{"purpose":"test"}' in out
    assert "auth.failed" not in out


@pytest.mark.parametrize("arg", ["--since", "--until"])
def test_list_rejects_an_unreadable_time(env, store, arg):
    proc = dw(env, "list", arg, "yesterday")

    assert proc.returncode == 2
    assert "expected a time like 30m, 2h, 7d" in flat(proc.stderr)
    assert "Traceback" not in proc.stderr


def test_a_store_without_the_audit_table_is_a_clear_error(env, tmp_path):
    env = {**env, "DATAWAVE_STORE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}

    proc = dw(env, "verify")

    assert proc.returncode == 1
    assert "no audit log in the store" in flat(proc.stderr)
    assert "datawave up" in proc.stderr and "Traceback" not in proc.stderr
