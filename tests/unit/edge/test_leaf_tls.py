"""Leaf TLS material without sockets: the hub and leaf configs (parsed by the real binary), the
enrollment a token carries, CSR signing on the core and the edge's check of the answer."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from datawave.datasource.edge.natsproc import HubConfig, LeafConfig, TlsFiles, find_nats_server
from datawave.datasource.edge.natsproc import render_config as render
from datawave.datasource.edge.tls import (
    accept_certificate,
    certificate_not_after,
    ensure_hub_certificate,
    issue_enrollment,
    make_csr,
    renewal_due,
    sign_edge_csr,
    write_enrollment,
)
from datawave.datasource.edge.tokens import EdgeCredentials, TokenIssuer, parse_unverified
from datawave.datasource.errors import EdgeError, TokenRejected
from datawave.datasource.security.certs import CertificateAuthority, principal_from_certificate

LEAF_URL = "tls://127.0.0.1:17422"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _parses(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "check.conf"
    conf.write_text(text)
    return subprocess.run([str(find_nats_server()), "-c", str(conf), "-t"], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip


# Configs ----------------------------------------------------------------------------------------
def test_hub_requires_client_certificates_and_the_leaf_presents_its_own(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    hub_tls = ensure_hub_certificate(ca, tmp_path / "hub-tls", ["127.0.0.1", "localhost"])
    creds = EdgeCredentials("A", "n1", "edge-A", "p" * 24, LEAF_URL)
    hub = HubConfig(store_dir=tmp_path / "js", core_password="c" * 20, edges=(creds,),
                    client_port=14001, leaf_port=17422, http_port=18001, leaf_tls=hub_tls)  # fmt: skip
    edge_tls = TlsFiles(tmp_path / "e.pem", tmp_path / "e.key", ca.ca_cert_path)
    edge_tls.cert_file.write_bytes(sign_edge_csr(ca, make_csr(edge_tls.key_file, "A"), "A"))
    leaf = LeafConfig(creds, tmp_path / "ljs", client_port=14002, http_port=18002, tls=edge_tls)
    hub_text, leaf_text = render(hub), render(leaf)

    block = hub_text[hub_text.index("leafnodes {") :]
    for line in (f"cert_file: {str(hub_tls.cert_file)!r}".replace("'", '"'),
                 f'ca_file: "{ca.ca_cert_path}"', "verify: true", "timeout: 5"):  # fmt: skip
        assert line in block
    assert f'url: "tls://edge-A:{"p" * 24}@127.0.0.1:17422"' in leaf_text
    assert f'cert_file: "{edge_tls.cert_file}"' in leaf_text and "verify" not in leaf_text
    for text in (hub_text, leaf_text):
        res = _parses(tmp_path, text)
        assert res.returncode == 0, res.stderr
    # Without leaf TLS nothing changes for plain set-ups.
    plain = render(HubConfig(store_dir=tmp_path / "js", core_password="c" * 20,
                             client_port=1, leaf_port=2, http_port=3))  # fmt: skip
    assert "tls" not in plain[plain.index("leafnodes {") :]


def test_the_hub_certificate_is_issued_once_and_again_for_a_new_host(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    first = ensure_hub_certificate(ca, tmp_path / "tls", ["127.0.0.1", "localhost"])
    cert = x509.load_pem_x509_certificate(first.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert stat.S_IMODE(first.key_file.stat().st_mode) == 0o600
    assert ensure_hub_certificate(ca, tmp_path / "tls", ["localhost"]) == first
    assert first.cert_file.read_bytes() == _pem(cert)  # not re-issued
    ensure_hub_certificate(ca, tmp_path / "tls", ["127.0.0.1", "hub.example"])
    again = x509.load_pem_x509_certificate(first.cert_file.read_bytes())
    assert again.serial_number != cert.serial_number
    assert "hub.example" in again.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)


# Enrollment -------------------------------------------------------------------------------------
def test_a_token_carries_the_ca_and_an_enrollment_pair_that_expires_with_it(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    issuer = TokenIssuer(tmp_path / "join.key", tmp_path / "joins.json")
    token, _ = issuer.create("A", 600, LEAF_URL,
                             enrollment=lambda site, exp: issue_enrollment(ca, site, exp))  # fmt: skip
    parsed = parse_unverified(token)
    enrollment = parsed.enrollment
    assert enrollment is not None and "key_der" not in repr(enrollment)
    assert len(token) < 4096  # still copy-pasteable
    cert = x509.load_der_x509_certificate(enrollment.cert_der)
    assert x509.load_der_x509_certificate(enrollment.ca_der) == ca.cert
    assert cert.not_valid_after_utc == dt.datetime.fromtimestamp(parsed.expires_at, dt.UTC)
    cert.verify_directly_issued_by(ca.cert)
    who = principal_from_certificate(_pem(cert), ca.ca_pem)
    assert (who.kind, who.name, who.grants) == ("edge", "A", ())  # authenticates, grants nothing
    key = serialization.load_der_private_key(enrollment.key_der, password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)

    files = write_enrollment(enrollment, ca_file=tmp_path / "e" / "ca.pem",
                             cert_file=tmp_path / "e" / "enroll.pem",
                             key_file=tmp_path / "e" / "enroll.key")  # fmt: skip
    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    assert files.ca_file.read_bytes() == ca.ca_pem
    # The token was not issued with TLS material in it before: plain tokens still parse.
    plain, _ = issuer.create("B", 600, "nats-leaf://127.0.0.1:17422")
    assert parse_unverified(plain).enrollment is None


def test_a_token_with_broken_tls_material_is_malformed(tmp_path: Path) -> None:
    import base64
    import json

    issuer = TokenIssuer(tmp_path / "join.key", tmp_path / "joins.json")
    token, _ = issuer.create("A", 600, LEAF_URL)
    prefix, payload, mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for bad in ({"ca": "x"}, "not a map", {"ca": "***", "cert": "a", "key": "b"}):
        forged = base64.urlsafe_b64encode(json.dumps({**body, "tls": bad}).encode()).decode()
        with pytest.raises(TokenRejected) as err:
            parse_unverified(f"{prefix}.{forged.rstrip('=')}.{mac}")
        assert err.value.context["reason"] == "malformed"


# CSR signing ------------------------------------------------------------------------------------
def test_the_core_signs_the_edges_key_for_the_site_it_joined_as(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    key_file = tmp_path / "tls" / "edge.key"
    csr = make_csr(key_file, "A")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(EdgeError, match="refusing to replace a key"):
        make_csr(key_file, "A")

    # The CSR asks for another name: the certificate names the site the join was verified for.
    evil = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "core")])
    )
    own = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(own, ec.EllipticCurvePrivateKey)
    asked = evil.sign(own, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    for request in (csr, asked):
        cert = x509.load_pem_x509_certificate(sign_edge_csr(ca, request, "A", days=30))
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "A"
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        life = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=29) < life <= dt.timedelta(days=30)
        assert principal_from_certificate(_pem(cert), ca.ca_pem).name == "A"

    # What the edge accepts: a certificate of its own key from the token's CA.
    ca_file = tmp_path / "tls" / "ca.pem"
    ca_file.write_bytes(ca.ca_pem)
    cert_file = tmp_path / "tls" / "edge.pem"
    accept_certificate(sign_edge_csr(ca, csr, "A"), key_file, ca_file, cert_file)
    assert certificate_not_after(cert_file) is not None and not renewal_due(cert_file)

    other_key = tmp_path / "tls" / "other.key"
    for_other = sign_edge_csr(ca, make_csr(other_key, "A"), "A")
    with pytest.raises(EdgeError, match="for another key"):
        accept_certificate(for_other, key_file, ca_file, cert_file)
    rogue = CertificateAuthority.init(tmp_path / "rogue")
    with pytest.raises(EdgeError, match="not signed by the join token's CA"):
        accept_certificate(sign_edge_csr(rogue, csr, "A"), key_file, ca_file, cert_file)
    with pytest.raises(EdgeError, match="unreadable"):
        accept_certificate(b"garbage", key_file, ca_file, cert_file)


def test_bad_certificate_requests_are_refused(tmp_path: Path, ca: CertificateAuthority) -> None:
    csr = make_csr(tmp_path / "k.key", "A")
    with pytest.raises(EdgeError, match="not a PEM CSR"):
        sign_edge_csr(ca, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "A")
    with pytest.raises(EdgeError, match="too large"):
        sign_edge_csr(ca, b"x" * 9000, "A")
    der = x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER)
    broken = bytearray(der)
    broken[-3] ^= 0x01  # inside the signature
    broken_pem = x509.load_der_x509_csr(bytes(broken)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(EdgeError, match="signature is invalid"):
        sign_edge_csr(ca, broken_pem, "A")
    p384 = ec.generate_private_key(ec.SECP384R1())
    weird = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "A")]))
        .sign(p384, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(EdgeError, match="EC P-256"):
        sign_edge_csr(ca, weird, "A")


def test_renewal_is_due_once_a_third_of_the_lifetime_is_left(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    cert_file = tmp_path / "edge.pem"
    cert_file.write_bytes(sign_edge_csr(ca, make_csr(tmp_path / "k.key", "A"), "A", days=90))
    now = dt.datetime.now(dt.UTC)
    assert not renewal_due(cert_file, now=now + dt.timedelta(days=55))
    assert renewal_due(cert_file, now=now + dt.timedelta(days=61))
    assert renewal_due(tmp_path / "missing.pem")
