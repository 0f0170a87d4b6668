"""The ``datawave`` command line (Typer + rich). Tables for people, ``--json`` for scripts."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from datawave.datasource.cli.apikeys import apikeys_app
from datawave.datasource.cli.audit import audit_app
from datawave.datasource.cli.certs import certs_app
from datawave.datasource.cli.edge import edge_app
from datawave.datasource.cli.keys import keys_app
from datawave.datasource.cli.output import console, emit_json, err_console, table
from datawave.datasource.config import load_settings
from datawave.datasource.errors import DatawaveError, Unauthenticated, ValidationFailed

app = typer.Typer(
    no_args_is_help=True, help="datawave datasource: register, test, discover, watch."
)
sources_app = typer.Typer(no_args_is_help=True, help="Register and manage data sources.")
app.add_typer(sources_app, name="sources")
app.add_typer(edge_app, name="edge")
app.add_typer(certs_app, name="certs")
app.add_typer(apikeys_app, name="apikeys")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
alerts_app = typer.Typer(no_args_is_help=True, help="Alerts raised by the health rules.")
app.add_typer(alerts_app, name="alerts")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _report(exc: Exception) -> int:
    """Print ``exc`` for people and return the exit code: 2 for bad input, 1 otherwise."""
    msg = str(exc)
    if isinstance(exc, ValidationFailed) and exc.errors:
        msg += "".join(f"\n  - {e['field']}: {e['message']}" for e in exc.errors)
    if isinstance(exc, Unauthenticated):
        reason = exc.context.get("reason")
        msg = (f"the API refused the credential ({reason}): {msg}" if reason != "missing" else
               "no API key: export DATAWAVE_API_KEY=<key> (the first admin key is in "
               "<data dir>/admin.key; create more with `datawave apikeys create`)")  # fmt: skip
    # Messages carry user input (names, brackets): never markup. No hard wrap: scripts grep it.
    err_console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)
    return 2 if isinstance(exc, ValueError) else 1


def _fail(exc: Exception) -> NoReturn:
    raise typer.Exit(_report(exc))


def _api_client() -> Any | None:
    """The HTTP API recorded by `datawave up` (``api_url`` in the state file), if it answers."""
    from datawave.datasource.cli.core import read_state

    settings = load_settings()
    url = (read_state(settings) or {}).get("api_url")
    if not url:
        return None
    import httpx

    try:
        if httpx.get(f"{url}/healthz", timeout=2).status_code != 200:
            return None
    except httpx.HTTPError:
        return None
    from datawave.datasource.serve.client import ApiFacade, HttpClient, api_key_from

    return ApiFacade(HttpClient(url, api_key=api_key_from(os.environ, settings.data_dir)))


def _client() -> Any:
    from datawave.datasource import connect

    api = _api_client()
    if api is not None:
        return api
    try:
        return connect()
    except DatawaveError:
        raise
    except (ConnectionError, ValueError) as exc:  # no Ray cluster, or no core actors in it
        raise DatawaveError(
            f"cannot reach the datawave core: {exc} "
            "(start it with `datawave up`, or `datawave deploy` on a Ray cluster)"
        ) from None


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
        ("API", state.get("api_url") or "(not deployed)"),
        ("store", state["store_url"]),
        ("owner shards", state["shards"]),
        ("data dir", state["data_dir"]),
        ("logs", state["logs"]),
    ])  # fmt: skip


@app.command()
def deploy(json_out: JsonOpt = False) -> None:
    """Create the core actors on an existing Ray cluster (DATAWAVE_RAY__ADDRESS); idempotent."""
    import ray

    from datawave.datasource.actors import factory
    from datawave.datasource.actors.client import apply_ray_auth, ray_env

    settings = load_settings()
    apply_ray_auth(ray_env(settings))
    try:
        ray.init(address=settings.ray.address or "auto", namespace=settings.ray.namespace,
                 log_to_driver=False)  # fmt: skip
    except ConnectionError as exc:
        _fail(DatawaveError(f"cannot join the Ray cluster: {exc}"))
    try:
        from datawave.datasource.serve.events import EventHub

        pings = factory.wait_ready(factory.deploy(settings, detached=True, hub=EventHub))
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json({"namespace": settings.ray.namespace, "owners": pings})
        return
    table(f"datawave core in namespace {settings.ray.namespace!r}", ["shard", "host", "pid"],
          [(p["shard"], p["host"], p["pid"]) for p in pings])  # fmt: skip


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
        cfg[key] = (
            typer.prompt(key, hide_input=True)
            if sys.stdin.isatty()
            else sys.stdin.readline().rstrip("\n")
        )
    labels = {k: str(v) for k, v in _parse_kv(label, "--label").items()}
    try:
        rec = _client().register(name, type_, cfg, labels=labels, collection=collection,
                                 edge_site=edge_site, description=description)  # fmt: skip
    except DatawaveError as exc:
        _fail(exc)
    if json_out:
        emit_json(rec)
    else:
        console.print(
            f"registered [bold]{rec.name}[/bold] ({rec.type}) id={rec.id} shard={rec.owner_shard}"
        )


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
def sources_remove(
    ref: str, purge: bool = typer.Option(False, help="Also delete metadata")
) -> None:
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
        with contextlib.suppress(Conflict):  # registered by an earlier run
            client.register(name, type_, cfg, labels={"demo": "true"}, collection="demo")
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


# -- health, alerts, report ------------------------------------------------------------------
@app.command()
def health(
    ref: Annotated[str | None, typer.Argument(help="Source name or id; omit for the fleet")] = None,
    hours: Annotated[float, typer.Option(help="History window for latency and uptime")] = 24.0,
    sweep: Annotated[bool, typer.Option("--sweep", help="Check every source now first")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Health of one source (state, latency min/avg/p95, uptime) or of the whole fleet."""
    from datetime import UTC, datetime, timedelta

    client = _client()
    since = datetime.now(UTC) - timedelta(hours=hours)
    if sweep:
        import ray

        from datawave.datasource import connect
        from datawave.datasource.actors.factory import HEALTH_NAME

        # A sweep is an operator action on the core's scheduler: through Ray even when the
        # other commands go through the running API (whose client has no Ray handle).
        core = client if hasattr(client, "settings") else connect()
        sched = ray.get_actor(HEALTH_NAME, namespace=core.settings.ray.namespace)
        done: Any = ray.get(sched.sweep.remote())
        if not json_out:
            console.print(
                f"swept {done.get('checked', 0)} sources in {done.get('duration_s', 0)} s"
            )
    if ref is None:
        counts = client.store.health_counts()
        bad = [r for r in client.sources() if r.health in ("down", "degraded")]
        if json_out:
            emit_json(
                {"states": counts, "unhealthy": [{"name": r.name, "health": r.health} for r in bad]}
            )
            return
        table("sources by health", ["state", "sources"], sorted(counts.items()))
        if bad:
            statuses = {r.id: client.store.get_health(r.id) for r in bad[:50]}
            table("not healthy (first 50)", ["source", "state", "since", "last error"], [
                (r.name, r.health, getattr(statuses[r.id], "since", None),
                 (getattr(statuses[r.id], "last_error", None) or "")[:80]) for r in bad[:50]
            ])  # fmt: skip
        return
    try:
        rec = client.get(ref)
    except DatawaveError as exc:
        _fail(exc)
    st = client.store.get_health(rec.id)
    summ = client.store.latency_summary([rec.id], since=since).get(rec.id)
    if json_out:
        emit_json({"source": rec.name, "status": st, "window_hours": hours, "summary": summ})
        return
    rows: list[tuple[str, Any]] = [("state", rec.health)]
    if st is not None:
        rows += [("since", st.since), ("last checked", st.last_checked_at),
                 ("last latency ms", st.last_latency_ms), ("last error", st.last_error)]  # fmt: skip
    if summ is not None:
        rows += [("checks", summ.checks), ("uptime", f"{(summ.uptime or 0) * 100:.2f} %"),
                 ("min / avg / p95 / max ms",
                  f"{summ.min_ms} / {summ.avg_ms} / {summ.p95_ms} / {summ.max_ms}")]  # fmt: skip
    table(f"health of {rec.name} (last {hours:g} h)", ["what", "value"], rows)


@alerts_app.command("list")
def alerts_list(
    status_: Annotated[str, typer.Option("--status", help="firing, resolved or all")] = "firing",
    rule: Annotated[str | None, typer.Option(help="Only this rule")] = None,
    limit: int = 100,
    json_out: JsonOpt = False,
) -> None:
    """List alerts (firing by default), newest first."""
    if status_ not in ("firing", "resolved", "all"):
        _fail(ValidationFailed("--status must be firing, resolved or all",
                               errors=[{"field": "status", "message": "invalid"}]))  # fmt: skip
    client = _client()
    rows = client.store.list_alerts(status=None if status_ == "all" else status_, rule=rule,
                                    limit=limit)  # fmt: skip
    if json_out:
        emit_json(rows)
        return
    table(f"alerts ({status_})", ["fired", "rule", "severity", "status", "resolved", "message"], [
        (a.fired_at, a.rule, a.severity, a.status, a.resolved_at, a.message[:100]) for a in rows
    ])  # fmt: skip


@app.command()
def report(
    format_: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    hours: Annotated[float, typer.Option(help="Window, ending now")] = 24.0,
    top: Annotated[int | None, typer.Option(help="Only the N costliest sources")] = None,
) -> None:
    """Per-source usage, error rates and cost (time spent on the source) over a window."""
    from datawave.datasource.engines.analytics import report_csv, usage_report

    if format_ not in ("table", "json", "csv"):
        _fail(ValidationFailed("--format must be table, json or csv",
                               errors=[{"field": "format", "message": "invalid"}]))  # fmt: skip
    rows = usage_report(_client().store, hours=hours, top=top)
    if format_ == "json":
        emit_json(rows)
    elif format_ == "csv":
        sys.stdout.write(report_csv(rows))
    else:
        table(f"usage, last {hours:g} h", ["source", "type", "health", "checks", "err %", "uptime",
                                           "p95 ms", "discoveries", "disc err", "api reads", "cost s"], [
            (r.name, r.type, r.health, r.checks,
             None if r.check_error_rate is None else f"{r.check_error_rate * 100:.1f}",
             None if r.uptime is None else f"{r.uptime * 100:.2f} %", r.p95_ms, r.discoveries,
             r.discovery_errors, r.api_reads, r.cost_s) for r in rows
        ])  # fmt: skip


def main() -> None:
    try:
        app()
    except DatawaveError as exc:  # raised outside a command's own handler
        sys.exit(_report(exc))


if __name__ == "__main__":
    main()
