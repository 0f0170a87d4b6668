"""One exception tree for the whole package.

    DatawaveError
    ├── ConfigError(ValueError)             settings or profile invalid
    ├── ValidationFailed(ValueError)        a source config is invalid; ``errors`` name the fields
    ├── NotFound(KeyError)                  unknown source, job, table ...
    ├── Conflict                            duplicate registration, stale ETag
    ├── PluginError
    │   └── ConnectorDisabled               plugin present but its driver is missing
    ├── ConnectorError                      the source misbehaved; never carries a secret
    │   ├── ConnectorTimeout(TimeoutError)
    │   ├── ConnectionRefused(ConnectionError)
    │   ├── AuthenticationFailed(PermissionError)
    │   └── PermissionDenied(PermissionError)
    ├── DiscoveryFailed                     a run could not complete; previous metadata is kept
    ├── StoreError                          the metadata store failed
    ├── JobCancelled
    └── EdgeError                           join tokens, leaf links, sync
        └── TokenRejected(PermissionError)

Every error has a stable ``code`` the API maps to HTTP in one table, and carries fields rather
than formatted strings so callers (and the problem+json mapper) can render them. Driver errors are
translated at the connector boundary with ``raise ... from exc``; their messages pass through
:func:`redact` first so a DSN or password never reaches a log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "AuditTampered",
    "AuthenticationFailed",
    "ConfigError",
    "Conflict",
    "ConnectionRefused",
    "ConnectorDisabled",
    "ConnectorError",
    "ConnectorTimeout",
    "DatawaveError",
    "DiscoveryFailed",
    "EdgeError",
    "FieldError",
    "Forbidden",
    "JobCancelled",
    "NotFound",
    "PermissionDenied",
    "PluginError",
    "StoreError",
    "TokenRejected",
    "Unauthenticated",
    "ValidationFailed",
    "redact",
]

_DSN_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(
    r"(?i)(password|passwd|pwd|secret|token)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|\S+)"
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove credentials from a message: DSN passwords, ``password=...`` pairs and known values."""
    out = _DSN_PASSWORD.sub(r"\g<scheme>***@", text)
    out = _KV_PASSWORD.sub(r"\1\2***", out)
    for s in secrets:
        if s and len(s) >= 3:
            out = out.replace(s, "***")
    return out


class DatawaveError(Exception):
    """Root of every error raised on purpose by datawave."""

    code: str = "datawave_error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.context}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep fields across pickling (Ray ships exceptions between processes).
        return (_rebuild, (type(self), self.message, self.context))


def _rebuild(cls: type[DatawaveError], message: str, context: dict[str, Any]) -> DatawaveError:
    err = cls.__new__(cls)
    DatawaveError.__init__(err, message, **context)
    for key, value in context.items():
        if not hasattr(err, key):
            setattr(err, key, value)
    return err


class ConfigError(DatawaveError, ValueError):
    code = "config_invalid"


class FieldError(dict[str, Any]):
    """One invalid field: ``{"field": "port", "message": "...", "type": "int_parsing"}``."""


class ValidationFailed(DatawaveError, ValueError):
    """A source definition is invalid; ``errors`` lists each offending field."""

    code = "validation_failed"

    def __init__(
        self, message: str, errors: Iterable[Mapping[str, Any]] | None = None, **ctx: Any
    ) -> None:
        errs = list(errors or [])
        super().__init__(message, errors=errs, **ctx)
        self.errors = errs


class NotFound(DatawaveError, KeyError):
    code = "not_found"

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class Conflict(DatawaveError):
    code = "conflict"


class PluginError(DatawaveError):
    code = "plugin_error"


class ConnectorDisabled(PluginError):
    code = "connector_disabled"


class ConnectorError(DatawaveError):
    code = "connector_error"


class ConnectorTimeout(ConnectorError, TimeoutError):
    code = "connector_timeout"


class ConnectionRefused(ConnectorError, ConnectionError):
    code = "connection_refused"


class AuthenticationFailed(ConnectorError, PermissionError):
    code = "authentication_failed"


class PermissionDenied(ConnectorError, PermissionError):
    code = "permission_denied"


class DiscoveryFailed(DatawaveError):
    code = "discovery_failed"


class StoreError(DatawaveError):
    code = "store_error"


class JobCancelled(DatawaveError):
    code = "job_cancelled"


class EdgeError(DatawaveError):
    code = "edge_error"


class TokenRejected(EdgeError, PermissionError):
    code = "token_rejected"


class Unauthenticated(DatawaveError, PermissionError):
    """No valid credential (HTTP 401). ``reason`` is a stable word; never echoes the credential."""

    code = "unauthenticated"


class Forbidden(DatawaveError, PermissionError):
    """A valid principal without the permission or scope for this action (HTTP 403)."""

    code = "forbidden"


class AuditTampered(DatawaveError):
    """The audit chain does not verify (an entry was edited, removed or reordered)."""

    code = "audit_tampered"
