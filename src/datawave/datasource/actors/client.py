"""The Python driver API: ``datawave.datasource.connect()``.

Works from any process that can join the Ray cluster — a notebook, the CLI, or a script run with
``ray job submit``. Mutations and source work go to the owning actor; reads of discovered
metadata come straight from the store and never wake a source.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray

from datawave.datasource.actors.factory import JOBS_NAME, RayOwnerDirectory
from datawave.datasource.actors.payload import store_url_for
from datawave.datasource.actors.raynet import LOCAL_ONLY_ENV, apply_local_only, is_loopback
from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.engines import shard_for
from datawave.datasource.errors import DatawaveError
from datawave.datasource.models import (
    DriftEvent,
    JobStatus,
    JobView,
    RunSummary,
    SourceRecord,
    SourceSelector,
    TableInfo,
    TestReport,
)
from datawave.datasource.store import MetadataStore

__all__ = ["Client", "JobHandle", "apply_ray_auth", "connect", "ray_env"]


def ray_env(settings: DatawaveSettings, address: str | None = None) -> dict[str, str]:
    """Environment that lets a process join our token-protected Ray cluster.

    A head on loopback (what `datawave up` starts) also needs Ray's single-machine mode in the
    driver (:mod:`~datawave.datasource.actors.raynet`); a cluster on a private network must
    not get it, so it is added only when the address this process will join is loopback.
    """
    env = {"RAY_AUTH_MODE": "token"}
    if _joins_loopback(settings, address):
        env[LOCAL_ONLY_ENV] = "0"
    token = settings.data_dir / "ray_token"
    if token.exists() and "RAY_AUTH_TOKEN" not in os.environ:
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return env


def _joins_loopback(settings: DatawaveSettings, address: str | None) -> bool:
    """Whether the cluster this process joins (resolved as :func:`connect` does) is local."""
    for cand in (address, settings.ray.address, os.environ.get("RAY_ADDRESS"),
                 _recorded_address(settings.state_file)):  # fmt: skip
        if cand and cand != "auto":
            host = cand.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
            return is_loopback(host)
    return False


def apply_ray_auth(env: Mapping[str, str]) -> None:
    """Point this process at a cluster token, even when ``ray`` was imported already.

    Ray caches its auth config at import; after changing the variables the cache must be
    refreshed (what Ray's own test utilities do) or the old token is sent.
    """
    os.environ.update(env)
    apply_local_only(env)
    try:
        from ray._raylet import (  # type: ignore[attr-defined]
            AuthenticationTokenLoader,
            Config,
        )

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # older Ray: the variables alone suffice
        pass


def _unwrap(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, BaseException):
            raise exc.cause from None
        raise


class JobHandle:
    """A running bulk job: poll ``progress()`` or block on ``wait()``."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def progress(self) -> JobView:
        return _unwrap(lambda: ray.get(self.client._jobs.get.remote(self.id)))  # type: ignore[no-any-return]

    def wait(
        self,
        timeout_s: float | None = None,
        *,
        on_progress: Callable[[JobView], None] | None = None,
    ) -> JobView:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            view = self.progress()
            if on_progress is not None:
                on_progress(view)
            if view.status not in (JobStatus.PENDING, JobStatus.RUNNING):
                return self.result()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still running after {timeout_s}s")
            time.sleep(0.2)

    def result(self) -> JobView:
        return _unwrap(lambda: ray.get(self.client._jobs.get.remote(self.id, True)))  # type: ignore[no-any-return]

    @property
    def failures(self) -> list[Any]:
        return [i for i in self.result().items if i.status == "failed"]

    def cancel(self) -> JobView:
        return _unwrap(lambda: ray.get(self.client._jobs.cancel.remote(self.id)))  # type: ignore[no-any-return]


class Client:
    def __init__(self, settings: DatawaveSettings) -> None:
        self.settings = settings
        ns = settings.ray.namespace
        self._jobs = ray.get_actor(JOBS_NAME, namespace=ns)
        topo: Any = ray.get(self._jobs.topology.remote())
        self.shards: int = topo["shards"]
        #: Owner processes the shards are spread over (older cores: one per shard).
        self.processes: int = int(topo.get("processes", self.shards))
        self._owners: RayOwnerDirectory = RayOwnerDirectory(ns, self.processes)
        # Reads only, no sealer. The core reports its store with the password masked: the
        # password comes from this process's own settings (DATAWAVE_STORE_URL) or password file.
        url = store_url_for(topo["store_url"], settings, os.environ)
        self.store: MetadataStore = MetadataStore(url)

    def _call(self, shard: int, method: str, *args: Any) -> Any:
        return _unwrap(lambda: ray.get(self._owners.ref(shard, method, *args)))

    def owner_actor(self, shard: int) -> Any:
        """The Ray actor of the owner process that hosts ``shard`` (e.g. to kill it in a test)."""
        return self._owners.handle(shard)

    def _resolve(self, ref: str) -> SourceRecord:
        return self.store.get_source(ref)

    # -- sources -----------------------------------------------------------------------------
    def register(
        self,
        name: str,
        type: str,
        config: Mapping[str, Any],
        *,
        labels: Mapping[str, str] | None = None,
        collection: str | None = None,
        edge_site: str | None = None,
        description: str | None = None,
    ) -> SourceRecord:
        sid = str(uuid.uuid4())
        spec = {"name": name, "type": type, "config": dict(config), "labels": dict(labels or {}),
                "collection": collection, "edge_site": edge_site, "description": description}  # fmt: skip
        return self._call(shard_for(sid, self.shards), "register", spec, sid)  # type: ignore[no-any-return]

    def sources(self, **filters: Any) -> list[SourceRecord]:
        return self.store.list_sources(**filters)

    def get(self, ref: str) -> SourceRecord:
        return self._resolve(ref)

    def update(
        self, ref: str, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> SourceRecord:
        rec = self._resolve(ref)
        return self._call(rec.owner_shard, "update", rec.id, dict(patch), expected_version)  # type: ignore[no-any-return]

    def remove(self, ref: str, *, purge: bool = False) -> None:
        rec = self.store.get_source(ref, include_deleted=purge)
        self._call(rec.owner_shard, "remove", rec.id, purge)

    # -- work --------------------------------------------------------------------------------
    def test(self, ref: str) -> TestReport:
        rec = self._resolve(ref)
        return self._call(rec.owner_shard, "test", rec.id)  # type: ignore[no-any-return]

    def discover(self, ref: str) -> RunSummary:
        rec = self._resolve(ref)
        return self._call(rec.owner_shard, "discover", rec.id, None)  # type: ignore[no-any-return]

    def discover_many(
        self, selector: SourceSelector | Mapping[str, Any] | Sequence[str] | str
    ) -> JobHandle:
        """Start a bulk discovery. ``selector``: a selector, a list of names/ids, or "all"."""
        if isinstance(selector, str):
            sel = (
                SourceSelector(all=True) if selector == "all" else SourceSelector(names=[selector])
            )
        elif isinstance(selector, SourceSelector):
            sel = selector
        elif isinstance(selector, Mapping):
            sel = SourceSelector.model_validate(dict(selector))
        else:
            refs = list(selector)
            sel = SourceSelector(ids=[self._resolve(r).id for r in refs])
        view = _unwrap(lambda: ray.get(self._jobs.submit.remote(sel)))
        return JobHandle(self, view.id)

    def job(self, job_id: str) -> JobHandle:
        return JobHandle(self, job_id)

    # -- reads -------------------------------------------------------------------------------
    def tables(self, ref: str, **kw: Any) -> list[TableInfo]:
        return self.store.list_tables(self._resolve(ref).id, **kw)

    def drift(self, ref: str, *, breaking: bool | None = None) -> list[DriftEvent]:
        return self.store.list_drift(self._resolve(ref).id, breaking=breaking)

    def runs(self, ref: str, limit: int = 20) -> list[RunSummary]:
        return self.store.list_runs(self._resolve(ref).id, limit=limit)

    def close(self) -> None:
        self.store.close()


def connect(
    address: str | None = None,
    *,
    settings: DatawaveSettings | None = None,
    **ray_init: Any,
) -> Client:
    """Join the Ray cluster running a datawave core and return a :class:`Client`.

    Args:
        address: Ray address; default: ``settings.ray.address``, then ``RAY_ADDRESS`` (set for
            a driver run by ``ray job submit``), then the core recorded by ``datawave up``.
    """
    settings = settings or load_settings()
    if not ray.is_initialized():
        addr = (
            address
            or settings.ray.address
            or os.environ.get("RAY_ADDRESS")  # set by `ray job submit`
            or _recorded_address(settings.state_file)
            or "auto"
        )
        apply_ray_auth(ray_env(settings, addr))
        ray.init(address=addr, namespace=settings.ray.namespace, log_to_driver=False, **ray_init)
    if not ray.is_initialized():
        raise DatawaveError("could not join a Ray cluster")
    return Client(settings)


def _recorded_address(state_file: Path) -> str | None:
    import json

    try:
        return str(json.loads(state_file.read_text())["ray_address"])
    except (OSError, ValueError, KeyError):
        return None
