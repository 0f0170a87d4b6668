"""Unit tests run without network or Ray: starting Ray here is a bug in the test."""

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import ray
    except ImportError:
        return

    def refuse(*_a: object, **_k: object) -> None:
        raise RuntimeError("unit tests must not start Ray (move the test to tests/integration)")

    monkeypatch.setattr(ray, "init", refuse)
