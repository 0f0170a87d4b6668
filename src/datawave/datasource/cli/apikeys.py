"""``datawave apikeys``: create, list and revoke API keys directly in the store.

This is the bootstrap path (the first admin key) and works whether or not the core runs:
whoever can read the data dir and the store is already all-powerful. Every change is appended
to the audit log as ``local:<os user>``. The token is printed once, on stdout alone (so
``TOKEN=$(datawave apikeys create ...)`` works); it is stored only as a hash.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from datawave.datasource.cli.certs import grant_from_options
from datawave.datasource.cli.output import console, emit_json, err_console, table
from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.errors import DatawaveError, ValidationFailed
from datawave.datasource.store import MetadataStore

__all__ = ["apikeys_app", "local_principal", "parse_duration"]

apikeys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _fail(exc: Exception) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2 if isinstance(exc, ValueError) else 1)


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``, ``45s`` -> a positive timedelta."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or int(m.group(1)) == 0:
        raise ValidationFailed(
            f"--expires-in: expected a positive number with s, m, h, d or w (e.g. 30d), got {text!r}",
            errors=[{"field": "expires_in", "message": "invalid duration"}],
        )
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def local_principal() -> str:
    """How the audit log names someone acting through the CLI on this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"local:{user}"


@contextmanager
def _store(settings: DatawaveSettings) -> Iterator[MetadataStore]:
    store = MetadataStore.open(settings.resolved_store_url, migrate=True)
    try:
        yield store
    finally:
        store.close()


@apikeys_app.command("create")
def apikeys_create(
    name: Annotated[str, typer.Option("--name", help="What the key is for")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator, admin or a custom role")],
    collection: Annotated[str | None, typer.Option(help="Only this collection (and below)")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source (id or name)")] = None,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="e.g. 30d, 12h (default: auth.api_key_ttl_days)"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key and print its token ONCE."""
    settings = load_settings()
    actor = local_principal()
    try:
        grant = grant_from_options(settings, role, collection, source)
        ttl = (
            parse_duration(expires_in)
            if expires_in is not None
            else timedelta(days=settings.auth.api_key_ttl_days)
            if settings.auth.api_key_ttl_days
            else None
        )
        expires_at = datetime.now(UTC) + ttl if ttl else None
        with _store(settings) as store:
            rec, token = store.create_api_key(name=name, grants=[grant], created_by=actor,
                                              expires_at=expires_at)  # fmt: skip
            store.append_audit(
                "apikey.create", principal=actor, target=rec.id,
                detail={"name": rec.name, "prefix": rec.prefix, "grants": [str(grant)],
                        "expires_at": rec.expires_at.isoformat() if rec.expires_at else None},
            )  # fmt: skip
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json({"key": rec, "token": token})
        return
    err_console.print(
        f"API key [bold]{escape(rec.name)}[/bold] id={rec.id} ({escape(str(grant))}"
        f"{', expires ' + rec.expires_at.isoformat() if rec.expires_at else ''}).\n"
        "[yellow]Store the token now: it is shown only this once and cannot be recovered.[/yellow]"
        "\nUse it as `Authorization: Bearer <token>`.",
        soft_wrap=True,
    )
    print(token)


@apikeys_app.command("list")
def apikeys_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List keys (never a token or a hash)."""
    settings = load_settings()
    try:
        with _store(settings) as store:
            keys = store.list_api_keys(include_revoked=all_)
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(keys)
        return
    now = datetime.now(UTC)
    table("API keys (details: --json)", ["id", "name", "grants", "state", "expires", "last used"], [
        (k.id, k.name, ", ".join(str(g) for g in k.grants), k.state(now),
         _day(k.expires_at), _day(k.last_used_at)) for k in keys
    ])  # fmt: skip


def _day(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M")


@apikeys_app.command("revoke")
def apikeys_revoke(key_id: str, json_out: JsonOpt = False) -> None:
    """Revoke a key; requests with it fail from now on."""
    settings = load_settings()
    actor = local_principal()
    try:
        with _store(settings) as store:
            rec = store.revoke_api_key(key_id)
            store.append_audit("apikey.revoke", principal=actor, target=rec.id,
                               detail={"name": rec.name, "prefix": rec.prefix})  # fmt: skip
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(rec)
        return
    console.print(f"revoked API key {escape(rec.name)} ({rec.id})")
