"""A small certificate authority for mTLS, and the check that turns a client certificate into a
:class:`Principal`.

The CA lives in one directory: ``ca.pem`` (public), ``ca.key`` (EC P-256, mode 0600) and
``index.jsonl`` (one line per issued certificate, like OpenSSL's ``index.txt``). It issues three
kinds of leaf certificates, each with a fresh EC P-256 key:

- ``server``: the API or the NATS hub; SAN DNS names / IP addresses from ``hosts``, EKU
  serverAuth;
- ``service``: a program calling the API; EKU clientAuth;
- ``edge``: an edge node (name = site) dialling the hub or calling the API; EKU clientAuth.

Subject: ``CN=<name>, OU=<kind>, O=datawave``. What the holder may do is written into the
certificate itself, signed by the CA, as SAN URIs::

    urn:datawave:id:<kind>:<name>                    always, names the holder
    urn:datawave:grant:<role>@*                      a global grant
    urn:datawave:grant:<role>@collection:<path>      a collection grant (percent-encoded)
    urn:datawave:grant:<role>@source:<id-or-name>    a source grant

so the server needs no lookup to authorise a certificate: trust in the CA is trust in its grants.
An edge certificate without grant URIs authenticates the edge but confers no API permission.
Revoking a certificate before it expires is not supported: keep lifetimes short (``days``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from datawave.datasource.errors import ConfigError, Conflict, Unauthenticated, ValidationFailed
from datawave.datasource.security.principal import Grant, Principal

__all__ = [
    "CertKind",
    "CertificateAuthority",
    "IssuedCert",
    "fingerprint",
    "grants_from_certificate",
    "principal_from_asgi_scope",
    "principal_from_certificate",
]

CertKind = Literal["server", "service", "edge"]
KINDS: tuple[CertKind, ...] = ("server", "service", "edge")

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_ID_URN = "urn:datawave:id:"
_GRANT_URN = "urn:datawave:grant:"
_SKEW = dt.timedelta(minutes=5)  # back-date notBefore so a slightly slow clock still accepts
_MAX_CERT_BYTES = 16_384


@dataclass(frozen=True)
class IssuedCert:
    """What :meth:`CertificateAuthority.issue` wrote; ``fingerprint`` is SHA-256 hex of the DER."""

    cert_path: Path
    key_path: Path
    fingerprint: str
    not_after: dt.datetime
    kind: str = ""
    name: str = ""
    serial: str = ""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 hex of the DER encoding: how a certificate principal is named (``cert:<fp>``)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, from the first byte on (no chmod window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_TRUNC


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(*parts: tuple[str, str]) -> x509.Name:
    oids = {"O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
            "CN": NameOID.COMMON_NAME}  # fmt: skip
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in parts])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """CA: sign certificates and CRLs; leaf: digital signatures (ECDSA handshakes) only."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _grant_uri(g: Grant) -> str:
    return _GRANT_URN + quote(str(g), safe="@:/*")


def _grant_from_uri(uri: str) -> Grant | None:
    role, sep, where = unquote(uri[len(_GRANT_URN) :]).partition("@")
    if not sep or not role:
        return None
    if where == "*":
        return Grant(role=role)
    kind, _, value = where.partition(":")
    if not value:
        return None
    if kind == "collection":
        return Grant(role=role, collection=value)
    if kind == "source":
        return Grant(role=role, source=value)
    return None


class CertificateAuthority:
    """The CA in ``directory``. Create one with :meth:`init`, open it with :meth:`load`."""

    def __init__(
        self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> None:
        self.directory = directory
        self.cert = cert
        self._key = key

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def init(
        cls, directory: Path, *, name: str = "datawave CA", days: int = 3650
    ) -> CertificateAuthority:
        """Create a new CA in ``directory`` (made 0700).

        Raises:
            Conflict: a CA already exists there; it is never overwritten, since every
                certificate it issued would stop verifying.
        """
        directory = Path(directory)
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.exists() or key_path.exists():
            raise Conflict(f"a CA already exists in {directory}; refusing to overwrite it",
                           path=str(directory))  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(("O", "datawave"), ("CN", name))
        now = dt.datetime.now(dt.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        # O_EXCL: two concurrent `certs init` cannot both win.
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise Conflict(f"a CA already exists in {directory}; refusing to overwrite it",
                           path=str(directory)) from None  # fmt: skip
        with os.fdopen(fd, "wb") as fh:
            fh.write(_key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """Open the CA in ``directory``. Raises :class:`ConfigError` when it is missing."""
        directory = Path(directory)
        try:
            cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
            key = serialization.load_pem_private_key(
                (directory / "ca.key").read_bytes(), password=None
            )
        except FileNotFoundError:
            raise ConfigError(
                f"no CA in {directory} (create one with `datawave certs init`)", field="ca"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"the CA in {directory} is unreadable: {exc}", field="ca") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"the CA key in {directory} is not an EC key", field="ca")
        return cls(directory, cert, key)

    def issue(
        self,
        kind: CertKind,
        name: str,
        *,
        out_dir: Path,
        days: int = 365,
        hosts: Iterable[str] = (),
        grants: Iterable[Grant] = (),
    ) -> IssuedCert:
        """Issue a certificate and write ``<name>.pem`` and ``<name>.key`` (0600) to ``out_dir``.

        Args:
            kind: ``server`` (serverAuth; SANs from ``hosts``, default ``name``), ``service``
                or ``edge`` (clientAuth).
            name: CN and file name; letters, digits, ``.``, ``_``, ``-``.
            out_dir: where the files go (created 0700); an existing pair is replaced.
            days: lifetime.
            hosts: DNS names and IP addresses for a server certificate.
            grants: API grants the holder gets (role names are checked by the caller).

        Raises:
            ValidationFailed: unknown kind, bad name, hosts on a client certificate, days < 1.
        """
        errors = []
        if kind not in KINDS:
            errors.append({"field": "kind", "message": f"must be one of {', '.join(KINDS)}"})
        if not _NAME_RE.fullmatch(name):
            errors.append({"field": "name", "message": "letters, digits, '.', '_', '-' (<= 63)"})
        hosts = list(hosts)
        if hosts and kind != "server":
            errors.append({"field": "hosts", "message": "only server certificates have hosts"})
        if days < 1:
            errors.append({"field": "days", "message": "must be >= 1"})
        if errors:
            raise ValidationFailed("invalid certificate request: "
                                   + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                                   errors=errors)  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"{_ID_URN}{kind}:{name}")]
        if kind == "server":
            for h in hosts or [name]:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    sans.append(x509.DNSName(h))
        sans += [x509.UniformResourceIdentifier(_grant_uri(g)) for g in grants]
        eku = (
            ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        serial = x509.random_serial_number()
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(("O", "datawave"), ("OU", kind), ("CN", name)))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - _SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_path, key_path = out_dir / f"{name}.pem", out_dir / f"{name}.key"
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued = IssuedCert(
            cert_path=cert_path, key_path=key_path, fingerprint=fingerprint(cert),
            not_after=cert.not_valid_after_utc, kind=kind, name=name, serial=f"{serial:x}",
        )  # fmt: skip
        self._record(issued, grants=[str(g) for g in grants])
        return issued

    def _record(self, issued: IssuedCert, *, grants: list[str]) -> None:
        line = {
            "kind": issued.kind, "name": issued.name, "serial": issued.serial,
            "fingerprint": issued.fingerprint, "not_after": issued.not_after.isoformat(),
            "issued_at": dt.datetime.now(dt.UTC).isoformat(), "grants": grants,
            "cert_path": str(issued.cert_path), "key_path": str(issued.key_path),
        }  # fmt: skip
        with (self.directory / "index.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")

    def issued(self) -> list[dict[str, Any]]:
        """Every certificate this CA issued, oldest first (from ``index.jsonl``)."""
        path = self.directory / "index.jsonl"
        if not path.exists():
            return []
        out = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue  # a torn last line from a crash; the certificates are on disk
        return out


# -- verification ----------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _trust(ca_pem: bytes) -> tuple[Store, tuple[x509.Certificate, ...]]:
    try:
        roots = tuple(x509.load_pem_x509_certificates(ca_pem))
    except ValueError as exc:
        raise ConfigError(f"auth.tls.client_ca_file: not a PEM certificate: {exc}",
                          field="auth.tls.client_ca_file") from None  # fmt: skip
    return Store(list(roots)), roots


def _load_cert(data: bytes | str) -> x509.Certificate:
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if len(raw) > _MAX_CERT_BYTES:
        raise Unauthenticated("client certificate too large", reason="cert_malformed")
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError:
        raise Unauthenticated("client certificate unreadable", reason="cert_malformed") from None


def grants_from_certificate(cert: x509.Certificate) -> tuple[Grant, ...]:
    """The grants written into ``cert`` by the CA (SAN ``urn:datawave:grant:`` URIs)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    found = (_grant_from_uri(u) for u in uris if u.startswith(_GRANT_URN))
    return tuple(g for g in found if g is not None)


def principal_from_certificate(
    pem_or_der: bytes | str,
    ca_pem: bytes,
    *,
    now: dt.datetime | None = None,
    intermediates: Iterable[bytes | str] = (),
) -> Principal:
    """Verify a client certificate against the CA and return who it names.

    The chain is checked by ``cryptography``'s X.509 path validation (signature, validity,
    basic constraints, EKU clientAuth). The validity window is checked first only to give a
    precise reason.

    Returns:
        ``Principal(kind="edge" | "cert", id="cert:<sha256>", name=CN, grants from the cert)``.

    Raises:
        Unauthenticated: ``reason`` is ``cert_malformed``, ``cert_expired``,
            ``cert_not_yet_valid`` or ``cert_untrusted`` (wrong CA, bad signature, not a
            client certificate).
    """
    cert = _load_cert(pem_or_der)
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    if when > cert.not_valid_after_utc:
        raise Unauthenticated("client certificate expired", reason="cert_expired")
    if when < cert.not_valid_before_utc:
        raise Unauthenticated("client certificate not yet valid", reason="cert_not_yet_valid")
    store, _roots = _trust(ca_pem)
    verifier = PolicyBuilder().store(store).time(when).max_chain_depth(2).build_client_verifier()
    try:
        verifier.verify(cert, [_load_cert(c) for c in intermediates])
    except VerificationError:
        raise Unauthenticated(
            "client certificate not issued by the trusted CA for client use",
            reason="cert_untrusted",
        ) from None
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = str(attrs[0].value) if attrs else ""
    kind: Literal["edge", "cert"] = "edge" if units and units[0].value == "edge" else "cert"
    return Principal(id=f"cert:{fingerprint(cert)}", kind=kind, name=name,
                     grants=grants_from_certificate(cert))  # fmt: skip


def principal_from_asgi_scope(scope: Mapping[str, Any], ca_pem: bytes) -> Principal | None:
    """The principal of the client certificate the TLS layer put into an ASGI scope.

    Reads the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM
    strings, leaf first) that :mod:`datawave.datasource.serve.tls` fills in.

    Returns:
        None when the connection carried no client certificate (let other credentials decide).

    Raises:
        Unauthenticated: a certificate was presented but does not verify (see
            :func:`principal_from_certificate`).
    """
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    return principal_from_certificate(chain[0], ca_pem, intermediates=chain[1:])
