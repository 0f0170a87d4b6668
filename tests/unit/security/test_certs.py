"""The small CA: files and modes, what it issues, and the client-certificate check."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from datawave.datasource.errors import ConfigError, Conflict, Unauthenticated, ValidationFailed
from datawave.datasource.security import Grant, Policy
from datawave.datasource.security.certs import (
    CertificateAuthority,
    grants_from_certificate,
    principal_from_asgi_scope,
    principal_from_certificate,
)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", name="test CA", days=30)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _reason(exc: pytest.ExceptionInfo[Unauthenticated]) -> str:
    return str(exc.value.context["reason"])


def test_init_writes_a_private_key_and_never_overwrites(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    ca = CertificateAuthority.init(d)
    assert ca.ca_cert_path == d / "ca.pem" and ca.ca_cert_path.exists()
    assert _mode(d / "ca.key") == 0o600 and _mode(d) == 0o700
    before = (d / "ca.key").read_bytes()
    with pytest.raises(Conflict):
        CertificateAuthority.init(d)
    assert (d / "ca.key").read_bytes() == before
    loaded = CertificateAuthority.load(d)
    assert loaded.cert == ca.cert
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True


def test_load_without_a_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="datawave certs init"):
        CertificateAuthority.load(tmp_path / "nothing")


def test_service_certificate_carries_its_grants(ca: CertificateAuthority, tmp_path: Path) -> None:
    grants = (
        Grant(role="operator", collection="finance/emea"),
        Grant(role="viewer", collection="sales team/ünïcode"),
        Grant(role="viewer", source="orders-db"),
        Grant(role="admin"),
    )
    out = tmp_path / "out"
    issued = ca.issue("service", "etl-1", out_dir=out, days=10, grants=grants)
    assert issued.cert_path == out / "etl-1.pem" and issued.key_path == out / "etl-1.key"
    assert _mode(issued.key_path) == 0o600
    pem = issued.cert_path.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issued.not_after == cert.not_valid_after_utc
    assert grants_from_certificate(cert) == grants

    p = principal_from_certificate(pem, ca.ca_pem)
    assert p.kind == "cert" and p.name == "etl-1"
    assert p.id == f"cert:{issued.fingerprint}" and p.grants == grants
    der = cert.public_bytes(serialization.Encoding.DER)
    assert principal_from_certificate(der, ca.ca_pem) == p
    assert Policy().allows(p, "sources:write", collection="finance/emea/x")
    # the key really belongs to the certificate
    key = serialization.load_pem_private_key(issued.key_path.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_edge_certificate_without_grants_has_no_api_permissions(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    issued = ca.issue("edge", "plant-7", out_dir=tmp_path)
    p = principal_from_certificate(issued.cert_path.read_bytes(), ca.ca_pem)
    assert (p.kind, p.name, p.grants) == ("edge", "plant-7", ())
    assert not Policy().any_scope(p, "sources:read")


def test_server_certificate_has_hosts_and_is_no_client_credential(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    issued = ca.issue("server", "api", out_dir=tmp_path, hosts=["localhost", "127.0.0.1", "::1"])
    cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(Unauthenticated) as exc:
        principal_from_certificate(issued.cert_path.read_bytes(), ca.ca_pem)
    assert _reason(exc) == "cert_untrusted"


def test_a_certificate_from_another_ca_with_the_same_name_is_refused(tmp_path: Path) -> None:
    real = CertificateAuthority.init(tmp_path / "real", name="datawave CA")
    forged = CertificateAuthority.init(tmp_path / "forged", name="datawave CA")
    issued = forged.issue("edge", "plant-7", out_dir=tmp_path / "f", grants=[Grant(role="admin")])
    with pytest.raises(Unauthenticated) as exc:
        principal_from_certificate(issued.cert_path.read_bytes(), real.ca_pem)
    assert _reason(exc) == "cert_untrusted"
    with pytest.raises(Unauthenticated) as exc:  # the CA certificate itself is no client cert
        principal_from_certificate(real.ca_pem, real.ca_pem)
    assert _reason(exc) == "cert_untrusted"


def test_validity_window(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue("service", "short", out_dir=tmp_path, days=1)
    pem = issued.cert_path.read_bytes()
    with pytest.raises(Unauthenticated) as exc:
        principal_from_certificate(pem, ca.ca_pem, now=issued.not_after + dt.timedelta(seconds=1))
    assert _reason(exc) == "cert_expired"
    with pytest.raises(Unauthenticated) as exc:
        principal_from_certificate(
            pem, ca.ca_pem, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        )
    assert _reason(exc) == "cert_not_yet_valid"
    # lifetimes never outlast the CA
    long = ca.issue("service", "long", out_dir=tmp_path, days=3650)
    assert long.not_after <= ca.cert.not_valid_after_utc


def test_tampered_and_garbage_certificates(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue("service", "svc", out_dir=tmp_path, grants=[Grant(role="viewer")])
    cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    for bad in (bytes(der), b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n", b"\x30" * 20_000):
        with pytest.raises(Unauthenticated) as exc:
            principal_from_certificate(bad, ca.ca_pem)
        assert _reason(exc) in ("cert_untrusted", "cert_malformed")
    with pytest.raises(Unauthenticated) as exc:
        principal_from_certificate(b"\x30" * 20_000, ca.ca_pem)
    assert _reason(exc) == "cert_malformed"


def test_asgi_scope(ca: CertificateAuthority, tmp_path: Path) -> None:
    assert principal_from_asgi_scope({"type": "http"}, ca.ca_pem) is None
    assert principal_from_asgi_scope({"extensions": {"tls": {}}}, ca.ca_pem) is None
    issued = ca.issue("service", "svc", out_dir=tmp_path)
    scope = {"extensions": {"tls": {"client_cert_chain": [issued.cert_path.read_text()]}}}
    p = principal_from_asgi_scope(scope, ca.ca_pem)
    assert p is not None and p.name == "svc"


def test_bad_requests_are_refused_before_anything_is_written(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    for kwargs in (
        {"kind": "root", "name": "x"},
        {"kind": "service", "name": "../escape"},
        {"kind": "service", "name": ""},
        {"kind": "service", "name": "svc", "hosts": ["localhost"]},
        {"kind": "edge", "name": "e", "days": 0},
    ):
        with pytest.raises(ValidationFailed):
            ca.issue(out_dir=out, **kwargs)  # type: ignore[arg-type]
    assert not out.exists()
    assert ca.issued() == []


def test_reissue_replaces_the_pair_and_the_index_lists_both(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    first = ca.issue("edge", "site-a", out_dir=tmp_path)
    second = ca.issue("edge", "site-a", out_dir=tmp_path, grants=[Grant(role="viewer")])
    assert first.fingerprint != second.fingerprint
    assert _mode(second.key_path) == 0o600
    p = principal_from_certificate(second.cert_path.read_bytes(), ca.ca_pem)
    assert p.id == f"cert:{second.fingerprint}"
    rows = CertificateAuthority.load(ca.directory).issued()
    assert [(r["name"], r["fingerprint"]) for r in rows] == [
        ("site-a", first.fingerprint),
        ("site-a", second.fingerprint),
    ]
    assert rows[1]["grants"] == ["viewer@*"]
