"""Source registration: validate with the connector's config model, seal secrets, pick a shard."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from datawave.datasource.connectors import (
    Connector,
    ConnectorRegistry,
    merge_secrets,
    split_secrets,
)
from datawave.datasource.connectors.base import validation_errors
from datawave.datasource.errors import ValidationFailed
from datawave.datasource.models import SourceRecord, SourceSpec
from datawave.datasource.security.edgekeys import is_edge_sealed
from datawave.datasource.security.secrets import SecretResolver
from datawave.datasource.store import MetadataStore

__all__ = ["SourceService", "jump_hash", "shard_for"]

#: Stands in for a secret sealed to an edge while a patch is validated; never stored.
_SEALED = "<sealed to the edge>"


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping & Veach): growing N moves only 1/N of the keys."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_for(source_id: str, shards: int) -> int:
    digest = hashlib.blake2b(source_id.encode(), digest_size=8).digest()
    return jump_hash(int.from_bytes(digest, "big"), shards)


class SourceService:
    """Registers, updates and connects sources.

    ``resolver`` resolves secret references (``env:``, ``file:``, plugins); only the owner of
    the sources passes one, so only it turns references into values, right before connecting.
    """

    def __init__(
        self,
        store: MetadataStore,
        registry: ConnectorRegistry,
        *,
        shards: int,
        resolver: SecretResolver | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.shards = shards
        self.resolver = resolver

    @staticmethod
    def parse_spec(spec: SourceSpec | Mapping[str, Any]) -> SourceSpec:
        if isinstance(spec, SourceSpec):
            return spec
        try:
            return SourceSpec.model_validate(dict(spec))
        except ValidationError as exc:
            errors = validation_errors(exc)
            raise ValidationFailed(
                "invalid source: " + ", ".join(e["field"] for e in errors), errors=errors
            ) from None

    def new_id(self) -> str:
        return str(uuid.uuid4())

    def register(
        self, spec: SourceSpec | Mapping[str, Any], *, source_id: str | None = None
    ) -> SourceRecord:
        """Validate and store a source; nothing is written when validation fails."""
        spec = self.parse_spec(spec)
        config = self.registry.validate(spec.type, spec.config)
        public, secrets = split_secrets(config)
        self._check_references(secrets, spec.edge_site)
        sid = source_id or self.new_id()
        return self.store.create_source(
            id=sid, name=spec.name, type=spec.type, config=public, secrets=secrets,
            owner_shard=shard_for(sid, self.shards), labels=spec.labels,
            collection=spec.collection, edge_site=spec.edge_site, description=spec.description,
        )  # fmt: skip

    def update(
        self,
        source_id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> SourceRecord:
        """Merge-patch a source. A ``config`` patch is merged with the stored config and
        secrets, then validated as a whole."""
        rec = self.store.get_source(source_id)
        allowed = {"name", "labels", "collection", "edge_site", "description", "config"}
        unknown = sorted(set(patch) - allowed)
        if unknown:
            raise ValidationFailed(
                f"cannot update {', '.join(unknown)}",
                errors=[{"field": f, "message": "field cannot be updated", "type": "extra_forbidden"}
                        for f in unknown],
            )  # fmt: skip
        changes = {k: v for k, v in patch.items() if k != "config"}
        if "name" in changes or "labels" in changes:
            probe = {"name": changes.get("name", rec.name), "type": rec.type,
                     "labels": changes.get("labels", rec.labels)}  # fmt: skip
            self.parse_spec(probe)
        config = secrets = None
        moving = "edge_site" in changes and changes["edge_site"] != rec.edge_site
        if "config" in patch or (moving and rec.secret_fields):
            config, secrets = self._patched_config(rec, patch.get("config") or {}, moving)
        if secrets:
            self._check_references(secrets, changes.get("edge_site", rec.edge_site))
        return self.store.update_source(
            rec.id, expected_version=expected_version, config=config, secrets=secrets, **changes
        )

    def _patched_config(
        self, rec: SourceRecord, given: Mapping[str, Any], moving: bool
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        """The validated (public config, secrets) after a patch; secrets ``None`` = unchanged.

        Secrets sealed to an edge cannot be read back here: a patch that changes one of them,
        or moves the source to another site, must give all of them again.
        """
        sealed = is_edge_sealed(self.store.get_sealed_secrets(rec.id))
        stored = (
            dict.fromkeys(rec.secret_fields, _SEALED) if sealed
            else self.store.get_secrets(rec.id)
        )  # fmt: skip
        full = merge_secrets(rec.config, stored)
        full.update(given)
        config, secrets = split_secrets(self.registry.validate(rec.type, full))
        kept = sorted(f for f, v in secrets.items() if v == _SEALED)
        if sealed and kept and (moving or len(kept) < len(secrets)):
            raise ValidationFailed(
                f"the secrets of source {rec.name} are sealed to edge site {rec.edge_site} and "
                f"cannot be read back: give all of {', '.join(sorted(secrets))} to change one "
                "or to move the source",
                errors=[{"field": f"config.{f}", "message": "sealed to the edge: give it again",
                         "type": "missing"} for f in kept],
            )  # fmt: skip
        return config, (None if sealed and kept else secrets)

    def connector_for(self, rec: SourceRecord) -> Connector:
        """Build a connector with secrets merged in; call only where the source is used."""
        full = merge_secrets(rec.config, self.store.get_secrets(rec.id), resolver=self.resolver)
        return self.registry.create(rec.type, full)

    def _check_references(self, secrets: Mapping[str, str], edge_site: str | None) -> None:
        """Refuse a secret reference with an unknown scheme before anything is stored.

        Edge sources are resolved by their edge agent, whose plugins the core cannot see.
        """
        if self.resolver is None or edge_site:
            return
        errors = self.resolver.check(secrets)
        if errors:
            raise ValidationFailed(
                "invalid source: " + ", ".join(e["field"] for e in errors), errors=errors
            )
