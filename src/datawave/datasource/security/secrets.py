"""Secret references: a secret field may say where its value lives instead of holding it.

    env:NAME            the variable NAME in the environment of the process that connects
    file:/abs/path      the content of the file (one trailing newline dropped)
    literal:VALUE       VALUE itself: the escape for a secret that starts with ``word:``
    <provider>:<ref>    a plugin from the ``datawave.secret_providers`` entry-point group
                        (a vault, a cloud secret manager), named by its scheme

A reference is stored like any secret (sealed: the reference itself may be sensitive) and is
resolved only by the source's owner, right before it connects, in the environment of that
process: the core never holds the resolved value longer than a connection attempt needs, and
rotating the referenced secret needs no change in datawave.

A value is a reference when it starts with a lowercase word of 2-32 characters and a colon that
is not followed by ``//`` (so URLs stay literal). An unknown scheme is an error rather than a
literal secret, so a missing plugin is caught when the source is registered rather than sent to
the database as a wrong password. Messages name the field, never the value or the reference.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from datawave.datasource.errors import ConnectorError

__all__ = [
    "BUILTIN_SCHEMES",
    "ENTRY_POINT_GROUP",
    "SecretProvider",
    "SecretResolver",
    "parse_reference",
]

ENTRY_POINT_GROUP = "datawave.secret_providers"
BUILTIN_SCHEMES = frozenset({"env", "file", "literal"})
MAX_FILE_BYTES = 64 * 1024

_REFERENCE = re.compile(r"(?P<scheme>[a-z][a-z0-9_-]{1,31}):(?!//)(?P<ref>.+)", re.DOTALL)


@runtime_checkable
class SecretProvider(Protocol):
    """A plugin that turns a reference (the part after ``<scheme>:``) into the secret."""

    def resolve(self, ref: str) -> str: ...


def parse_reference(value: str) -> tuple[str, str] | None:
    """``(scheme, ref)`` when ``value`` is written as a reference, else ``None`` (a literal)."""
    m = _REFERENCE.fullmatch(value)
    return (m["scheme"], m["ref"]) if m else None


class SecretResolver:
    """Resolves the references among a source's secrets; one per owner (or edge agent) process.

    Args:
        environ: the environment of this process, read by its entry point (``env:``).
        providers: plugins given directly (tests, embedding); entry points fill in the rest,
            loaded on first use only.
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        providers: Mapping[str, SecretProvider] | None = None,
        group: str = ENTRY_POINT_GROUP,
    ) -> None:
        self._environ = dict(environ or {})
        self._providers: dict[str, SecretProvider] = dict(providers or {})
        self._group = group
        self._lock = threading.Lock()

    def schemes(self) -> set[str]:
        """Every scheme this resolver knows (plugins by entry-point name, not imported)."""
        plugins = {ep.name for ep in entry_points(group=self._group)}
        return set(BUILTIN_SCHEMES) | set(self._providers) | plugins

    def check(self, secrets: Mapping[str, str], *, prefix: str = "config.") -> list[dict[str, Any]]:
        """Field errors for references with an unknown scheme (nothing is resolved)."""
        known = self.schemes()
        out = []
        for name, value in secrets.items():
            parsed = parse_reference(value) if isinstance(value, str) else None
            if parsed is not None and parsed[0] not in known:
                out.append({"field": f"{prefix}{name}", "type": "secret_reference",
                             "message": _unknown_scheme(known)})  # fmt: skip
        return out

    def resolve_all(self, secrets: Mapping[str, str]) -> dict[str, str]:
        """The secrets with every reference replaced by its value.

        Raises:
            ConnectorError: ``reason=...``, naming the first field that does not resolve.
        """
        return {name: self.resolve(name, value) for name, value in secrets.items()}

    def resolve(self, field: str, value: str) -> str:
        parsed = parse_reference(value) if isinstance(value, str) else None
        if parsed is None:
            return value
        scheme, ref = parsed
        if scheme == "literal":
            return ref
        if scheme == "env":
            return self._env(field, ref)
        if scheme == "file":
            return self._file(field, ref)
        provider = self._provider(field, scheme)
        try:
            resolved = provider.resolve(ref)
        except Exception as exc:  # a plugin's own errors may carry the reference: drop them
            raise _error(
                field, f"the {scheme!r} provider could not resolve it ({type(exc).__name__})",
                "provider_failed",
            ) from None  # fmt: skip
        if not isinstance(resolved, str) or not resolved:
            raise _error(field, f"the {scheme!r} provider returned no value", "empty")
        return resolved

    def _env(self, field: str, name: str) -> str:
        value = self._environ.get(name)
        if not value:
            raise _error(
                field,
                "it refers to an environment variable that is not set in the owner's process "
                "(set it on every Ray node, or use another reference)",
                "env_missing",
            )
        return value

    def _file(self, field: str, ref: str) -> str:
        path = Path(ref)
        if not path.is_absolute():
            raise _error(field, "a file: reference needs an absolute path", "file_relative")
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise _error(
                field, f"the referenced file cannot be read ({type(exc).__name__})", "file_missing"
            ) from None
        if len(data) > MAX_FILE_BYTES:
            raise _error(field, f"the referenced file is over {MAX_FILE_BYTES} bytes", "too_big")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _error(field, "the referenced file is not UTF-8 text", "file_binary") from None
        text = text[:-1] if text.endswith("\n") else text
        text = text[:-1] if text.endswith("\r") else text
        if not text:
            raise _error(field, "the referenced file is empty", "empty")
        return text

    def _provider(self, field: str, scheme: str) -> SecretProvider:
        with self._lock:
            found = self._providers.get(scheme)
            if found is not None:
                return found
            eps = [ep for ep in entry_points(group=self._group) if ep.name == scheme]
            if not eps:
                raise _error(field, _unknown_scheme(self.schemes()), "unknown_scheme")
            try:
                obj: Any = eps[0].load()
            except ImportError as exc:
                missing = getattr(exc, "name", None) or type(exc).__name__
                raise _error(
                    field, f"the {scheme!r} secret provider is disabled: {missing} is not "
                    "installed", "provider_disabled",
                ) from None  # fmt: skip
            provider = obj() if isinstance(obj, type) else obj
            if not isinstance(provider, SecretProvider):
                raise _error(
                    field, f"the {scheme!r} secret provider has no resolve(ref)", "provider_bad"
                )
            self._providers[scheme] = provider
            return provider


def _unknown_scheme(known: Iterable[str]) -> str:
    return (
        "written like a secret reference (scheme:reference) but its scheme is not known "
        f"(known: {', '.join(sorted(known))}); write literal:<value> if it is the secret itself"
    )


def _error(field: str, why: str, reason: str) -> ConnectorError:
    return ConnectorError(
        f"secret field {field!r} cannot be resolved: {why}", field=field, reason=reason
    )
