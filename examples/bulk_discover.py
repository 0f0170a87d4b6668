"""Register a fleet of PostgreSQL sources and discover them all in one bulk job.

Run it next to a core started with `datawave up`, or on a cluster as a Ray job (with
``RAY_AUTH_MODE=token`` and the cluster's token, see cluster/README.md):

    python examples/bulk_discover.py --database shop --count 50
    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        -- python examples/bulk_discover.py --database shop --count 500

Every source points at the same database (a stand-in for a real fleet) and carries the label
``fleet=<prefix>``, which is what the bulk job selects. Names that exist already are reused, so
running the script again rediscovers the same fleet. The password, if the server needs one, is
read from ``PGPASSWORD``: a secret never belongs on a command line. Exits 1 if any discovery
failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

import datawave.datasource as dw
from datawave.datasource.errors import Conflict
from datawave.datasource.models import JobView


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Register N PostgreSQL sources and discover them.")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--database", default="postgres", help="database every source discovers")
    p.add_argument("--count", type=int, default=10, help="how many sources to register")
    p.add_argument("--prefix", default="fleet", help="source names: <prefix>-0000, ...")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    client = dw.connect()  # the core recorded by `datawave up`, else address="auto"

    config: dict[str, object] = {
        "host": args.pg_host,
        "port": args.pg_port,
        "user": args.pg_user,
        "database": args.database,
        "databases": [args.database],
    }
    password = os.environ.get("PGPASSWORD")
    config.update({"password": password} if password else {"auth": "none"})
    labels = {"fleet": args.prefix}

    created = 0
    for i in range(args.count):
        try:
            client.register(f"{args.prefix}-{i:04d}", "postgresql", config, labels=labels)
            created += 1
        except Conflict:  # registered by an earlier run: keep it
            pass
    console.print(f"{created} sources registered, {args.count - created} already there")

    job = client.discover_many({"labels": labels})
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("discovering", total=None)

        def show(view: JobView) -> None:
            bar.update(task, total=view.total, completed=view.done + view.failed,
                       description=f"discovering ({view.failed} failed)")  # fmt: skip

        view = job.wait(on_progress=show)

    tables = sum(client.store.asset_counts(i.source_id)["tables"] for i in view.items)
    console.print(
        f"job {view.id}: {view.status.value}: {view.done} succeeded, {view.failed} failed "
        f"of {view.total}; {tables} tables known"
    )
    for item in view.items:
        if item.status == "failed":
            console.print(f"  [red]failed[/red] {item.source_name}: {escape(str(item.error))}")
    client.close()
    return 1 if view.failed else 0


if __name__ == "__main__":
    sys.exit(main())
