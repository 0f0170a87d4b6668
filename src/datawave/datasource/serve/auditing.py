"""The API's side of the audit log: mutating calls, denials and authentication failures.

:class:`AuditTrail` is a pure-ASGI middleware inside :class:`~.auth.AuthGuard`. It appends one
entry per mutating request (POST, PUT, PATCH, DELETE — GraphQL queries are reads) and per 403 on
any request, right before the response starts, so a client that got its answer finds the entry.
The action comes from one table (:data:`ACTIONS`, by method and route template); routes add the
source, the target and the *names* of changed fields with :func:`note` — never a request body,
so a secret sent in a body never reaches the log.

Authentication failures are appended by :class:`FailureAudit`, rate-limited per remote address
and reason so a flood of bad credentials cannot become a write storm: the first of each always
goes in, later ones within the burst too, and the number suppressed is carried by the next entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datawave.datasource.errors import Unauthenticated
from datawave.datasource.security.principal import Principal

__all__ = ["ACTIONS", "AuditTrail", "FailureAudit", "note", "outcome_for"]

log = logging.getLogger(__name__)

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READ_ONLY_POSTS = frozenset({"/graphql"})

#: (method, route template under /v1) -> audit action. Others are named ``<method> <route>``.
ACTIONS: dict[tuple[str, str], str] = {
    ("POST", "/sources"): "source.create",
    ("PATCH", "/sources/{ref}"): "source.update",
    ("DELETE", "/sources/{ref}"): "source.delete",
    ("POST", "/sources/{ref}/test"): "source.test",
    ("POST", "/sources/{ref}/discover"): "discovery.start",
    ("POST", "/discoveries"): "job.create",
    ("POST", "/jobs/{job_id}/cancel"): "job.cancel",
    ("POST", "/apikeys"): "apikey.create",
    ("DELETE", "/apikeys/{key_id}"): "apikey.revoke",
    ("GET", "/apikeys"): "apikey.list",
    ("GET", "/audit"): "audit.query",
    ("GET", "/edges"): "edge.list",
    ("GET", "/events"): "events.subscribe",
}

Runner = Callable[..., Awaitable[Any]]


def outcome_for(status: int) -> str:
    if status < 400:
        return "ok"
    return "denied" if status in (401, 403) else "failed"


def note(conn: HTTPConnection, **fields: Any) -> None:
    """Add ``source_id``, ``target`` or detail fields (``fields=[...]``) to this call's entry."""
    state = conn.scope.setdefault("state", {})
    state.setdefault("audit", {}).update({k: v for k, v in fields.items() if v is not None})


def action_for(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    if path == "/graphql" or path.startswith("/graphql/"):
        return "graphql.query"
    template = str(getattr(scope.get("route"), "path", None) or path).removeprefix("/v1")
    method = "GET" if scope["type"] == "websocket" else str(scope.get("method", "GET"))
    return ACTIONS.get((method, template), f"{method.lower()} {template}")


def _principal_label(scope: Scope) -> str:
    p = (scope.get("state") or {}).get("principal")
    return p.label if isinstance(p, Principal) else "anonymous"


class Appender:
    """Writes one entry on a worker thread; a failing store is logged, never raised."""

    def __init__(self, store: Any, run: Runner) -> None:
        self.store = store
        self.run = run

    async def __call__(self, action: str, **kwargs: Any) -> None:
        if self.store is None:
            return
        try:
            await self.run(self.store.append_audit, action, **kwargs)
        except Exception as exc:
            log.error("audit append failed for %s: %s", action, type(exc).__name__)

    async def for_scope(self, scope: Scope, status: int) -> None:
        info = dict((scope.get("state") or {}).get("audit") or {})
        source_id = info.pop("source_id", None)
        target = info.pop("target", None)
        detail = {"method": scope.get("method", "WS"), "path": scope.get("path"),
                  "status": status, **info}  # fmt: skip
        await self(action_for(scope), principal=_principal_label(scope),
                   outcome=outcome_for(status), source_id=source_id,
                   target=None if target is None else str(target), detail=detail)  # fmt: skip


class AuditTrail:
    """Appends an entry for every mutating call and every 403, before the response starts."""

    def __init__(self, app: ASGIApp, *, appender: Appender) -> None:
        self.app = app
        self.appender = appender

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        mutating = scope["method"] in _MUTATING and scope["path"] not in _READ_ONLY_POSTS
        started = False

        async def audited_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                if mutating or status == 403:
                    await self.appender.for_scope(scope, status)
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if mutating and not started:  # the 500 is written further out
                await self.appender.for_scope(scope, 500)
            raise


class FailureAudit:
    """Appends ``auth.failure`` entries, at most ``burst`` per remote and reason at once and
    then ``per_s`` a second; what is held back is counted into the next entry written."""

    def __init__(
        self, appender: Appender, *, burst: float = 20, per_s: float = 1.0, max_keys: int = 10_000
    ) -> None:
        self.appender = appender
        self.burst = burst
        self.per_s = per_s
        self.max_keys = max_keys
        self._buckets: dict[tuple[str, str], tuple[float, float, int]] = {}

    def admit(self, key: tuple[str, str], now: float) -> tuple[bool, int]:
        """Whether to write this failure, and how many were suppressed before it."""
        tokens, at, held = self._buckets.get(key, (self.burst, now, 0))
        tokens = min(self.burst, tokens + (now - at) * self.per_s)
        if tokens >= 1:
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._buckets.clear()
            self._buckets[key] = (tokens - 1, now, 0)
            return True, held
        self._buckets[key] = (tokens, now, held + 1)
        return False, held + 1

    async def __call__(self, scope: Scope, exc: Unauthenticated) -> None:
        reason = str(exc.context.get("reason") or "invalid")
        client = scope.get("client")
        remote = str(client[0]) if client else "unknown"
        write, suppressed = self.admit((remote, reason), time.monotonic())
        if not write:
            return
        detail: dict[str, Any] = {"reason": reason, "path": scope.get("path"),
                                  "method": scope.get("method", "WS"), "remote": remote}  # fmt: skip
        if scope["type"] == "websocket":
            detail["protocol"] = "websocket"
        if suppressed:
            detail["suppressed"] = suppressed
        await self.appender("auth.failure", principal="anonymous", outcome="denied",
                            detail=detail)  # fmt: skip
