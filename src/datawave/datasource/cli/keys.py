"""``datawave keys``: the key-encryption key (KEK) that seals source secrets at rest.

``status`` shows the current kek id and how many secrets each kek id wraps; ``rotate`` installs
a new KEK (file provider) and re-wraps every secret onto it while the core keeps running;
``retire`` forgets an older KEK once nothing uses it. These commands open the store directly and
never decrypt a secret: re-wrapping swaps the wrapped data key only. Kek ids are public names
(16 hex digits of the key's SHA-256); key material is never printed. Runbook: docs/security.md.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from datawave.datasource.cli.apikeys import local_principal
from datawave.datasource.cli.output import console, emit_json, err_console, table
from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.errors import Conflict, DatawaveError, NotFound, StoreError
from datawave.datasource.security.kek import (
    KEK_BYTES,
    PREVIOUS_PREFIX,
    FileKekProvider,
    Keyring,
    kek_id,
    keyring_dir,
    load_keyring,
    read_key_file,
    write_key_file,
)

if TYPE_CHECKING:
    from datawave.datasource.store import MetadataStore

__all__ = ["keys_app"]

keys_app = typer.Typer(
    no_args_is_help=True,
    help="The key-encryption key of source secrets: status, rotate, retire.",
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _fail(exc: Exception) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2 if isinstance(exc, ValueError) else 1)


@contextmanager
def _store(settings: DatawaveSettings, *, sealed: bool) -> Iterator[MetadataStore]:
    """The store; ``sealed`` attaches this process's keyring and checks it opens the secrets."""
    from datawave.datasource.store import MetadataStore

    try:
        store = MetadataStore.open(settings.resolved_store_url, migrate=False)
    except DatawaveError as exc:
        _fail(exc)
    try:
        if sealed:
            store.attach_keyring(settings, environ=os.environ, allow_create=False)
        yield store
    except DatawaveError as exc:
        _fail(exc)
    finally:
        store.close()


def _sources(settings: DatawaveSettings, keyring: Keyring | None) -> dict[str, str]:
    """kek id -> where this process found that key (for people; never the key)."""
    out: dict[str, str] = {}
    cfg = settings.secrets
    if keyring is not None:
        if cfg.kek_provider == "file":
            out[keyring.current_id] = f"key_file {settings.resolved_key_file}"
        elif cfg.kek_provider == "env":
            out[keyring.current_id] = f"${cfg.kek_env}"
        else:
            out[keyring.current_id] = f"plugin {cfg.kek_provider}"
        for kid in keyring.ids[1:]:
            out[kid] = f"${cfg.previous_kek_env}" if cfg.kek_provider == "env" else "previous key"
    if cfg.kek_provider == "file":
        for path in cfg.previous_kek_files:
            out.update(_file_id(path, "secrets.previous_kek_files"))
        for path in FileKekProvider(settings.resolved_key_file,
                                    keyring=keyring_dir(settings)).keyring_files():  # fmt: skip
            out.update(_file_id(path, "keyring"))
    return out


def _file_id(path: Path, what: str) -> dict[str, str]:
    try:
        return {kek_id(read_key_file(path, field=what)): f"{what} {path}"}
    except DatawaveError:
        return {}


@keys_app.command("status")
def status(json_out: JsonOpt = False) -> None:
    """Current kek id, older ones still accepted, and how many secrets each wraps."""
    settings = load_settings()
    problem = None
    try:
        keyring: Keyring | None = load_keyring(settings, environ=os.environ)
    except DatawaveError as exc:
        keyring, problem = None, exc.message
    with _store(settings, sealed=False) as store:
        usage = store.kek_usage()
    where = _sources(settings, keyring)
    current = keyring.current_id if keyring else None
    known = set(keyring.ids) if keyring else set()
    rows: list[dict[str, Any]] = []
    for kid in sorted(set(usage.by_kek) | known, key=lambda k: (k != current, k)):
        role = "current" if kid == current else "previous" if kid in known else "UNKNOWN"
        rows.append({"kek_id": kid, "role": role, "secrets": usage.by_kek.get(kid, 0),
                     "source": where.get(kid, "")})  # fmt: skip
    unknown = sum(int(r["secrets"]) for r in rows if r["role"] == "UNKNOWN")
    info: dict[str, Any] = {
        "provider": settings.secrets.kek_provider,
        "current": current,
        "keys": rows,
        "edge_sealed": usage.edge_sealed,
        "other": usage.other,
        "unreadable": unknown,
        "problem": problem,
    }
    if json_out:
        emit_json(info)
    else:
        table(f"key-encryption keys ({settings.secrets.kek_provider} provider)",
              ["kek id", "role", "secrets", "from"],
              [(r["kek_id"], r["role"], r["secrets"], r["source"]) for r in rows])  # fmt: skip
        if usage.edge_sealed:
            console.print(f"{usage.edge_sealed} secrets are sealed to edge keys (not KEK-wrapped)")
        pending = sum(int(r["secrets"]) for r in rows if r["role"] == "previous")
        if pending:
            console.print(f"{pending} secrets still use an older key: run `datawave keys rotate`")
    if problem or unknown:
        if problem:
            err_console.print(f"[red]error:[/red] {escape(problem)}", soft_wrap=True)
        if unknown:
            err_console.print(
                f"[red]error:[/red] {unknown} secrets use a key this process does not hold",
                soft_wrap=True,
            )
        raise typer.Exit(1)


@keys_app.command("rotate")
def rotate(
    new_key_file: Annotated[
        Path | None,
        typer.Option("--new-key-file", help="Install this key (32 bytes hex, mode 0600)"),
    ] = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="Install a fresh random key")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Install a new KEK (file provider) and re-wrap every secret onto the current KEK.

    Without an option, only re-wraps (finishes a rotation, or follows a key changed outside
    datawave: the env provider or a plugin). Running owners keep working throughout.
    """
    settings = load_settings()
    if new_key_file is not None and generate:
        _fail(ValueError("give --new-key-file or --generate, not both"))
    installing = new_key_file is not None or generate
    if installing and settings.secrets.kek_provider != "file":
        _fail(
            ValueError(
                f"the {settings.secrets.kek_provider!r} provider's key is not managed by datawave: "
                "install the new key there, keep the old one listed as previous, restart, then "
                "run `datawave keys rotate` without options (docs/security.md)"
            )
        )
    with _store(settings, sealed=True) as store:
        from datawave.datasource.store import AesGcmSealer

        sealer = store.sealer
        if not isinstance(sealer, AesGcmSealer):  # attach_keyring always gives one
            _fail(StoreError("the store has no key-encryption sealer"))
        before = sealer.kek_id
        if installing:
            try:
                new = (
                    read_key_file(new_key_file, field="--new-key-file")
                    if new_key_file is not None
                    else secrets.token_bytes(KEK_BYTES)
                )
                _install(settings, sealer.keyring.current, new)
            except DatawaveError as exc:
                _fail(exc)
            sealer.keyring.reload()
        try:
            report = store.rewrap_secrets()
            store.append_audit(
                "keys.rotate", principal=local_principal(),
                outcome="ok" if not report.failed else "failed",
                target=report.kek_id,
                detail={"from": before, "to": report.kek_id, "rewrapped": report.rewrapped,
                        "failed": len(report.failed)},
            )  # fmt: skip
        except DatawaveError as exc:
            _fail(exc)
    out = {"previous_kek_id": before, **report.to_dict()}
    if json_out:
        emit_json(out)
    else:
        if before != report.kek_id:
            console.print(f"installed key-encryption key {report.kek_id} (was {before})")
        else:
            console.print(f"current key-encryption key {report.kek_id} (unchanged)")
        console.print(f"re-wrapped {report.rewrapped} secrets")
        older = {k: n for k, n in report.usage.by_kek.items() if k != report.kek_id}
        if not older and before != report.kek_id:
            console.print(f"no secret uses {before} any more: `datawave keys retire {before}`")
        for f in report.failed:
            err_console.print(f"[red]failed:[/red] source {f['source_id']}: {escape(f['reason'])}")
    if report.failed:
        raise typer.Exit(1)


def _install(settings: DatawaveSettings, old: bytes, new: bytes) -> None:
    """Keep ``old`` in the keyring dir, then make ``new`` the key file (in this order, so a
    process that sees a blob under the new key always finds both when it reloads)."""
    if len(new) != KEK_BYTES:
        raise ValueError(f"a key-encryption key is {KEK_BYTES} bytes")
    if kek_id(new) == kek_id(old):
        raise Conflict(f"key {kek_id(new)} is already the current key-encryption key")
    kdir = keyring_dir(settings)
    kdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keep = kdir / f"{PREVIOUS_PREFIX}{kek_id(old)}"
    try:
        if not keep.exists():
            write_key_file(keep, old)
        write_key_file(settings.resolved_key_file, new)
    except OSError as exc:
        raise StoreError(
            f"cannot write the key files ({type(exc).__name__}: {exc.strerror}): for a key "
            "provisioned read-only, install the new key yourself, list the old one in "
            "secrets.previous_kek_files, restart, and run `datawave keys rotate`"
        ) from None


@keys_app.command("retire")
def retire(
    kek: Annotated[str, typer.Argument(help="The kek id to forget (see `datawave keys status`)")],
    json_out: JsonOpt = False,
) -> None:
    """Forget an older KEK; refused while any secret still uses it."""
    settings = load_settings()
    cfg = settings.secrets
    kek = kek.strip().lower()
    removed: str | None = None
    todo: list[str] = []
    with _store(settings, sealed=False) as store:
        usage = store.kek_usage()
        try:
            keyring = load_keyring(settings, environ=os.environ)
        except DatawaveError as exc:
            _fail(exc)
        if kek == keyring.current_id:
            _fail(Conflict(f"{kek} is the current key-encryption key: rotate first"))
        if usage.by_kek.get(kek):
            _fail(Conflict(f"{usage.by_kek[kek]} secrets still use {kek}: run `datawave keys "
                           "rotate` first (it re-wraps them onto the current key)"))  # fmt: skip
        if cfg.kek_provider == "file":
            kept = keyring_dir(settings) / f"{PREVIOUS_PREFIX}{kek}"
            todo = [f"remove {p} from secrets.previous_kek_files and delete it"
                    for p in cfg.previous_kek_files
                    if kek in _file_id(p, "secrets.previous_kek_files")]  # fmt: skip
            if not kept.exists() and not todo:
                _fail(NotFound(f"no older key {kek} in {kept.parent}", kind="kek"))
            if kept.exists():
                kept.unlink()
                removed = str(kept)
        elif kek in keyring.ids:
            todo = [f"remove it from ${cfg.previous_kek_env} where the core runs"
                    if cfg.kek_provider == "env" else
                    f"remove it from the {cfg.kek_provider!r} provider"]  # fmt: skip
        else:
            _fail(NotFound(f"this process holds no key {kek}", kind="kek"))
        try:
            store.append_audit("keys.retire", principal=local_principal(), target=kek,
                               detail={"removed": removed, "todo": todo})  # fmt: skip
        except DatawaveError as exc:
            _fail(exc)
    if json_out:
        emit_json({"kek_id": kek, "removed": removed, "todo": todo})
        return
    console.print(f"retired key-encryption key {kek}" + (f" ({removed})" if removed else ""))
    for line in todo:
        console.print(line)
