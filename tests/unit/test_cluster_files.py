"""The deployment files under actors/ and cluster/ are valid YAML of the expected shape."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
YAML_FILES = sorted(
    p.relative_to(ROOT) for d in ("actors", "cluster") for p in (ROOT / d).rglob("*.y*ml")
)


def _load(rel: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all((ROOT / rel).read_text()) if d is not None]


def test_the_expected_files_exist() -> None:
    assert {str(p) for p in YAML_FILES} >= {
        "actors/topology.yaml",
        "cluster/ray-cluster.yaml",
        "cluster/kuberay-raycluster.yaml",
    }


@pytest.mark.parametrize("rel", YAML_FILES, ids=str)
def test_every_yaml_file_parses_to_mappings(rel: Path) -> None:
    docs = _load(rel)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_launcher_config_matches_rays_schema() -> None:
    (cfg,) = _load(Path("cluster/ray-cluster.yaml"))
    schema = json.loads((files("ray.autoscaler") / "ray-schema.json").read_text())

    jsonschema.validate(cfg, schema)

    assert cfg["cluster_name"]
    assert any("datawave-datasource[all]" in c for c in cfg["setup_commands"])
    head = " ".join(cfg["head_start_ray_commands"])
    workers = " ".join(cfg["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "--dashboard-host=127.0.0.1" in head


def test_kuberay_manifest_enables_token_auth_and_reads_secrets() -> None:
    docs = _load(Path("cluster/kuberay-raycluster.yaml"))
    (rc,) = [d for d in docs if d.get("kind") == "RayCluster"]
    assert rc["apiVersion"] == "ray.io/v1"
    spec = rc["spec"]
    assert spec["authOptions"]["mode"] == "token"

    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    assert len(pods) >= 2
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        env = {e["name"]: e for e in container.get("env", [])}
        store = env["DATAWAVE_STORE_URL"]
        assert "value" not in store and store["valueFrom"]["secretKeyRef"]["name"]
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
