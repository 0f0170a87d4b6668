"""The one place access is decided: roles -> permissions, grants -> scopes.

Built-in roles:

- ``viewer``: read sources, metadata, jobs, health, alerts, events, edges and reports;
- ``operator``: viewer + register / change / test / discover / remove sources, run jobs,
  acknowledge alerts;
- ``admin``: everything, including API keys, audit, edges and key rotation.

Custom roles (``auth.custom_roles``) are named lists of the permissions below. Every protocol
(REST, WebSocket, GraphQL, streaming) calls :meth:`Policy.require` for one resource or
:meth:`Policy.scope` to filter a listing, so what a principal cannot see is not even listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from datawave.datasource.errors import ConfigError, Forbidden
from datawave.datasource.security.principal import Principal

__all__ = ["BUILTIN_ROLES", "PERMISSIONS", "Policy", "Scope", "collection_covers"]

#: Every permission there is. Source-scoped ones can be granted on a collection or a source;
#: global ones (marked) need a grant over the whole installation.
PERMISSIONS: Mapping[str, str] = {
    "sources:read": "list and read sources, their metadata, runs, drift and health",
    "sources:write": "register, change and remove sources",
    "sources:test": "run connection tests",
    "sources:discover": "start discoveries and bulk jobs",
    "jobs:read": "read jobs",
    "events:read": "subscribe to events",
    "alerts:read": "read alerts",
    "alerts:write": "acknowledge and silence alerts",
    "edges:read": "read the edge fleet (global)",
    "edges:write": "create join tokens, revoke edges (global)",
    "audit:read": "query the audit log",
    "apikeys:admin": "create, list and revoke API keys (global)",
    "keys:rotate": "rotate the key-encryption key (global)",
    "report:read": "read fleet reports",
}

#: Permissions that only a global grant (no collection/source) confers.
GLOBAL_ONLY: frozenset[str] = frozenset({"edges:read", "edges:write", "apikeys:admin",
                                          "keys:rotate"})  # fmt: skip

_VIEWER = frozenset({"sources:read", "jobs:read", "events:read", "alerts:read", "edges:read",
                     "report:read"})  # fmt: skip
_OPERATOR = _VIEWER | {"sources:write", "sources:test", "sources:discover", "alerts:write"}

BUILTIN_ROLES: Mapping[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "operator": frozenset(_OPERATOR),
    "admin": frozenset(PERMISSIONS),
}


def collection_covers(granted: str, collection: str | None) -> bool:
    """Whether a grant on ``granted`` covers ``collection`` (itself or a descendant)."""
    if collection is None:
        return False
    g = granted.strip("/")
    c = collection.strip("/")
    return c == g or c.startswith(g + "/")


@dataclass(frozen=True)
class Scope:
    """Where one permission holds for one principal: everywhere, or these collections/sources.

    Filter listings with :meth:`covers`; push ``collections`` / ``sources`` down to the store
    when a query can use them.
    """

    everything: bool = False
    collections: frozenset[str] = field(default_factory=frozenset)
    sources: frozenset[str] = field(default_factory=frozenset)

    @property
    def empty(self) -> bool:
        return not (self.everything or self.collections or self.sources)

    def covers(
        self,
        *,
        collection: str | None,
        source_id: str | None = None,
        source_name: str | None = None,
    ) -> bool:
        if self.everything:
            return True
        if source_id is not None and source_id in self.sources:
            return True
        if source_name is not None and source_name in self.sources:
            return True
        return any(collection_covers(g, collection) for g in self.collections)


class Policy:
    """Roles and the decision. One instance per process, built from ``auth.custom_roles``."""

    def __init__(self, custom_roles: Mapping[str, Iterable[str]] | None = None) -> None:
        roles: dict[str, frozenset[str]] = dict(BUILTIN_ROLES)
        for name, perms in (custom_roles or {}).items():
            if name in BUILTIN_ROLES:
                raise ConfigError(
                    f"auth.custom_roles.{name}: cannot redefine a built-in role",
                    field=f"auth.custom_roles.{name}",
                )
            unknown = sorted(set(perms) - set(PERMISSIONS))
            if unknown:
                raise ConfigError(
                    f"auth.custom_roles.{name}: unknown permission(s) {', '.join(unknown)}",
                    field=f"auth.custom_roles.{name}",
                )
            roles[name] = frozenset(perms)
        self.roles: Mapping[str, frozenset[str]] = roles

    def check_role(self, role: str) -> str:
        if role not in self.roles:
            raise ConfigError(
                f"role: unknown role {role!r} (known: {', '.join(sorted(self.roles))})",
                field="role",
            )
        return role

    def permissions(self, principal: Principal) -> frozenset[str]:
        out: set[str] = set()
        for g in principal.grants:
            out |= self.roles.get(g.role, frozenset())
        return frozenset(out)

    def scope(self, principal: Principal, permission: str) -> Scope:
        """Where ``principal`` holds ``permission``."""
        everything = False
        collections: set[str] = set()
        sources: set[str] = set()
        for g in principal.grants:
            if permission not in self.roles.get(g.role, frozenset()):
                continue
            if g.is_global:
                everything = True
            elif permission in GLOBAL_ONLY:
                continue
            elif g.collection is not None:
                collections.add(g.collection.strip("/"))
            elif g.source is not None:
                sources.add(g.source)
        if everything:
            return Scope(everything=True)
        return Scope(False, frozenset(collections), frozenset(sources))

    def allows(
        self,
        principal: Principal,
        permission: str,
        *,
        collection: str | None = None,
        source_id: str | None = None,
        source_name: str | None = None,
    ) -> bool:
        """Whether ``principal`` may do ``permission`` on the resource (None: anywhere)."""
        scope = self.scope(principal, permission)
        if collection is None and source_id is None and source_name is None:
            return scope.everything
        return scope.covers(collection=collection, source_id=source_id, source_name=source_name)

    def require(
        self,
        principal: Principal,
        permission: str,
        *,
        collection: str | None = None,
        source_id: str | None = None,
        source_name: str | None = None,
    ) -> None:
        """Raise :class:`Forbidden` unless allowed. Callers that must not reveal that a
        resource exists check ``sources:read`` first and answer 404 when it is not covered."""
        if not self.allows(principal, permission, collection=collection, source_id=source_id,
                           source_name=source_name):  # fmt: skip
            raise Forbidden(
                f"{principal.label} lacks {permission}"
                + (" here" if (collection or source_id or source_name) else ""),
                permission=permission,
            )

    def any_scope(self, principal: Principal, permission: str) -> bool:
        """Whether ``principal`` holds ``permission`` anywhere (for routes that then filter)."""
        return not self.scope(principal, permission).empty
