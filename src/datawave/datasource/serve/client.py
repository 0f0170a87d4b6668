"""HTTP client for the datawave API (httpx), sync and async.

Errors come back as the same exceptions the library raises: a problem+json ``code`` is turned
into the ``errors.py`` class with that code, carrying the problem's fields, so callers (and the
CLI) handle a remote ``NotFound`` exactly like a local one.

    with HttpClient("http://127.0.0.1:8000", api_key=key) as api:
        src = api.create_source("shop", "sqlite", {"path": "shop.sqlite"})
        job = api.wait_job(api.discover(src.id).id)

The key travels as ``Authorization: Bearer``; :func:`api_key_from` finds it the way the CLI
does (``DATAWAVE_API_KEY``, else the bootstrap key file of ``datawave up``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from datawave.datasource import errors
from datawave.datasource.models import (
    DriftEvent,
    JobStatus,
    JobView,
    RunSummary,
    SourceRecord,
    TableInfo,
    TestReport,
)

__all__ = ["ApiFacade", "AsyncHttpClient", "HttpClient", "api_key_from", "error_from_problem"]

API_KEY_ENV = "DATAWAVE_API_KEY"


def api_key_from(env: Mapping[str, str], data_dir: Path | None) -> str | None:
    """The API key to send: ``env["DATAWAVE_API_KEY"]``, else ``<data_dir>/admin.key`` when
    readable (the bootstrap key `datawave up` wrote), else None. ``env`` is passed in by the
    entry point: the library never reads the environment itself."""
    key = (env.get(API_KEY_ENV) or "").strip()
    if key:
        return key
    if data_dir is not None:
        try:
            return (data_dir / "admin.key").read_text().strip() or None
        except OSError:
            return None
    return None


def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


_RUNNING = (JobStatus.PENDING, JobStatus.RUNNING)


def _error_classes() -> dict[str, type[errors.DatawaveError]]:
    out: dict[str, type[errors.DatawaveError]] = {}
    todo: list[type[errors.DatawaveError]] = [errors.DatawaveError]
    while todo:
        cls = todo.pop()
        out.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return out


_BY_CODE = _error_classes()


def error_from_problem(resp: httpx.Response) -> errors.DatawaveError:
    """The library exception matching a problem+json response."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or f"http_{resp.status_code}")
    detail = str(body.get("detail") or resp.reason_phrase or "request failed")
    ctx = {k: v for k, v in body.items()
           if k not in ("type", "title", "detail", "code", "instance", "errors", "message")}  # fmt: skip
    ctx["status"] = resp.status_code
    if code == "precondition_failed":
        return errors.Conflict(detail, **ctx)
    cls = _BY_CODE.get(code)
    if cls is errors.ValidationFailed or (cls is None and resp.status_code == 422):
        return errors.ValidationFailed(detail, errors=body.get("errors") or [], **ctx)
    if cls is None:
        err = errors.DatawaveError(detail, **ctx)
        err.code = code
        return err
    return cls(detail, **ctx)


@dataclass
class _Call:
    method: str
    path: str
    parse: Callable[[httpx.Response], Any] = lambda r: r.json()
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _q(ref: str) -> str:
    from urllib.parse import quote

    return quote(ref, safe="")


class _Ops:
    """Request builders shared by the sync and async clients (one definition per endpoint)."""

    @staticmethod
    def create_source(name: str, type: str, config: Mapping[str, Any], *,
                      labels: Mapping[str, str] | None = None, collection: str | None = None,
                      edge_site: str | None = None, description: str | None = None,
                      idempotency_key: str | None = None) -> _Call:  # fmt: skip
        body = {"name": name, "type": type, "config": dict(config), "labels": dict(labels or {}),
                "collection": collection, "edge_site": edge_site, "description": description}  # fmt: skip
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _Call("POST", "/v1/sources", lambda r: SourceRecord.model_validate(r.json()),
                     json=body, headers=headers)  # fmt: skip

    @staticmethod
    def sources_page(cursor: str | None = None, limit: int = 500, **filters: Any) -> _Call:
        params: dict[str, Any] = {
            "limit": limit,
            **{k: v for k, v in filters.items() if v is not None},
        }
        labels = params.pop("labels", None)
        if labels:
            params["label"] = [f"{k}={v}" for k, v in labels.items()]
        if cursor:
            params["cursor"] = cursor
        return _Call("GET", "/v1/sources", params=params)

    @staticmethod
    def get_source(ref: str) -> _Call:
        return _Call(
            "GET", f"/v1/sources/{_q(ref)}", lambda r: SourceRecord.model_validate(r.json())
        )

    @staticmethod
    def update_source(ref: str, patch: Mapping[str, Any], *, if_match: int | None = None) -> _Call:
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else {}
        return _Call("PATCH", f"/v1/sources/{_q(ref)}", lambda r: SourceRecord.model_validate(r.json()),
                     json=dict(patch), headers=headers)  # fmt: skip

    @staticmethod
    def delete_source(ref: str, *, purge: bool = False) -> _Call:
        return _Call("DELETE", f"/v1/sources/{_q(ref)}", lambda r: None,
                     params={"purge": "true"} if purge else {})  # fmt: skip

    @staticmethod
    def test_source(ref: str) -> _Call:
        return _Call(
            "POST", f"/v1/sources/{_q(ref)}/test", lambda r: TestReport.model_validate(r.json())
        )

    @staticmethod
    def discover(ref: str, *, idempotency_key: str | None = None) -> _Call:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _Call("POST", f"/v1/sources/{_q(ref)}/discover", _job, headers=headers)

    @staticmethod
    def discover_many(*, sources: list[str] | None = None, selector: Mapping[str, Any] | None = None,
                      idempotency_key: str | None = None) -> _Call:  # fmt: skip
        body = {"sources": sources} if sources is not None else {"selector": dict(selector or {})}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _Call("POST", "/v1/discoveries", _job, json=body, headers=headers)

    @staticmethod
    def job(job_id: str, *, items: bool = True) -> _Call:
        return _Call("GET", f"/v1/jobs/{_q(job_id)}", _job, params={"items": str(items).lower()})

    @staticmethod
    def cancel_job(job_id: str) -> _Call:
        return _Call("POST", f"/v1/jobs/{_q(job_id)}/cancel", _job)

    @staticmethod
    def tables(ref: str, *, limit: int = 100, with_columns: bool = True, database: str | None = None,
               schema: str | None = None, cursor: str | None = None) -> _Call:  # fmt: skip
        params = {"limit": limit, "columns": str(with_columns).lower(), "database": database,
                  "schema": schema, "cursor": cursor}  # fmt: skip
        return _Call("GET", f"/v1/sources/{_q(ref)}/tables",
                     lambda r: [TableInfo.model_validate(t) for t in r.json()["items"]],
                     params={k: v for k, v in params.items() if v is not None})  # fmt: skip

    @staticmethod
    def table(ref: str, qualified_name: str) -> _Call:
        return _Call("GET", f"/v1/sources/{_q(ref)}/tables/{qualified_name}",
                     lambda r: TableInfo.model_validate(r.json()))  # fmt: skip

    @staticmethod
    def search(q: str, *, limit: int = 50) -> _Call:
        return _Call("GET", "/v1/search", params={"q": q, "limit": limit})

    @staticmethod
    def drift(ref: str, *, breaking: bool | None = None, limit: int = 1000) -> _Call:
        params: dict[str, Any] = {"limit": limit}
        if breaking is not None:
            params["breaking"] = str(breaking).lower()
        return _Call("GET", f"/v1/sources/{_q(ref)}/drift",
                     lambda r: [DriftEvent.model_validate(d) for d in r.json()["items"]], params=params)  # fmt: skip

    @staticmethod
    def runs(ref: str, *, limit: int = 20) -> _Call:
        return _Call("GET", f"/v1/sources/{_q(ref)}/runs",
                     lambda r: [RunSummary.model_validate(x) for x in r.json()], params={"limit": limit})  # fmt: skip

    @staticmethod
    def stats(ref: str) -> _Call:
        return _Call("GET", f"/v1/sources/{_q(ref)}/stats")

    @staticmethod
    def ready() -> _Call:
        return _Call("GET", "/readyz")


def _job(r: httpx.Response) -> JobView:
    return JobView.model_validate({k: v for k, v in r.json().items() if k != "progress"})


_OPS = [n for n in vars(_Ops) if not n.startswith("_")]


class HttpClient:
    """Blocking client. Every endpoint of :class:`_Ops` is a method with the same arguments."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers=_auth_headers(api_key))  # fmt: skip

    def _send(self, call: _Call) -> Any:
        try:
            r = self._http.request(call.method, call.path, params=call.params, json=call.json,
                                   headers=call.headers)  # fmt: skip
        except httpx.HTTPError as exc:
            raise errors.DatawaveError(f"cannot reach the API at {self.base_url}: {exc}") from None
        if r.status_code >= 400:
            raise error_from_problem(r)
        return call.parse(r)

    def __getattr__(self, name: str) -> Any:
        if name not in _OPS:
            raise AttributeError(name)
        op = getattr(_Ops, name)
        return lambda *a, **k: self._send(op(*a, **k))

    def list_sources(self, **filters: Any) -> list[SourceRecord]:
        out: list[SourceRecord] = []
        cursor = None
        while True:
            page = self._send(_Ops.sources_page(cursor, **filters))
            out += [SourceRecord.model_validate(s) for s in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return out

    def wait_job(self, job_id: str, timeout_s: float | None = None, *,
                 on_progress: Callable[[JobView], None] | None = None, poll_s: float = 0.25) -> JobView:  # fmt: skip
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            view: JobView = self._send(_Ops.job(job_id, items=False))
            if on_progress is not None:
                on_progress(view)
            if view.status not in _RUNNING:
                return self._send(_Ops.job(job_id))  # type: ignore[no-any-return]
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout_s}s")
            time.sleep(poll_s)

    def export(self, ref: str) -> Iterator[TableInfo]:
        with self._http.stream("GET", f"/v1/sources/{_q(ref)}/export") as r:
            if r.status_code >= 400:
                r.read()
                raise error_from_problem(r)
            for line in r.iter_lines():
                if line:
                    yield TableInfo.model_validate(json.loads(line))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncHttpClient:
    """The same endpoints for asyncio code."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None):  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       transport=transport, headers=_auth_headers(api_key))  # fmt: skip

    async def _send(self, call: _Call) -> Any:
        try:
            r = await self._http.request(call.method, call.path, params=call.params, json=call.json,
                                         headers=call.headers)  # fmt: skip
        except httpx.HTTPError as exc:
            raise errors.DatawaveError(f"cannot reach the API at {self.base_url}: {exc}") from None
        if r.status_code >= 400:
            raise error_from_problem(r)
        return call.parse(r)

    def __getattr__(self, name: str) -> Any:
        if name not in _OPS:
            raise AttributeError(name)
        op = getattr(_Ops, name)
        return lambda *a, **k: self._send(op(*a, **k))

    async def list_sources(self, **filters: Any) -> list[SourceRecord]:
        out: list[SourceRecord] = []
        cursor = None
        while True:
            page = await self._send(_Ops.sources_page(cursor, **filters))
            out += [SourceRecord.model_validate(s) for s in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return out

    async def wait_job(
        self, job_id: str, timeout_s: float | None = None, *, poll_s: float = 0.25
    ) -> JobView:
        async with asyncio.timeout(timeout_s):
            while True:
                view: JobView = await self._send(_Ops.job(job_id, items=False))
                if view.status not in _RUNNING:
                    return await self._send(_Ops.job(job_id))  # type: ignore[no-any-return]
                await asyncio.sleep(poll_s)

    async def export(self, ref: str) -> AsyncIterator[TableInfo]:
        async with self._http.stream("GET", f"/v1/sources/{_q(ref)}/export") as r:
            if r.status_code >= 400:
                await r.aread()
                raise error_from_problem(r)
            async for line in r.aiter_lines():
                if line:
                    yield TableInfo.model_validate(json.loads(line))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _StoreShim:
    def __init__(self, api: HttpClient) -> None:
        self._api = api

    def asset_counts(self, source_id: str) -> dict[str, int]:
        return self._api.stats(source_id)  # type: ignore[no-any-return]

    def count_sources(self) -> int:
        return len(self._api.list_sources())


class _JobHandle:
    def __init__(self, api: HttpClient, job_id: str) -> None:
        self.api = api
        self.id = job_id

    def progress(self) -> JobView:
        return self.api.job(self.id, items=False)  # type: ignore[no-any-return]

    def wait(self, timeout_s: float | None = None, *,
             on_progress: Callable[[JobView], None] | None = None) -> JobView:  # fmt: skip
        return self.api.wait_job(self.id, timeout_s, on_progress=on_progress)

    def result(self) -> JobView:
        return self.api.job(self.id)  # type: ignore[no-any-return]

    def cancel(self) -> JobView:
        return self.api.cancel_job(self.id)  # type: ignore[no-any-return]


class ApiFacade:
    """The driver :class:`~datawave.datasource.actors.client.Client` surface over HTTP, so the
    CLI runs unchanged against a running API server."""

    def __init__(self, api: HttpClient) -> None:
        self.api = api
        self.store = _StoreShim(api)

    def register(self, name: str, type: str, config: Mapping[str, Any], **kw: Any) -> SourceRecord:
        return self.api.create_source(name, type, config, **kw)  # type: ignore[no-any-return]

    def sources(self, **filters: Any) -> list[SourceRecord]:
        return self.api.list_sources(**filters)

    def get(self, ref: str) -> SourceRecord:
        return self.api.get_source(ref)  # type: ignore[no-any-return]

    def update(
        self, ref: str, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> SourceRecord:
        return self.api.update_source(ref, patch, if_match=expected_version)  # type: ignore[no-any-return]

    def remove(self, ref: str, *, purge: bool = False) -> None:
        self.api.delete_source(ref, purge=purge)

    def test(self, ref: str) -> TestReport:
        return self.api.test_source(ref)  # type: ignore[no-any-return]

    def discover(self, ref: str) -> RunSummary:
        view = self.api.wait_job(self.api.discover(ref).id)
        run_id = view.items[0].run_id if view.items else None
        runs = self.api.runs(ref, limit=5)
        return next((r for r in runs if r.run_id == run_id), runs[0])

    def discover_many(self, selector: Any) -> _JobHandle:
        if isinstance(selector, str):
            view = self.api.discover_many(
                selector={"all": True} if selector == "all" else {"names": [selector]}
            )
        elif hasattr(selector, "model_dump"):
            view = self.api.discover_many(selector=selector.model_dump(exclude_none=True))
        elif isinstance(selector, Mapping):
            view = self.api.discover_many(selector=dict(selector))
        else:
            view = self.api.discover_many(sources=list(selector))
        return _JobHandle(self.api, view.id)

    def job(self, job_id: str) -> _JobHandle:
        return _JobHandle(self.api, job_id)

    def tables(self, ref: str, **kw: Any) -> list[TableInfo]:
        return self.api.tables(ref, **kw)  # type: ignore[no-any-return]

    def drift(self, ref: str, *, breaking: bool | None = None) -> list[DriftEvent]:
        return self.api.drift(ref, breaking=breaking)  # type: ignore[no-any-return]

    def runs(self, ref: str, limit: int = 20) -> list[RunSummary]:
        return self.api.runs(ref, limit=limit)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.api.close()
