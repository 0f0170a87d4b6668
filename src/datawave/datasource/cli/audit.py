"""``datawave audit``: verify the hash chain, list entries, print the head to record elsewhere.

These commands open the metadata store directly (like ``datawave edge list``): verifying must
not depend on the API of the system whose log is being checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from datawave.datasource.cli.output import console, emit_json, err_console, table
from datawave.datasource.config import load_settings
from datawave.datasource.errors import DatawaveError, StoreError, redact
from datawave.datasource.security.audit import GENESIS, parse_head

if TYPE_CHECKING:
    from datawave.datasource.store import MetadataStore

__all__ = ["audit_app", "parse_when"]

audit_app = typer.Typer(
    no_args_is_help=True,
    help="The hash-chained audit log: verify it, list entries, record its head.",
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _fail(exc: Exception, code: int | None = None) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(code if code is not None else 2 if isinstance(exc, ValueError) else 1)


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """``30m`` / ``2h`` / ``7d`` ago, or an ISO-8601 time (UTC when it names no zone)."""
    match = _RELATIVE.match(text.strip())
    if match:
        ago = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=ago)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a time like 30m, 2h, 7d or 2026-01-31T12:00:00Z, got {text[:40]!r}"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@contextmanager
def _store() -> Iterator[MetadataStore]:
    from sqlalchemy import inspect

    from datawave.datasource.store import MetadataStore

    url = load_settings().resolved_store_url
    try:
        store = MetadataStore.open(url, migrate=False)
    except DatawaveError as exc:
        _fail(exc)
    try:
        if not inspect(store.engine).has_table("audit_log"):
            raise StoreError(
                f"no audit log in the store {redact(url)}: it is not set up yet or predates the "
                "audit log (start the core with `datawave up` to migrate it)"
            )
        yield store
    except (DatawaveError, SQLAlchemyError) as exc:
        _fail(exc if isinstance(exc, DatawaveError) else StoreError(f"store: {type(exc).__name__}"))
    finally:
        store.close()


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            help="SEQ:HASH recorded earlier with `datawave audit head`; without it, entries "
            "removed from the end of the log cannot be noticed",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Walk the whole chain; exit 1 and name every problem if an entry was edited, removed or
    moved."""
    try:
        expected = parse_head(expect_head) if expect_head else None
    except ValueError as exc:
        _fail(exc)
    with _store() as store:
        report = store.verify_audit(expected_head=expected)
    if json_out:
        emit_json({**report.model_dump(mode="json"), "head": report.head})
    elif report.ok:
        anchored = f", matches the recorded head {expected[0]}" if expected else ""
        console.print(
            f"audit log verified: {report.checked} entries, head {report.head or 'none'}{anchored}",
            soft_wrap=True,
        )
    else:
        table(f"audit log problems ({len(report.problems)})", ["seq", "kind", "problem"],
              [(p.seq, p.kind, p.message) for p in report.problems[:200]])  # fmt: skip
        first = report.problems[0]
        err_console.print(
            f"[red]error:[/red] audit log does not verify: {len(report.problems)} problem(s) in "
            f"{report.checked} entries; first at seq {first.seq}: {escape(first.message)}",
            soft_wrap=True,
        )
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("head")
def audit_head(json_out: JsonOpt = False) -> None:
    """Print the newest entry as SEQ:HASH. Record it outside this system (a ticket, another
    host): `verify --expect-head` then proves nothing before it was changed or cut off."""
    with _store() as store:
        head = store.audit_head()
    seq, digest = head if head is not None else (0, GENESIS)
    if json_out:
        emit_json({"seq": seq, "hash": digest, "head": f"{seq}:{digest}"})
    else:
        print(f"{seq}:{digest}")


@audit_app.command("list")
def audit_list(
    principal: Annotated[str | None, typer.Option(help="Only this principal label")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source (name or id)")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action; `auth.*` for a prefix")
    ] = None,
    since: Annotated[str | None, typer.Option(help="From: 30m, 2h, 7d or an ISO time")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive): same forms")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest N matching entries")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The newest matching entries, oldest of them first."""
    try:
        start = parse_when(since) if since else None
        end = parse_when(until) if until else None
    except ValueError as exc:
        _fail(exc)
    with _store() as store:
        source_id = None
        if source is not None:
            rec = store.find_source(source, include_deleted=True)
            source_id = rec.id if rec is not None else source
        entries = store.query_audit(
            principal=principal, source_id=source_id, action=action, since=start, until=end,
            limit=limit, newest_first=True,
        )  # fmt: skip
        entries.reverse()
        names: dict[str, str] = {}
        for sid in {e.source_id for e in entries if e.source_id}:
            rec = store.find_source(sid, include_deleted=True)
            names[sid] = rec.name if rec is not None else sid
    if json_out:
        emit_json(entries)
        return
    table("audit log", ["seq", "at", "principal", "action", "outcome", "source", "target",
                        "detail"], [
        (e.seq, e.at.isoformat(timespec="seconds"), e.principal, e.action, e.outcome,
         names.get(e.source_id or "", ""), e.target,
         json.dumps(e.detail, separators=(",", ":"))[:80] if e.detail else "")
        for e in entries
    ])  # fmt: skip
