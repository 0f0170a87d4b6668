"""Per-app state handed to the routes: the backend, a thread pool, the event broadcaster and
the idempotency cache. One :class:`ApiContext` per app instance (per Serve replica)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import Response

from datawave.datasource.config import ApiSettings, AuthSettings
from datawave.datasource.security.policy import Policy
from datawave.datasource.serve.backend import Backend
from datawave.datasource.serve.events import Broadcaster
from datawave.datasource.serve.problems import ApiError
from datawave.datasource.serve.readstore import SourceCache
from datawave.datasource.serve.search import SearchIndex

__all__ = ["ApiContext", "Cursor", "IdempotencyCache", "get_ctx"]

T = TypeVar("T")
_ID_NAMESPACE = uuid.UUID("6f1c7c59-1f7e-4c55-9a55-3f2c1d9b7e10")


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]
    media_type: str | None


class IdempotencyCache:
    """Replays the response of a POST made with the same ``Idempotency-Key``.

    Bounded LRU per replica. Cross-replica safety comes from deriving the ids a POST creates
    (source id, job id) from the key, so a replay on another replica lands on the same row or
    job; this cache only makes the replayed *response* byte-identical and cheap.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, _Stored] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def run(
        self, request: Request, key: str | None, produce: Callable[[], Awaitable[Response]]
    ) -> Response:
        if not key:
            return await produce()
        if len(key) > 255:
            raise ApiError("invalid_parameter", "Idempotency-Key is longer than 255 characters",
                           field="Idempotency-Key")  # fmt: skip
        body = await request.body()
        # Keys are per caller: another principal's key never replays this caller's response.
        who = getattr((request.scope.get("state") or {}).get("principal"), "id", "")
        slot = f"{who}\x1f{request.method} {request.url.path} {key}"
        fingerprint = hashlib.sha256(body).hexdigest()
        lock = self._locks.setdefault(slot, asyncio.Lock())
        try:
            async with lock:
                stored = self._items.get(slot)
                if stored is not None:
                    if stored.fingerprint != fingerprint:
                        raise ApiError("idempotency_key_reused",
                                       "Idempotency-Key was used with a different request body",
                                       field="Idempotency-Key")  # fmt: skip
                    self._items.move_to_end(slot)
                    return Response(stored.body, status_code=stored.status,
                                    headers={**stored.headers, "Idempotent-Replayed": "true"},
                                    media_type=stored.media_type)  # fmt: skip
                response = await produce()
                if response.status_code < 500:
                    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
                    self._items[slot] = _Stored(fingerprint, response.status_code,
                                                bytes(response.body), headers, response.media_type)  # fmt: skip
                    while len(self._items) > self.capacity:
                        self._items.popitem(last=False)
                return response
        finally:
            if not lock.locked():
                self._locks.pop(slot, None)

    @staticmethod
    def derive_id(key: str | None, scope: str) -> str | None:
        """A stable id for what a keyed POST creates (same key, same id, any replica)."""
        return None if not key else str(uuid.uuid5(_ID_NAMESPACE, f"{scope}\x1f{key}"))


class Cursor:
    """Opaque keyset cursors: base64url JSON of the last key of a page (plus its kind)."""

    @staticmethod
    def encode(kind: str, key: Any) -> str:
        raw = json.dumps({"k": kind, "v": key}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def decode(kind: str, token: str | None) -> Any:
        if token is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("k") != kind or "v" not in doc:
                raise ValueError("wrong cursor kind")
            return doc["v"]
        except (ValueError, UnicodeDecodeError, TypeError) as exc:
            raise ApiError("invalid_cursor", "cursor is not valid for this listing",
                           field="cursor") from exc  # fmt: skip


@dataclass
class ApiContext:
    """Per-app state. ``auth_store`` is a writable, sealer-less store for the API's own rows
    (API keys, the audit log); every other read goes to ``backend.store``."""

    backend: Backend
    api: ApiSettings
    threads: int = 32
    auth: AuthSettings = field(default_factory=AuthSettings)
    auth_store: Any = None
    appender: Any = None
    broadcaster: Broadcaster = field(init=False)
    policy: Policy = field(init=False)
    idempotency: IdempotencyCache = field(default_factory=IdempotencyCache)
    sources: SourceCache = field(default_factory=SourceCache)
    search: SearchIndex = field(default_factory=SearchIndex)
    _pool: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        self.broadcaster = Broadcaster(self.backend.events)
        self.policy = Policy(self.auth.custom_roles)

    @property
    def store(self) -> Any:
        return self.backend.store

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call on the app's own worker threads."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dw-api")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    async def close(self) -> None:
        await self.broadcaster.stop()
        if self.auth_store is not None and self.auth_store is not self.backend.store:
            self.auth_store.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


async def get_ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
