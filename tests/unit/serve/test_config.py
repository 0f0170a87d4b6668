"""serve/config.yaml is a valid Serve config whose import path builds the API; the OpenAPI
document advertises problem+json for every error."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[3] / "serve" / "config.yaml"


def test_serve_config_is_valid_and_explicit():
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(CONFIG.read_text())
    cfg = ServeDeploySchema.model_validate(doc)
    app = cfg.applications[0]
    assert app.name == "datawave" and app.route_prefix == "/"
    module, attr = app.import_path.split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    dep = doc["applications"][0]["deployments"][0]
    assert dep["name"] == "datawave-api" and dep["max_ongoing_requests"] > 0
    auto = dep["autoscaling_config"]
    assert 1 <= auto["min_replicas"] <= auto["initial_replicas"] <= auto["max_replicas"]
    assert doc["http_options"]["host"] == "127.0.0.1"


async def test_openapi_errors_are_problem_json(api):
    spec = (await api.get("/openapi.json")).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if status[0] in "45":
                    assert list(resp["content"]) == ["application/problem+json"], (
                        path,
                        method,
                        status,
                    )
