"""``datawave certs``: the small CA that issues server, service and edge certificates (mTLS).

The CA lives in ``<data_dir>/ca`` unless ``--dir`` says otherwise; issued pairs go to
``<data_dir>/certs``. Grants are written into the certificate (see ``security.certs``), so the
role is checked here, against the built-in and configured custom roles, before signing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from datawave.datasource.cli.output import console, emit_json, err_console, table
from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.errors import DatawaveError, ValidationFailed
from datawave.datasource.security import Grant, Policy

__all__ = ["certs_app", "grant_from_options"]

certs_app = typer.Typer(no_args_is_help=True, help="A small CA for mTLS: init, issue, list.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
DirOpt = Annotated[Path | None, typer.Option("--dir", help="CA directory (default: <data_dir>/ca)")]


def _fail(exc: Exception) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2 if isinstance(exc, ValueError) else 1)


def _ca_dir(settings: DatawaveSettings, given: Path | None) -> Path:
    return given or settings.data_dir / "ca"


def grant_from_options(
    settings: DatawaveSettings, role: str, collection: str | None, source: str | None
) -> Grant:
    """One grant from ``--role`` / ``--collection`` / ``--source``; the role must exist."""
    if collection is not None and source is not None:
        raise ValidationFailed(
            "give --collection or --source, not both",
            errors=[{"field": "collection", "message": "exclusive with --source"}],
        )
    Policy(settings.auth.custom_roles).check_role(role)
    return Grant(role=role, collection=collection, source=source)


@certs_app.command("init")
def certs_init(
    dir_: DirOpt = None,
    name: Annotated[str, typer.Option(help="The CA's common name")] = "datawave CA",
    days: Annotated[int, typer.Option(help="CA lifetime in days")] = 3650,
    json_out: JsonOpt = False,
) -> None:
    """Create the CA (refuses to overwrite an existing one)."""
    from datawave.datasource.security.certs import CertificateAuthority, fingerprint

    settings = load_settings()
    try:
        ca = CertificateAuthority.init(_ca_dir(settings, dir_), name=name, days=days)
    except DatawaveError as exc:
        _fail(exc)
    info = {"ca_cert": str(ca.ca_cert_path), "fingerprint": fingerprint(ca.cert),
            "not_after": ca.cert.not_valid_after_utc.isoformat()}  # fmt: skip
    if json_out:
        emit_json(info)
        return
    console.print(f"CA created in {escape(str(ca.directory))} (the key ca.key is mode 0600)")
    console.print(f"trust this certificate on clients and servers: {escape(info['ca_cert'])}")


@certs_app.command("issue")
def certs_issue(
    kind: Annotated[str, typer.Argument(help="server, service or edge")],
    name: Annotated[str, typer.Argument(help="Common name and file name (edge: the site)")],
    host: Annotated[
        list[str], typer.Option("--host", help="server: DNS name or IP (repeatable)")
    ] = [],  # noqa: B006
    role: Annotated[str | None, typer.Option(help="Grant this role to the holder")] = None,
    collection: Annotated[str | None, typer.Option(help="...on this collection")] = None,
    source: Annotated[str | None, typer.Option(help="...on this source (id or name)")] = None,
    days: Annotated[int, typer.Option(help="Lifetime in days")] = 365,
    dir_: DirOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Where to write (default: <data_dir>/certs)")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Issue a certificate: writes NAME.pem and NAME.key (0600)."""
    from datawave.datasource.security.certs import KINDS, CertificateAuthority

    settings = load_settings()
    try:
        if kind not in KINDS:
            raise ValidationFailed(f"kind: must be one of {', '.join(KINDS)}",
                                   errors=[{"field": "kind", "message": "unknown"}])  # fmt: skip
        if role is None and (collection or source):
            raise ValidationFailed("--collection / --source need --role",
                                   errors=[{"field": "role", "message": "missing"}])  # fmt: skip
        grants = [grant_from_options(settings, role, collection, source)] if role else []
        ca = CertificateAuthority.load(_ca_dir(settings, dir_))
        issued = ca.issue(kind, name, out_dir=out_dir or settings.data_dir / "certs",
                          days=days, hosts=host, grants=grants)  # fmt: skip
    except DatawaveError as exc:
        _fail(exc)
    info = {"kind": kind, "name": name, "cert": str(issued.cert_path),
            "key": str(issued.key_path), "ca_cert": str(ca.ca_cert_path),
            "fingerprint": issued.fingerprint, "not_after": issued.not_after.isoformat(),
            "grants": [str(g) for g in grants]}  # fmt: skip
    if json_out:
        emit_json(info)
        return
    rows = [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in info.items()]
    table(f"{kind} certificate {name}", ["what", "value"], rows)


@certs_app.command("list")
def certs_list(dir_: DirOpt = None, json_out: JsonOpt = False) -> None:
    """Certificates the CA issued, oldest first."""
    from datawave.datasource.security.certs import CertificateAuthority

    settings = load_settings()
    try:
        rows = CertificateAuthority.load(_ca_dir(settings, dir_)).issued()
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(rows)
        return
    table("issued certificates", ["kind", "name", "not after", "grants", "fingerprint", "cert"], [
        (r.get("kind"), r.get("name"), r.get("not_after"), ", ".join(r.get("grants") or []),
         str(r.get("fingerprint", ""))[:16], r.get("cert_path")) for r in rows
    ])  # fmt: skip
