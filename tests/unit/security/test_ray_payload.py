"""What crosses into Ray: settings without the store password; the head's bind flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datawave.datasource.actors.payload import (
    is_masked,
    local_settings,
    mask_store_url,
    remote_settings,
    store_url_for,
)
from datawave.datasource.actors.raynet import LOCAL_ONLY_ENV, is_loopback, ray_bind_env
from datawave.datasource.cli.core import ray_head_command
from datawave.datasource.config import load_settings
from datawave.datasource.errors import ConfigError

PASSWORD = "s3cr@t-dw-store"
URL = "postgresql+psycopg://dw:s3cr%40t-dw-store@db.internal:5432/meta?sslmode=require"


def test_actor_settings_never_carry_the_store_password(tmp_path: Path) -> None:
    payload = remote_settings(load_settings(data_dir=tmp_path, store_url=URL))

    text = json.dumps(payload)
    assert PASSWORD not in text and "s3cr%40t" not in text
    assert is_masked(payload["store_url"])
    assert "db.internal:5432/meta" in payload["store_url"]


@pytest.mark.parametrize(
    "url",
    ["sqlite:////data/datawave.db", "postgresql+psycopg://postgres@127.0.0.1:5432/test"],
)
def test_urls_without_a_password_pass_unchanged(url: str) -> None:
    assert mask_store_url(url) == url and not is_masked(url)


def test_a_query_string_password_is_masked_too() -> None:
    masked = mask_store_url("postgresql+psycopg://dw@db/meta?password=hunter2&sslmode=require")

    assert "hunter2" not in masked and "sslmode=require" in masked and is_masked(masked)


def test_the_actor_restores_the_password_from_its_own_environment(tmp_path: Path) -> None:
    payload = remote_settings(load_settings(data_dir=tmp_path, store_url=URL))

    inside = local_settings(payload, {"DATAWAVE_STORE_URL": URL.replace("+psycopg", "")})

    assert inside.resolved_store_url == URL


def test_or_from_the_store_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "store_password"
    pw.write_text(PASSWORD + "\n")
    settings = load_settings(data_dir=tmp_path, store_url=URL,
                             secrets={"store_password_file": str(pw)})  # fmt: skip

    inside = local_settings(remote_settings(settings), {})

    assert inside.resolved_store_url == URL


def test_an_environment_url_for_another_store_is_not_used(tmp_path: Path) -> None:
    payload = remote_settings(load_settings(data_dir=tmp_path, store_url=URL))
    other = URL.replace("db.internal", "elsewhere")

    with pytest.raises(ConfigError) as err:
        local_settings(payload, {"DATAWAVE_STORE_URL": other})

    assert err.value.context["field"] == "store_url" and PASSWORD not in err.value.message


def test_a_driver_uses_its_own_settings_for_the_masked_topology_url(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, store_url=URL)

    assert store_url_for(mask_store_url(URL), settings) == URL
    assert store_url_for("sqlite:////x/datawave.db", settings) == "sqlite:////x/datawave.db"


@pytest.mark.parametrize(("host", "local"), [("127.0.0.1", True), ("localhost", True),
                                             ("::1", True), ("10.0.0.5", False)])  # fmt: skip
def test_loopback_binding_switches_ray_to_single_machine_mode(
    tmp_path: Path, host: str, local: bool
) -> None:
    settings = load_settings(data_dir=tmp_path, ray={"bind_host": host})

    assert is_loopback(host) is local
    assert ray_bind_env(settings) == ({LOCAL_ONLY_ENV: "0"} if local else {})
    cmd = ray_head_command(settings, port=6380, dashboard_port=8266)
    assert f"--node-ip-address={host}" in cmd
    assert "--dashboard-host=127.0.0.1" in cmd and "--port=6380" in cmd


@pytest.mark.parametrize(
    ("address", "recorded", "local"),
    [
        ("127.0.0.1:6379", None, True),  # a `datawave up` core
        ("10.0.0.5:6379", None, False),  # a cluster: its nodes are not on loopback
        ("ray://10.0.0.5:10001", None, False),
        ("auto", "127.0.0.1:40001", True),  # resolved like connect(): the recorded core
        ("auto", None, False),  # a cluster's own node (`ray job submit`, `datawave deploy`)
    ],
)
def test_drivers_switch_to_single_machine_mode_only_for_a_loopback_head(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    address: str,
    recorded: str | None,
    local: bool,
) -> None:
    from datawave.datasource.actors.client import ray_env

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = load_settings(data_dir=tmp_path)
    if recorded:
        settings.state_file.write_text(json.dumps({"ray_address": recorded}))

    env = ray_env(settings, address)

    assert env["RAY_AUTH_MODE"] == "token"
    assert (env.get(LOCAL_ONLY_ENV) == "0") is local
