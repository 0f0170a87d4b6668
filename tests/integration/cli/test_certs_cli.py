"""`datawave certs` as a subprocess: init, issue, list; the issued pair verifies."""

from __future__ import annotations

import stat
from pathlib import Path

from datawave.datasource.security import Grant
from datawave.datasource.security.certs import principal_from_certificate
from tests.integration.cli.test_apikeys_cli import clean_env, dw, dw_json


def test_init_issue_list(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    data = tmp_path / "data"
    init = dw_json(env, "certs", "init")
    assert init["ca_cert"] == str(data / "ca" / "ca.pem")
    assert stat.S_IMODE((data / "ca" / "ca.key").stat().st_mode) == 0o600

    again = dw(env, "certs", "init")
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr

    svc = dw_json(env, "certs", "issue", "service", "etl", "--role", "operator",
                  "--collection", "finance")  # fmt: skip
    assert svc["cert"] == str(data / "certs" / "etl.pem")
    assert stat.S_IMODE(Path(svc["key"]).stat().st_mode) == 0o600
    p = principal_from_certificate(
        Path(svc["cert"]).read_bytes(), (data / "ca/ca.pem").read_bytes()
    )
    assert p.grants == (Grant(role="operator", collection="finance"),)

    out = tmp_path / "edge-out"
    edge = dw_json(env, "certs", "issue", "edge", "plant-7", "--out-dir", str(out), "--days", "30")
    assert edge["cert"] == str(out / "plant-7.pem") and edge["grants"] == []
    server = dw(
        env, "certs", "issue", "server", "api", "--host", "localhost", "--host", "127.0.0.1"
    )
    assert server.returncode == 0, server.stderr

    listed = dw_json(env, "certs", "list")
    assert [(r["kind"], r["name"]) for r in listed] == [
        ("service", "etl"), ("edge", "plant-7"), ("server", "api"),
    ]  # fmt: skip
    assert "etl" in dw(env, "certs", "list").stdout


def test_refusals(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    proc = dw(env, "certs", "issue", "service", "etl")
    assert proc.returncode == 2 and "datawave certs init" in proc.stderr  # no CA yet
    assert dw(env, "certs", "init").returncode == 0
    for args, message in (
        (["issue", "root", "x"], "kind"),
        (["issue", "service", "x", "--role", "wizard"], "unknown role"),
        (["issue", "service", "x", "--collection", "c"], "need --role"),
        (["issue", "service", "../x"], "name"),
        (["issue", "edge", "x", "--host", "h"], "hosts"),
    ):
        proc = dw(env, "certs", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert dw_json(env, "certs", "list") == []
