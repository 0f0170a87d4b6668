"""Schemathesis against the OpenAPI document, in process (the app object, no network, no Ray).

Bounded: ``MAX_EXAMPLES`` per operation (over 1,000 cases in all), a per-case deadline and the
pytest timeout. Checked on every response: no 5xx, every error is problem+json with a stable
code, responses match the documented schemas and content types. Auth is on: cases carry an
admin API key, so they reach the routes rather than stopping at the 401.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its TestClient
    warnings.simplefilter("ignore")
    import starlette.testclient  # noqa: F401

from datawave.datasource.config import load_settings
from datawave.datasource.security import Grant
from datawave.datasource.serve.app import create_app
from datawave.datasource.serve.local import LocalBackend

MAX_EXAMPLES = 60
_data = Path(tempfile.mkdtemp(prefix="dw-fuzz-"))
_settings = load_settings(data_dir=_data, owners={"shards": 2}, api={"max_body_bytes": 65536})
app = create_app(LocalBackend(_settings), api=_settings.api)
_, _TOKEN = app.state.ctx.auth_store.create_api_key(
    name="fuzz", grants=[Grant(role="admin")], created_by="test"
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
CASES: list[int] = []


def problem_json_errors(ctx, response, case):  # type: ignore[no-untyped-def]
    if response.status_code >= 400:
        ctype = response.headers.get("content-type", [""])
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype.startswith("application/problem+json"), (response.status_code, ctype)
        body = response.json()
        assert body["status"] == response.status_code and body["code"], body


_checks = [
    CHECKS.get_by_names([n])[0]
    for n in ("not_a_server_error", "status_code_conformance", "content_type_conformance",
              "response_schema_conformance")
]  # fmt: skip


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=2000, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_openapi_fuzz(case):  # type: ignore[no-untyped-def]
    CASES.append(1)
    response = case.call(headers={"Authorization": f"Bearer {_TOKEN}"})
    case.validate_response(response, checks=_checks)
    problem_json_errors(None, response, case)


def test_fuzz_ran_enough_cases():
    assert len(CASES) >= 1000, len(CASES)
