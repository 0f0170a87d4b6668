"""The authenticated caller: who it is, how it proved it, and what it was granted."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Grant", "Principal", "PrincipalKind"]

PrincipalKind = Literal["apikey", "jwt", "cert", "local", "edge"]


class Grant(BaseModel):
    """One role over one scope.

    ``collection`` and ``source`` both ``None`` means the whole installation. A collection
    grant covers that collection and every collection under it (``finance`` covers
    ``finance/emea``); a source grant covers one source, by id or by name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str
    collection: str | None = None
    source: str | None = None

    @property
    def is_global(self) -> bool:
        return self.collection is None and self.source is None

    def __str__(self) -> str:
        where = (
            f"collection:{self.collection}"
            if self.collection is not None
            else f"source:{self.source}"
            if self.source is not None
            else "*"
        )
        return f"{self.role}@{where}"


class Principal(BaseModel):
    """An authenticated caller. ``id`` is stable (key id, ``iss|sub``, cert fingerprint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: PrincipalKind
    name: str = ""
    grants: tuple[Grant, ...] = Field(default_factory=tuple)

    @property
    def label(self) -> str:
        """How the audit log and messages name this caller (never a credential)."""
        return f"{self.kind}:{self.name or self.id}"
