"""The API on the session's Ray core: Serve is started once for this package, on a free loopback
port, and removed (with the event hub) when the package's tests are done.

Auth is on as `datawave up` deploys it, plus what production would configure: an OIDC issuer
(a real local JWKS endpoint, :class:`tests.fixtures.jwks.JwksServer`) and a custom role
``auditor`` (audit:read only). ``http`` / ``ahttp`` send the bootstrap admin key; the keys of
the other roles are in ``api_keys`` (tests/fixtures/core.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from datawave.datasource.config import DatawaveSettings, OidcSettings
from tests.fixtures.api import bearer, deploy_ready, make_sqlite, undeploy
from tests.fixtures.jwks import JwksServer, SigningKey, rsa_key

#: Small enough that an oversized credential still fits the HTTP and WebSocket header limits.
MAX_CREDENTIAL_BYTES = 4096


@pytest.fixture(scope="package")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture(scope="package")
def idp_key(jwks: JwksServer) -> SigningKey:
    key = rsa_key("api-rsa-1")
    jwks.publish(key)
    return key


@pytest.fixture(scope="package")
def api_settings(core_settings: DatawaveSettings, jwks: JwksServer) -> DatawaveSettings:
    oidc = OidcSettings(issuer=jwks.issuer, audience="datawave", jwks_url=jwks.jwks_url,
                        jwks_min_refresh_s=0, leeway_s=0)  # fmt: skip
    auth = core_settings.auth.model_copy(update={
        "oidc": oidc, "custom_roles": {"auditor": ["audit:read"]},
        "max_credential_bytes": MAX_CREDENTIAL_BYTES})  # fmt: skip
    return core_settings.model_copy(update={"auth": auth})


@pytest.fixture(scope="package")
def api_url(core: dict[str, object], api_settings: DatawaveSettings, idp_key: SigningKey,
            api_keys: dict[str, str]) -> Iterator[str]:  # fmt: skip
    yield deploy_ready(api_settings, replicas=2)
    undeploy(api_settings)


@pytest.fixture(scope="package")
def http(api_url: str, api_keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=60, headers=bearer(api_keys["admin"])) as c:
        yield c


@pytest.fixture
async def ahttp(api_url: str, api_keys: dict[str, str]):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(
        base_url=api_url, timeout=60, headers=bearer(api_keys["admin"])
    ) as c:
        yield c


@pytest.fixture(scope="package")
def anon(api_url: str) -> Iterator[httpx.Client]:
    """No credential at all; pass ``headers=`` per request."""
    with httpx.Client(base_url=api_url, timeout=60) as c:
        yield c


def unique(prefix: str = "api") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sqlite_source(http: httpx.Client, tmp_path: Path) -> dict[str, object]:
    """A registered SQLite source (3 tables), not yet discovered."""
    db = make_sqlite(tmp_path / "shop.sqlite")
    r = http.post(
        "/v1/sources",
        json={
            "name": unique(),
            "type": "sqlite",
            "config": {"path": str(db)},
            "labels": {"suite": "api"},
        },
    )
    assert r.status_code == 201, r.text
    return {**r.json(), "path": str(db)}


def wait_job(http: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = http.get(f"/v1/jobs/{job_id}").json()
        if view["status"] not in ("pending", "running"):
            return dict(view)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running")


def discover(http: httpx.Client, ref: str) -> dict[str, object]:
    r = http.post(f"/v1/sources/{ref}/discover")
    assert r.status_code == 202, r.text
    return wait_job(http, r.json()["id"])
