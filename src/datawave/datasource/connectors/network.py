"""Config shared by connectors that reach a server over the network with a user and password.

``url`` (``scheme://user:password@host:port/path?query``) is an alternative spelling of the
connection fields: it is split into them while validating (fields given explicitly win) and not
kept, so a password it holds ends up only in ``password`` (a secret). Messages never repeat the
URL. Each connector says which schemes it accepts and what its path and query mean.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import SecretStr, ValidationInfo, field_validator, model_validator

from datawave.datasource.connectors.base import ConnectorConfig

__all__ = ["NetworkConfig", "split_url"]


def split_url(url: str, schemes: frozenset[str]) -> tuple[dict[str, Any], SplitResult]:
    """Host, port, user and password of ``url``; the parts for the connector's own fields."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("url is malformed or its port is invalid") from None
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"url scheme must be one of {', '.join(sorted(schemes))}")
    if not parts.hostname:
        raise ValueError("url has no host")
    if parts.fragment:
        raise ValueError("url must not have a fragment")
    out: dict[str, Any] = {"host": unquote(parts.hostname)}
    if port is not None:
        out["port"] = port
    if parts.username:
        out["user"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    return out, parts


class NetworkConfig(ConnectorConfig):
    """Subclasses declare ``url``, ``host``, ``port``, ``user``, ``auth`` (before) and
    ``password``, set ``url_schemes`` and implement :meth:`url_fields`."""

    url_schemes: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def url_fields(cls, parts: SplitResult) -> dict[str, Any]:
        """Connector-specific fields from the URL's path and query (raise ValueError if bad)."""
        return {}

    @classmethod
    def parse_url(cls, url: str) -> dict[str, Any]:
        fields, parts = split_url(url, cls.url_schemes)
        return {**fields, **cls.url_fields(parts)}

    @model_validator(mode="before")
    @classmethod
    def _expand_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("url") is None:
            return data
        raw = data["url"]
        raw = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
        if not isinstance(raw, str):
            return data  # the field's type check names ``url``
        try:
            parts = cls.parse_url(raw)
        except ValueError:
            return data  # reported against ``url`` by _check_url
        explicit = {k: v for k, v in data.items() if k != "url" and v is not None}
        return {**parts, **explicit}

    @field_validator("url", mode="before", check_fields=False)
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            cls.parse_url(raw)  # raises with a message that never repeats the URL
            return None
        return value

    @field_validator("password", check_fields=False)
    @classmethod
    def _password_required(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("auth") == "password" and not (value and value.get_secret_value()):
            raise ValueError('a password is required with auth="password" (or set auth="none")')
        return value
