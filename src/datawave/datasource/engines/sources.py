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
from datawave.datasource.store import MetadataStore

__all__ = ["SourceService", "jump_hash", "shard_for"]


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
    def __init__(self, store: MetadataStore, registry: ConnectorRegistry, *, shards: int) -> None:
        self.store = store
        self.registry = registry
        self.shards = shards

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
        if "config" in patch:
            full = merge_secrets(rec.config, self.store.get_secrets(rec.id))
            full.update(patch["config"] or {})
            validated = self.registry.validate(rec.type, full)
            config, secrets = split_secrets(validated)
        return self.store.update_source(
            rec.id, expected_version=expected_version, config=config, secrets=secrets, **changes
        )

    def connector_for(self, rec: SourceRecord) -> Connector:
        """Build a connector with secrets merged in; call only where the source is used."""
        full = merge_secrets(rec.config, self.store.get_secrets(rec.id))
        return self.registry.create(rec.type, full)
