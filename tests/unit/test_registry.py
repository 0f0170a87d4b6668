"""Connector plugins load from entry points; a missing driver disables, never crashes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.errors import ConnectorDisabled, NotFound

GROUP = "datawave.test_connectors"


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real installed distribution (dist-info on sys.path) declaring two plugins: one whose
    driver import fails and one that works."""
    (tmp_path / "dw_fake_plugins.py").write_text(
        "from datawave.datasource.connectors.sqlite import SQLiteConnector as Works\n"
    )
    (tmp_path / "dw_needs_driver.py").write_text("import dw_driver_that_is_not_installed\n")
    info = tmp_path / "dw_fake_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dw-fake-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{GROUP}]\noracle = dw_needs_driver:OracleConnector\nsqlite = dw_fake_plugins:Works\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in ("dw_fake_plugins", "dw_needs_driver"):
        sys.modules.pop(mod, None)


def test_missing_driver_is_listed_disabled_with_the_extra(plugin_dist: Path) -> None:
    reg = ConnectorRegistry(group=GROUP)
    plugins = {p.name: p for p in reg.list()}
    assert plugins["sqlite"].enabled
    oracle = plugins["oracle"]
    assert not oracle.enabled
    assert "dw_driver_that_is_not_installed" in (oracle.reason or "")
    assert "pip install 'datawave-datasource[oracle]'" in (oracle.reason or "")
    with pytest.raises(ConnectorDisabled, match="datawave-datasource\\[oracle\\]"):
        reg.get("oracle")
    with pytest.raises(NotFound):
        reg.get("nope")


def test_builtin_connectors_are_enabled() -> None:
    names = {p.name: p.enabled for p in ConnectorRegistry().list()}
    assert names == {"files": True, "mysql": True, "postgresql": True, "sqlite": True}
