"""Pure-ASGI guards in front of the routes: body size and media type.

Implemented at the ASGI level (not ``BaseHTTPMiddleware``) so streaming responses and
WebSockets pass through untouched. A body over ``max_body_bytes`` is refused with 413 before
any route runs, whether it is announced by ``Content-Length`` or sent chunked.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datawave.datasource.serve.problems import PROBLEM_JSON, problem_body

__all__ = ["BodyGuard"]

_WITH_BODY = {"POST", "PUT", "PATCH"}


def _is_json(content_type: str) -> bool:
    mt = content_type.split(";", 1)[0].strip().lower()
    return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))


class BodyGuard:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, json_paths: tuple[str, ...] = ("/v1",)
    ) -> None:
        self.app = app
        self.max = max_body_bytes
        self.json_paths = json_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        length = headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await _problem(
                    send, 400, "invalid_parameter", "Content-Length is not a number", path
                )
                return
            if n > self.max:
                await _problem(send, 413, "payload_too_large",
                               f"request body is larger than {self.max} bytes", path)  # fmt: skip
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max:
                await _problem(send, 413, "payload_too_large",
                               f"request body is larger than {self.max} bytes", path)  # fmt: skip
                return
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        raw = b"".join(chunks)
        ctype = headers.get("content-type", "")
        if raw and path.startswith(self.json_paths) and not _is_json(ctype):
            await _problem(send, 415, "unsupported_media_type",
                           f"send application/json, not {ctype or 'no content type'}", path,
                           extra_headers=[(b"accept-post", b"application/json"),
                                          (b"accept-patch", b"application/json, application/merge-patch+json")])  # fmt: skip
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _problem(
    send: Send, status: int, code: str, detail: str, path: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:  # fmt: skip
    body = json.dumps(problem_body(status, code, detail, instance=path)).encode()
    headers: list[Any] = [(b"content-type", PROBLEM_JSON.encode()),
                          (b"content-length", str(len(body)).encode()), (b"connection", b"close")]  # fmt: skip
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers + (extra_headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})
