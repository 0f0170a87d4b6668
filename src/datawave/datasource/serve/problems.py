"""RFC 9457 problem details: the one table from error ``code`` to HTTP status.

Every error leaving the API is ``application/problem+json`` with a stable ``code``; the
``errors.py`` tree is mapped here and nowhere else. Validation problems name each offending
field in ``errors: [{"field", "message", "type"}]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from datawave.datasource.errors import DatawaveError

__all__ = [
    "PROBLEM_JSON",
    "STATUS_BY_CODE",
    "ApiError",
    "Unavailable",
    "install_problem_handlers",
    "problem_response",
    "status_for",
]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://datawave.dev/problems/"


class Unavailable(DatawaveError):
    """An owner actor, the job manager or Ray itself cannot be reached right now."""

    code = "unavailable"


class ApiError(DatawaveError):
    """A protocol-level error raised by the API itself (cursor, ETag, media type, body size)."""

    def __init__(self, code: str, message: str, **context: Any) -> None:
        super().__init__(message, **context)
        self.code = code


# The one table: stable error code -> HTTP status. Unknown codes fall back along the MRO.
STATUS_BY_CODE: Mapping[str, int] = {
    # errors.py
    "datawave_error": 400,
    "config_invalid": 422,
    "validation_failed": 422,
    "not_found": 404,
    "conflict": 409,
    "plugin_error": 422,
    "connector_disabled": 422,
    "connector_error": 502,
    "connector_timeout": 504,
    "connection_refused": 502,
    "authentication_failed": 502,
    "permission_denied": 502,
    "discovery_failed": 502,
    "store_error": 503,
    "job_cancelled": 409,
    "edge_error": 502,
    "token_rejected": 403,
    "unauthenticated": 401,
    "forbidden": 403,
    "audit_tampered": 409,
    # the API's own
    "unavailable": 503,
    "malformed_json": 400,
    "invalid_cursor": 400,
    "invalid_parameter": 400,
    "route_not_found": 404,
    "method_not_allowed": 405,
    "not_acceptable": 406,
    "precondition_failed": 412,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "idempotency_key_reused": 422,
    "internal_error": 500,
}


def status_for(exc: DatawaveError) -> int:
    status = STATUS_BY_CODE.get(exc.code)
    if status is not None:
        return status
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if isinstance(code, str) and code in STATUS_BY_CODE:
            return STATUS_BY_CODE[code]
    return 500


def problem_body(
    status: int, code: str, detail: str, *, instance: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": _TYPE_BASE + code,
        "title": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else code,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if k not in body and _jsonable(v)})
    return body


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, detail, instance=instance, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool | list | dict | tuple)


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI/pydantic errors as ``{"field", "in", "message", "type"}`` (location prefix dropped)."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        where = loc[0] if loc else "body"
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        out.append({
            "field": ".".join(loc) or where,
            "in": where,
            "message": str(e.get("msg", "invalid")),
            "type": str(e.get("type", "value_error")),
        })  # fmt: skip
    return out


def from_error(exc: DatawaveError, instance: str | None = None) -> JSONResponse:
    status = status_for(exc)
    extra = {k: v for k, v in exc.context.items() if k not in ("message", "headers")}
    headers = exc.context.get("headers") if isinstance(exc.context.get("headers"), dict) else None
    if status == 503:
        headers = {"Retry-After": "1", **(headers or {})}
    return problem_response(
        status, exc.code, exc.message, instance=instance, headers=headers, **extra
    )


async def _datawave_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DatawaveError)
    return from_error(exc, request.url.path)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(400, "malformed_json", "request body is not valid JSON",
                                instance=request.url.path)  # fmt: skip
    fields = ", ".join(e["field"] for e in errors)
    return problem_response(422, "validation_failed", f"invalid request: {fields}",
                            instance=request.url.path, errors=errors)  # fmt: skip


_HTTP_CODES = {404: "route_not_found", 405: "method_not_allowed", 406: "not_acceptable",
               413: "payload_too_large", 415: "unsupported_media_type"}  # fmt: skip


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return problem_response(exc.status_code, code, str(exc.detail), instance=request.url.path,
                            headers=exc.headers)  # fmt: skip


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal_error", "internal error", instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DatawaveError, _datawave_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
