"""The ``datawave`` command line (Typer + rich). Tables for people, ``--json`` for scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from datawave.datasource.cli.output import console, emit_json, err_console, table
from datawave.datasource.config import load_settings
from datawave.datasource.errors import DatawaveError, ValidationFailed

app = typer.Typer(no_args_is_help=True, help="datawave datasource: register, test, discover, watch.")
sources_app = typer.Typer(no_args_is_help=True, help="Register and manage data sources.")
app.add_typer(sources_app, name="sources")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _fail(exc: Exception) -> None:
    msg = str(exc)
    if isinstance(exc, ValidationFailed) and exc.errors:
        msg += "".join(f"\n  - {e['field']}: {e['message']}" for e in exc.errors)
    err_console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2 if isinstance(exc, ValueError) else 1)


def _client() -> Any:
    from datawave.datasource import connect

    return connect()


def _parse_kv(pairs: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"{what} must be key=value, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


# -- core ------------------------------------------------------------------------------------
@app.command()
def up(json_out: JsonOpt = False) -> None:
    """Start the core (Ray head + owner actors) in the background; returns when ready."""
    from datawave.datasource.cli.core import core_up

    try:
        state = core_up(load_settings(), echo=console.print)
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(state)
        return
    table("datawave core is up", ["what", "where"], [
        ("Ray address", state["ray_address"]),
        ("Ray dashboard", state.get("dashboard_url") or "(disabled)"),
        ("store", state["store_url"]),
        ("owner shards", state["shards"]),
        ("data dir", state["data_dir"]),
        ("logs", state["logs"]),
    ])  # fmt: skip


@app.command()
def down() -> None:
    """Stop the core started by `datawave up`."""
    from datawave.datasource.cli.core import core_down

    console.print("core stopped" if core_down(load_settings()) else "core was not running")


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Show whether the core runs and what it holds."""
    from datawave.datasource.cli.core import _alive, read_state

    settings = load_settings()
    state = read_state(settings)
    if not state or not _alive(int(state.get("ray_pid", 0))):
        if json_out:
            emit_json({"running": False})
        else:
            console.print("core is [red]not running[/red] (start it with `datawave up`)")
        raise typer.Exit(3)
    client = _client()
    info = {**state, "running": True, "sources": client.store.count_sources()}
    if json_out:
        emit_json(info)
        return
    table("datawave core", ["what", "value"], [(k, v) for k, v in info.items()])


@app.command()
def connectors(json_out: JsonOpt = False) -> None:
    """List connector plugins and whether they are enabled."""
    from datawave.datasource.connectors import ConnectorRegistry

    plugins = ConnectorRegistry().list()
    if json_out:
        emit_json([{"name": p.name, "enabled": p.enabled, "reason": p.reason, "extra": p.extra}
                   for p in plugins])  # fmt: skip
        return
    table("connectors", ["type", "enabled", "note"],
          [(p.name, "yes" if p.enabled else "no", p.reason or p.description) for p in plugins])  # fmt: skip


# -- sources ---------------------------------------------------------------------------------
@sources_app.command("add")
def sources_add(
    name: str,
    type_: Annotated[str, typer.Option("--type", "-t", help="Connector type")],
    config: Annotated[str | None, typer.Option(help="Config as JSON")] = None,
    config_file: Annotated[Path | None, typer.Option(help="Config JSON file")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Config key=value (repeatable)")] = [],  # noqa: B006
    secret: Annotated[list[str], typer.Option(help="Prompt (hidden) for this config key")] = [],  # noqa: B006
    label: Annotated[list[str], typer.Option(help="key=value label (repeatable)")] = [],  # noqa: B006
    collection: str | None = None,
    edge_site: str | None = None,
    description: str | None = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a source (validated; nothing is stored when the config is invalid)."""
    cfg: dict[str, Any] = {}
    if config_file:
        cfg.update(json.loads(config_file.read_text()))
    if config:
        cfg.update(json.loads(config))
    cfg.update(_parse_kv(set_, "--set"))
    for key in secret:
        cfg[key] = typer.prompt(key, hide_input=True) if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    labels = {k: str(v) for k, v in _parse_kv(label, "--label").items()}
    try:
        rec = _client().register(name, type_, cfg, labels=labels, collection=collection,
                                 edge_site=edge_site, description=description)  # fmt: skip
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(rec)
    else:
        console.print(f"registered [bold]{rec.name}[/bold] ({rec.type}) id={rec.id} shard={rec.owner_shard}")


@sources_app.command("list")
def sources_list(
    type_: Annotated[str | None, typer.Option("--type")] = None,
    label: Annotated[list[str], typer.Option()] = [],  # noqa: B006
    collection: str | None = None,
    json_out: JsonOpt = False,
) -> None:
    """List registered sources."""
    labels = {k: str(v) for k, v in _parse_kv(label, "--label").items()} or None
    recs = _client().sources(type=type_, labels=labels, collection=collection)
    if json_out:
        emit_json(recs)
        return
    table("sources", ["name", "type", "health", "labels", "collection", "edge", "last discovered"], [
        (r.name, r.type, r.health, ",".join(f"{k}={v}" for k, v in r.labels.items()),
         r.collection, r.edge_site, r.last_discovered_at) for r in recs
    ])  # fmt: skip


@sources_app.command("show")
def sources_show(ref: str, json_out: JsonOpt = False) -> None:
    """Show a source, its last runs and its discovered tables."""
    client = _client()
    try:
        rec = client.get(ref)
    except DatawaveError as exc:
        _fail(exc)
    counts = client.store.asset_counts(rec.id)
    runs = client.runs(rec.id, limit=5)
    tables = client.tables(rec.id, limit=50, with_columns=False)
    if json_out:
        emit_json({"source": rec, "counts": counts, "runs": runs, "tables": tables})
        return
    table(f"source {rec.name}", ["field", "value"], [
        ("id", rec.id), ("type", rec.type), ("config", json.dumps(rec.config)),
        ("secrets", ", ".join(rec.secret_fields) + " (sealed)" if rec.secret_fields else "none"),
        ("labels", rec.labels), ("shard", rec.owner_shard), ("health", rec.health),
        *counts.items(),
    ])  # fmt: skip
    table("last runs", ["started", "status", "tables", "written", "ms", "errors"], [
        (r.started_at, r.status.value, r.counters.get("tables"), r.counters.get("rows_written"),
         r.duration_ms, "; ".join(r.errors)[:80]) for r in runs
    ])  # fmt: skip
    table("tables (first 50)", ["database", "schema", "name", "kind", "rows~", "comment"], [
        (t.database, t.schema_name, t.name, t.kind.value, t.row_estimate, t.comment) for t in tables
    ])  # fmt: skip


@sources_app.command("test")
def sources_test(ref: str, json_out: JsonOpt = False) -> None:
    """Test the connection step by step."""
    try:
        rep = _client().test(ref)
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(rep)
    else:
        table(f"test: {'[green]ok' if rep.ok else '[red]failed'}", ["step", "status", "ms", "error"],
              [(s.name, s.status.value, f"{s.duration_ms:.1f}", s.error) for s in rep.steps])  # fmt: skip
    if not rep.ok:
        raise typer.Exit(1)


@sources_app.command("remove")
def sources_remove(ref: str, purge: bool = typer.Option(False, help="Also delete metadata")) -> None:
    """Remove a source (soft by default: metadata is kept)."""
    try:
        _client().remove(ref, purge=purge)
    except DatawaveError as exc:
        _fail(exc)
    console.print(f"removed {ref}{' (purged)' if purge else ''}")


# -- discovery -------------------------------------------------------------------------------
@app.command()
def discover(
    refs: Annotated[list[str] | None, typer.Argument(help="Source names or ids")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every registered source")] = False,
    label: Annotated[list[str], typer.Option()] = [],  # noqa: B006
    json_out: JsonOpt = False,
) -> None:
    """Discover sources with a live progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from datawave.datasource.models import SourceSelector

    client = _client()
    labels = {k: str(v) for k, v in _parse_kv(label, "--label").items()}
    if not (refs or all_ or labels):
        _fail(ValidationFailed("name a source, or pass --all / --label", errors=[]))
    try:
        if refs:
            job = client.discover_many(refs)
        else:
            job = client.discover_many(SourceSelector(all=all_, labels=labels))
        if json_out:
            view = job.wait()
        else:
            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:  # fmt: skip
                task = bar.add_task("discovering", total=None)

                def show(v: Any) -> None:
                    bar.update(task, total=v.total, completed=v.done + v.failed,
                               description=f"discovering ({v.failed} failed)")  # fmt: skip

                view = job.wait(on_progress=show)
    except DatawaveError as exc:
        _fail(exc)
    runs = {i.source_id: i for i in view.items}
    if json_out:
        emit_json(view)
    else:
        table(f"job {view.id}: {view.status.value}", ["source", "status", "run", "error"],
              [(i.source_name, i.status, i.run_id, i.error) for i in runs.values()])  # fmt: skip
    if view.failed:
        raise typer.Exit(1)


@app.command()
def drift(ref: str, breaking: bool = typer.Option(False, help="Only breaking changes"),
          json_out: JsonOpt = False) -> None:  # fmt: skip
    """Show drift events of a source, newest last."""
    try:
        events = _client().drift(ref, breaking=True if breaking else None)
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(events)
        return
    table(f"drift of {ref}", ["when", "kind", "table", "column", "breaking", "before → after"], [
        (e.detected_at, e.kind.value, e.table, e.column, "yes" if e.breaking else "",
         f"{e.before} → {e.after}") for e in events
    ])  # fmt: skip


@app.command()
def demo(
    path: Annotated[Path, typer.Option(help="Folder holding shop.sqlite and lake/")] = Path("demo"),
) -> None:
    """Register and discover the bundled demo sources, then show what was found."""
    from datawave.datasource.errors import Conflict

    client = _client()
    path = path.resolve()
    specs = [
        ("demo-shop", "sqlite", {"path": str(path / "shop.sqlite")}),
        ("demo-lake", "files", {"root": str(path / "lake")}),
    ]
    for name, type_, cfg in specs:
        try:
            client.register(name, type_, cfg, labels={"demo": "true"}, collection="demo")
        except Conflict:
            pass
    view = client.discover_many({"labels": {"demo": "true"}}).wait(timeout_s=300)
    for item in view.items:
        rec = client.get(item.source_id)
        counts = client.store.asset_counts(rec.id)
        console.print(f"[bold]{rec.name}[/bold] ({rec.type}): {item.status} — "
                      f"{counts['tables']} tables, {counts['columns']} columns")  # fmt: skip
        for t in client.tables(rec.id, limit=20):
            cols = ", ".join(f"{c.name} {c.data_type}" for c in t.columns[:6])
            more = f" …(+{len(t.columns) - 6})" if len(t.columns) > 6 else ""
            console.print(f"  {t.schema_name}.{t.name} [{t.kind.value}] ({cols}{more})")


def main() -> None:
    try:
        app()
    except DatawaveError as exc:
        _fail(exc)


if __name__ == "__main__":
    main()
