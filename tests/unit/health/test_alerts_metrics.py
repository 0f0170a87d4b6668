"""Alert rules, dedup, settings validation and metric merging (no network, no Ray)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from datawave.datasource.actors.metrics import Metrics, merge_expositions
from datawave.datasource.config import AlertRule, load_settings
from datawave.datasource.engines.alerts import AlertEngine, AlertInputs, SourceInfo
from datawave.datasource.errors import ConfigError
from datawave.datasource.store import HealthStatus, MetadataStore


@pytest.fixture
def store(tmp_path):
    s = MetadataStore.open(f"sqlite:///{tmp_path / 'dw.db'}")
    yield s
    s.close()


def test_bad_rules_are_config_errors_naming_the_field():
    with pytest.raises(ConfigError) as e:
        load_settings(health={"rules": [{"name": "x", "metric": "cpu", "threshold": 1}]})
    assert e.value.context["fields"] == ["health.rules.0.metric"]
    with pytest.raises(ConfigError) as e:
        load_settings(health={"rules": [{"name": "y", "metric": "latency_p95", "threshold": -5}]})
    assert e.value.context["fields"] == ["health.rules.0.threshold"]
    with pytest.raises(ConfigError):
        load_settings(
            health={"rules": [{"name": "z", "metric": "source_down", "threshold": 1}] * 2}
        )


def test_rules_fire_once_and_resolve(store):
    rules = [AlertRule(name="down", metric="source_down", threshold=5),
             AlertRule(name="slow", metric="latency_p95", threshold=100, window_s=60),
             AlertRule(name="disc", metric="discovery_failing", threshold=3),
             AlertRule(name="edge", metric="edge_offline", threshold=1),
             AlertRule(name="drift", metric="breaking_drift", threshold=1, labels={"tier": "1"})]  # fmt: skip
    events = []
    eng = AlertEngine(rules, store, sink=events.append)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    src = {"a": SourceInfo("a", "alpha", {"tier": "1"}), "b": SourceInfo("b", "beta", {})}
    down = HealthStatus(source_id="a", state="down", since=now - timedelta(minutes=6))
    inp = AlertInputs(now=now, sources=src, health={"a": down},
                      p95_ms={("b", 60.0): 250.0}, discovery_streaks={"b": 3},
                      breaking_drift={("a", 60.0): 0, ("b", 60.0): 2, ("a", 900.0): 0},
                      edge_links={"n1": ("down", now - timedelta(minutes=2))})  # fmt: skip
    fired, resolved = eng.evaluate(inp)
    assert sorted(a.key for a in fired) == ["disc:b", "down:a", "edge:edge:n1", "slow:b"]
    assert resolved == []
    assert eng.evaluate(inp) == ([], [])  # dedup
    again = AlertEngine(rules, store)  # open alerts survive a restart
    assert again.evaluate(inp) == ([], [])
    inp.health = {"a": HealthStatus(source_id="a", state="healthy", since=now)}
    fired, resolved = eng.evaluate(inp)
    assert fired == [] and [a.key for a in resolved] == ["down:a"]
    assert [e.type for e in events].count("alert.resolved") == 1
    assert {a.key for a in store.list_alerts(status="firing")} == {
        "disc:b",
        "edge:edge:n1",
        "slow:b",
    }


def test_metrics_text_and_merge():
    a, b = Metrics(), Metrics()
    a.checks.labels("postgresql", "healthy").inc(3)
    b.checks.labels("postgresql", "healthy").inc(2)
    b.checks.labels("sqlite", "down").inc()
    a.observe_api("/v1/sources", "GET", 200, 0.01)
    b.observe_api("/v1/sources", "GET", 500, 0.2, code="store_error")
    merged = merge_expositions([a.render(), b.render()]).decode()
    assert 'datawave_health_checks_total{state="healthy",type="postgresql"} 5.0' in merged
    assert 'datawave_health_checks_total{state="down",type="sqlite"} 1.0' in merged
    assert (
        'datawave_api_request_duration_seconds_count{method="GET",route="/v1/sources"} 2.0'
        in merged
    )
    assert 'datawave_api_errors_total{code="store_error",route="/v1/sources"} 1.0' in merged
    assert merged.count("# TYPE datawave_health_checks_total counter") == 1
