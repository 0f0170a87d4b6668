"""Config rendering for the hub and the leaves; the real binary only parses (``-t``), no sockets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from datawave.datasource.config import NatsSettings
from datawave.datasource.edge.natsproc import (
    HUB_TEMPLATE,
    LEAF_TEMPLATE,
    HubConfig,
    LeafConfig,
    edge_inbox_prefix,
    edge_permissions,
    edge_subject_prefix,
    find_nats_server,
    render_config,
    template_text,
)
from datawave.datasource.edge.tokens import EdgeCredentials
from datawave.datasource.errors import ConfigError, EdgeError

REPO = Path(__file__).resolve().parents[3]


def creds(site: str, password: str = "pw-" + "x" * 29) -> EdgeCredentials:
    return EdgeCredentials(
        site=site,
        node="n1",
        user=f"edge-{site}",
        password=password,
        leaf_url="nats-leaf://127.0.0.1:17422",
    )


def hub(tmp_path: Path, *edges: EdgeCredentials) -> HubConfig:
    return HubConfig(
        store_dir=tmp_path / "js",
        core_password="core-secret-123456",
        edges=edges,
        client_port=14001,
        leaf_port=17422,
        http_port=18001,
    )


def nats_parses(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "check.conf"
    conf.write_text(text)
    return subprocess.run(
        [str(find_nats_server()), "-c", str(conf), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("packaged", "copy"),
    [(HUB_TEMPLATE, "cluster/nats-hub.conf.tmpl"), (LEAF_TEMPLATE, "edge/leaf.conf.tmpl")],
)
def test_top_level_templates_are_identical_copies(packaged: str, copy: str) -> None:
    assert (REPO / copy).read_text() == template_text(packaged)


def test_edge_permissions_confine_an_edge_to_its_subjects_and_inboxes() -> None:
    assert edge_subject_prefix("A") == "dw.edge.A"
    assert edge_inbox_prefix("A") == "_INBOX.edge.A"
    assert edge_permissions("A") == {
        "publish": {"allow": ["dw.edge.A.>", "_INBOX.>"], "deny": ["_INBOX.edge.>"]},
        "subscribe": {"allow": ["dw.edge.A.>", "_INBOX.edge.A.>"]},
    }
    with pytest.raises(ConfigError):
        edge_permissions("A.>")


def test_hub_config_lists_core_and_one_leaf_only_user_per_edge(tmp_path: Path) -> None:
    text = render_config(hub(tmp_path, creds("B"), creds("A")))

    assert 'listen: "127.0.0.1:14001"' in text
    assert 'listen: "127.0.0.1:17422"' in text
    assert 'http: "127.0.0.1:18001"' in text
    assert 'domain: "core"' in text
    assert (
        '{ user: "core", password: "core-secret-123456", allowed_connection_types: ["STANDARD"]'
        in text
    )
    assert text.index('user: "edge-A"') < text.index('user: "edge-B"')  # stable order
    assert text.count('allowed_connection_types: ["LEAFNODE"]') == 2
    assert '"subscribe": {"allow": ["dw.edge.B.>", "_INBOX.edge.B.>"]}' in text
    assert "$" not in text  # every placeholder substituted


def test_rendered_configs_parse_with_the_real_binary(tmp_path: Path) -> None:
    hub_text = render_config(hub(tmp_path, creds("A"), creds("B")))
    leaf_text = render_config(
        LeafConfig(creds("A"), tmp_path / "leaf-js", client_port=14002, http_port=18002)
    )

    for text in (hub_text, leaf_text):
        res = nats_parses(tmp_path, text)
        assert res.returncode == 0, res.stderr


def test_leaf_config_dials_the_hub_with_the_edge_credentials(tmp_path: Path) -> None:
    c = creds("A", password="p@ss/word:with-odd-chars")
    text = render_config(
        LeafConfig(c, tmp_path / "js", client_port=14002, http_port=18002, reconnect_s=0.5)
    )

    assert 'listen: "127.0.0.1:14002"' in text  # local clients: loopback only
    assert 'domain: "edge-A"' in text
    assert 'server_name: "dw-edge-A-n1"' in text
    assert 'reconnect: "0.5s"' in text
    assert 'url: "nats-leaf://edge-A:p%40ss%2Fword%3Awith-odd-chars@127.0.0.1:17422"' in text


def test_permissions_inside_leafnodes_authorization_are_rejected_by_nats_server(
    tmp_path: Path,
) -> None:
    # Why edge users live in the top-level authorization block: the obvious place refuses them.
    res = nats_parses(
        tmp_path,
        'leafnodes { port: 17422, authorization { users = [ { user: "e", password: "p", '
        'permissions: { publish: ["x"] } } ] } }',
    )
    assert res.returncode != 0
    assert 'unknown field "permissions"' in (res.stderr + res.stdout)


def test_values_are_quoted_and_control_characters_refused(tmp_path: Path) -> None:
    text = render_config(hub(tmp_path, creds("A", password='quote"and\\slash-0123456789')))
    assert 'password: "quote\\"and\\\\slash-0123456789"' in text
    with pytest.raises(EdgeError, match="control characters"):
        render_config(hub(tmp_path, creds("A", password="line\nbreak-0123456789")))


def test_duplicate_edge_users_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EdgeError, match="duplicate hub user"):
        render_config(hub(tmp_path, creds("A"), creds("A")))


def test_hub_config_from_settings(tmp_path: Path) -> None:
    cfg = HubConfig.from_settings(
        NatsSettings(url=None, host="0.0.0.0", client_port=4300, leaf_port=7500, domain="hq"),
        store_dir=tmp_path,
        core_password="secret-123456",
    )
    assert (cfg.host, cfg.leaf_host, cfg.client_port, cfg.leaf_port, cfg.domain) == (
        "0.0.0.0",
        "0.0.0.0",
        4300,
        7500,
        "hq",
    )
    assert "secret" not in repr(cfg)


def test_binary_comes_from_the_wheel_and_a_missing_one_is_named(tmp_path: Path) -> None:
    assert find_nats_server().name == "nats-server"
    with pytest.raises(EdgeError, match="nats-server binary not found"):
        find_nats_server(tmp_path / "nope")
