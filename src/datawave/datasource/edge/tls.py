"""Certificates of the leaf link: the hub's server certificate, an edge's enrollment certificate,
and the edge's own certificate, signed from a CSR whose key never left the edge.

The hub's leaf-node listener requires TLS with a client certificate from the core's CA
(:class:`~datawave.datasource.security.certs.CertificateAuthority`, ``nats-server``'s
``verify: true``) on top of the per-edge user and password. That leaves a bootstrap problem:
the edge must already hold a certificate to open the link it joins over. The join token solves
it with an **enrollment certificate**: a client certificate for the site that expires with the
token, plus its key (generated on the core, a bearer secret exactly like the token's password).
At join the edge generates its own EC P-256 key, sends a CSR with the register request, and the
core signs it (:func:`sign_edge_csr`); the edge then restarts its leaf with its own certificate
and deletes the enrollment files. From then on the edge's TLS key exists only on the edge.

Certificates follow :mod:`~datawave.datasource.security.certs`: ``CN=<site>, OU=edge,
O=datawave`` and the SAN URI ``urn:datawave:id:edge:<site>``, so an edge certificate also
names its holder to the API's mTLS check (with no API grants).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from datawave.datasource.edge.natsproc import TlsFiles
from datawave.datasource.edge.tokens import Enrollment, validate_site
from datawave.datasource.errors import ConfigError, EdgeError
from datawave.datasource.security.certs import CertificateAuthority

__all__ = [
    "HUB_CERT_NAME",
    "CsrSigner",
    "accept_certificate",
    "certificate_not_after",
    "ensure_hub_certificate",
    "issue_enrollment",
    "make_csr",
    "renewal_due",
    "sign_edge_csr",
    "write_enrollment",
]

HUB_CERT_NAME: Final = "nats-hub"
#: ``(site, csr_pem) -> certificate PEM``: how the gateway signs (the hub builds it with the CA).
CsrSigner = Callable[[str, bytes], bytes]
_SKEW: Final = dt.timedelta(minutes=5)
_MAX_CSR_BYTES: Final = 8192
#: A hub certificate is re-issued when it has less than this left (at ``datawave up``).
_RENEW_BEFORE: Final = dt.timedelta(days=30)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ca_key(ca: CertificateAuthority) -> ec.EllipticCurvePrivateKey:
    """The CA's signing key, read from its directory (``ca.key``, see ``security/certs.py``)."""
    try:
        key = serialization.load_pem_private_key(
            (ca.directory / "ca.key").read_bytes(), password=None
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CA key in {ca.directory}: {type(exc).__name__}",
                          field="ca") from None  # fmt: skip
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"the CA key in {ca.directory} is not an EC key", field="ca")
    return key


def _edge_cert(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    site: str,
    *,
    not_after: dt.datetime,
    now: dt.datetime,
) -> x509.Certificate:
    """A clientAuth certificate for ``site``'s edge, in the CA's house format."""
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    not_after = min(not_after, ca.cert.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "datawave"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "edge"),
            x509.NameAttribute(NameOID.COMMON_NAME, site),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - _SKEW, not_after - dt.timedelta(seconds=1)))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:datawave:id:edge:{site}")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(_ca_key(ca), hashes.SHA256())
    )


# Core side ----------------------------------------------------------------------------------------
def ensure_hub_certificate(
    ca: CertificateAuthority, out_dir: Path, hosts: Sequence[str], *, days: int = 365
) -> TlsFiles:
    """The hub's leaf-listener certificate in ``out_dir``, issued when missing, expiring within
    30 days, from another CA, or not naming every one of ``hosts``."""
    cert_path, key_path = out_dir / f"{HUB_CERT_NAME}.pem", out_dir / f"{HUB_CERT_NAME}.key"
    wanted = {h for h in hosts if h}
    if not _hub_cert_ok(cert_path, key_path, ca, wanted):
        ca.issue("server", HUB_CERT_NAME, out_dir=out_dir, days=days, hosts=sorted(wanted))
    return TlsFiles(cert_file=cert_path, key_file=key_path, ca_file=ca.ca_cert_path)


def _hub_cert_ok(
    cert_path: Path, key_path: Path, ca: CertificateAuthority, hosts: set[str]
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    if not key_path.exists() or cert.issuer != ca.cert.subject:
        return False
    if cert.not_valid_after_utc - _now() < _RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    named = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    named |= set(san.get_values_for_type(x509.DNSName))
    return hosts <= named


def issue_enrollment(
    ca: CertificateAuthority, site: str, expires_at: int, *, now: dt.datetime | None = None
) -> Enrollment:
    """A client certificate and key for ``site`` that expire with its join token."""
    validate_site(site)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = dt.datetime.fromtimestamp(expires_at, dt.UTC)
    cert = _edge_cert(ca, key.public_key(), site, not_after=not_after, now=now or _now())
    return Enrollment(
        ca_der=ca.cert.public_bytes(serialization.Encoding.DER),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        key_der=key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )  # fmt: skip


def sign_edge_csr(
    ca: CertificateAuthority,
    csr_pem: bytes,
    site: str,
    *,
    days: int = 90,
    now: dt.datetime | None = None,
) -> bytes:
    """Sign an edge's CSR: only its public key is used (after checking the CSR's signature,
    which proves the edge holds the private key); the subject is the site, from the verified
    join, whatever the CSR asks for.

    Returns:
        The certificate, PEM.

    Raises:
        EdgeError: Not a CSR, a bad signature, or a key that is not EC P-256.
    """
    if not isinstance(csr_pem, bytes) or len(csr_pem) > _MAX_CSR_BYTES:
        raise EdgeError("certificate request missing or too large")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise EdgeError("certificate request is not a PEM CSR") from None
    if not csr.is_signature_valid:
        raise EdgeError("certificate request signature is invalid")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise EdgeError("certificate request key must be EC P-256")
    when = now or _now()
    cert = _edge_cert(ca, public, validate_site(site), not_after=when + dt.timedelta(days=days),
                      now=when)  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


# Edge side ----------------------------------------------------------------------------------------
def write_enrollment(enrollment: Enrollment, *, ca_file: Path, cert_file: Path,
                     key_file: Path) -> TlsFiles:  # fmt: skip
    """Write the token's CA and enrollment pair as PEM files (the key 0600)."""
    try:
        ca = x509.load_der_x509_certificate(enrollment.ca_der)
        cert = x509.load_der_x509_certificate(enrollment.cert_der)
        key = serialization.load_der_private_key(enrollment.key_der, password=None)
    except ValueError:
        raise EdgeError("the join token's TLS material is unreadable") from None
    for path in (ca_file, cert_file, key_file):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_file, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return TlsFiles(cert_file=cert_file, key_file=key_file, ca_file=ca_file)


def make_csr(key_file: Path, site: str) -> bytes:
    """Generate the edge's own TLS key in ``key_file`` (0600, replacing none) and its CSR."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(key_file, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ), exclusive=True)  # fmt: skip
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, validate_site(site))]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def accept_certificate(cert_pem: bytes, key_file: Path, ca_file: Path, cert_file: Path) -> None:
    """Check the core's answer to our CSR and write it: it must certify our own key and come
    from the CA the token named, so a confused or hostile reply never replaces a working pair.

    Raises:
        EdgeError: The certificate is unreadable, for another key, or from another CA.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise EdgeError("the core sent an unreadable certificate") from None
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise EdgeError("the core's certificate is for another key")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise EdgeError("the core's certificate is not signed by the join token's CA") from None
    tmp = cert_file.with_name(cert_file.name + ".new")
    tmp.write_bytes(cert_pem)
    os.replace(tmp, cert_file)


def renewal_due(cert_file: Path, *, now: dt.datetime | None = None) -> bool:
    """Whether less than a third of the certificate's lifetime is left (or it is unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return True
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return (now or _now()) >= cert.not_valid_after_utc - life / 3


def certificate_not_after(cert_file: Path) -> dt.datetime | None:
    """When the certificate in ``cert_file`` expires (None if there is none)."""
    try:
        return x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise EdgeError(f"{path} exists; refusing to replace a key", path=str(path)) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)
