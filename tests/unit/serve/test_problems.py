"""The one error table: every error in errors.py has a status and a problem+json shape."""

from __future__ import annotations

import pickle

import pytest

from datawave.datasource import errors
from datawave.datasource.serve.problems import (
    STATUS_BY_CODE,
    Unavailable,
    field_errors,
    from_error,
    status_for,
)


def _all_errors() -> list[type[errors.DatawaveError]]:
    out, todo = [], [errors.DatawaveError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


@pytest.mark.parametrize("cls", _all_errors(), ids=lambda c: c.__name__)
def test_every_error_has_a_status(cls):
    """errors.py codes are in the one table; subclasses defined elsewhere resolve via the MRO."""
    if cls.__module__ == errors.__name__:
        assert cls.code in STATUS_BY_CODE, f"{cls.__name__}.code {cls.code!r} has no HTTP status"
    assert 400 <= status_for(cls.__new__(cls)) < 600


def test_statuses():
    assert status_for(errors.NotFound("x")) == 404
    assert status_for(errors.ValidationFailed("x")) == 422
    assert status_for(errors.ConnectorTimeout("x")) == 504
    assert status_for(errors.StoreError("x")) == 503
    assert status_for(Unavailable("x")) == 503


def test_problem_body_keeps_fields_and_survives_pickling():
    exc = pickle.loads(
        pickle.dumps(
            errors.ValidationFailed(
                "bad",
                errors=[{"field": "config.port", "message": "not int", "type": "int_parsing"}],
            )
        )
    )
    resp = from_error(exc, "/v1/sources")
    assert resp.status_code == 422 and resp.media_type == "application/problem+json"
    import json

    body = json.loads(resp.body)
    assert body["code"] == "validation_failed" and body["instance"] == "/v1/sources"
    assert body["errors"][0]["field"] == "config.port"


def test_field_errors_drop_body_prefix():
    out = field_errors(
        [
            {"loc": ("body", "config", "port"), "msg": "bad", "type": "int_parsing"},
            {"loc": ("query", "limit"), "msg": "too small", "type": "greater_than_equal"},
        ]
    )
    assert [(e["field"], e["in"]) for e in out] == [("config.port", "body"), ("limit", "query")]
