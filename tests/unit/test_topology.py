"""actors/topology.yaml is a real, loadable topology, and a bad one is refused by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from datawave.datasource.config import OwnerSettings, load_settings
from datawave.datasource.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "actors" / "topology.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the file under test may shape the owners section."""
    for key in list(os.environ):
        if key.startswith("DATAWAVE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DATAWAVE_DATA_DIR", str(tmp_path))


def _write(tmp_path: Path, owners: dict[str, object]) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump({"owners": owners}))
    return path


def test_topology_file_sets_every_owner_field() -> None:
    doc = yaml.safe_load(TOPOLOGY.read_text())
    assert set(doc) == {"owners"}
    assert set(doc["owners"]) == set(OwnerSettings.model_fields)  # every knob is documented

    settings = load_settings(topology_file=TOPOLOGY)

    assert settings.owners.model_dump() == doc["owners"]
    assert settings.owners != OwnerSettings()  # the file changed something, not just defaults


def test_environment_wins_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAWAVE_OWNERS__SHARDS", "3")

    settings = load_settings(topology_file=TOPOLOGY)

    from_file = yaml.safe_load(TOPOLOGY.read_text())["owners"]
    assert settings.owners.shards == 3
    assert settings.owners.job_concurrency == from_file["job_concurrency"]


def test_bad_value_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, {"shards": 0})

    with pytest.raises(ConfigError) as e:
        load_settings(topology_file=path)

    assert "greater than or equal to 1" in str(e.value)
    assert any(f.endswith("shards") for f in e.value.context["fields"])


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, {"shard": 3})

    with pytest.raises(ConfigError, match="shard"):
        load_settings(topology_file=path)


def test_bad_value_names_the_dotted_field(tmp_path: Path) -> None:
    path = _write(tmp_path, {"shards": 0})

    with pytest.raises(ConfigError) as e:
        load_settings(topology_file=path)

    assert "owners.shards" in str(e.value)
    assert "owners.shards" in e.value.context["fields"]


@pytest.mark.parametrize(("shards", "processes"), [(4, 0), (4, 1), (4, 3), (8, 8), (3, 8)])
def test_every_shard_is_hosted_by_exactly_one_process(shards: int, processes: int) -> None:
    from datawave.datasource.actors.factory import (
        CORE_NAME,
        hosted_shards,
        owner_actor_name,
        owner_name,
    )

    settings = load_settings(owners={"shards": shards, "processes": processes})
    count = settings.owners.process_count

    assert count == min(processes, shards)  # never a process without a shard
    hosts = {CORE_NAME: hosted_shards(None, settings)}
    hosts |= {owner_name(p): hosted_shards(p, settings) for p in range(count)}
    assert sorted(s for held in hosts.values() for s in held) == list(range(shards))
    for name, held in hosts.items():
        assert all(owner_actor_name(s, count) == name for s in held)  # callers find the host
    assert bool(hosts[CORE_NAME]) == (count == 0)


def test_processes_default_keeps_the_core_in_one_process() -> None:
    assert OwnerSettings().processes == 0
    assert load_settings().owners.process_count == 0
