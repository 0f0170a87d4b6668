"""Secrets of edge sources are sealed to the edge's X25519 key: the core stores and forwards a
blob it cannot open, the edge opens it right before connecting, and every use is audited.

No network: real key files, a real SQLite store, the gateway's apply step and the agent's
opener called directly.
"""

from __future__ import annotations

import asyncio
import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.edge.agent import EdgeAgent
from datawave.datasource.edge.cache import EdgeCache
from datawave.datasource.edge.gateway import EdgeGateway
from datawave.datasource.edge.sources import SourceBook
from datawave.datasource.engines import SourceService
from datawave.datasource.errors import (
    ConfigError,
    Conflict,
    EdgeError,
    StoreError,
    ValidationFailed,
)
from datawave.datasource.models import SourceSpec
from datawave.datasource.security.edgekeys import (
    EDGE_MAGIC,
    EdgeSealingKey,
    is_edge_sealed,
    key_id,
    seal_to_edge,
    sealed_key_id,
)
from datawave.datasource.store import AesGcmSealer, MetadataStore, load_kek

PASSWORD = "pw-Edge-only-7c1e"  # the test secret every check looks for


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    s = MetadataStore.open(
        f"sqlite:///{tmp_path / 'core.db'}",
        sealer=AesGcmSealer(load_kek(tmp_path / "kek", create=True)),
    )
    yield s
    s.close()


@pytest.fixture
def service(store: MetadataStore) -> SourceService:
    return SourceService(store, ConnectorRegistry(), shards=1)


@pytest.fixture
def edge_key(tmp_path: Path) -> EdgeSealingKey:
    return EdgeSealingKey.load_or_create(tmp_path / "edge" / "keys" / "seal.key")


def _pg(site: str | None = "A", name: str = "orders", **config: object) -> SourceSpec:
    cfg = {"host": "10.0.0.7", "user": "app", "database": "orders", "password": PASSWORD}
    return SourceSpec(name=name, type="postgresql", config={**cfg, **config}, edge_site=site)


# The primitive ----------------------------------------------------------------------------------
def test_a_sealed_blob_opens_only_with_the_edge_key_and_for_the_same_source(
    edge_key: EdgeSealingKey,
) -> None:
    blob = seal_to_edge(edge_key.public_key, b"secret bytes", context=b"source-1")
    assert blob.startswith(EDGE_MAGIC) and b"secret bytes" not in blob
    assert sealed_key_id(blob) == edge_key.key_id == key_id(edge_key.public_key)
    assert edge_key.open(blob, context=b"source-1") == b"secret bytes"

    with pytest.raises(EdgeError, match="another source's"):
        edge_key.open(blob, context=b"source-2")  # a blob cannot pose as another source's
    other = EdgeSealingKey.generate()
    with pytest.raises(EdgeError, match=f"sealed to edge key {edge_key.key_id}"):
        other.open(blob, context=b"source-1")
    for i in (len(EDGE_MAGIC) + 8, len(EDGE_MAGIC) + 40, len(blob) - 1):  # eph key, nonce, tag
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        with pytest.raises(EdgeError):
            edge_key.open(bytes(flipped), context=b"source-1")
    with pytest.raises(EdgeError, match="malformed"):
        edge_key.open(blob[:20], context=b"source-1")


def test_each_seal_is_fresh_and_the_two_envelopes_never_open_each_other(
    edge_key: EdgeSealingKey, tmp_path: Path
) -> None:
    a = seal_to_edge(edge_key.public_key, b"x", context=b"s")
    b = seal_to_edge(edge_key.public_key, b"x", context=b"s")
    assert a != b  # ephemeral key and nonce differ every time
    core = AesGcmSealer(load_kek(tmp_path / "kek", create=True))
    with pytest.raises(StoreError):
        core.open(a, context=b"s")
    kek_blob = core.seal(b"x", context=b"s")
    assert not is_edge_sealed(kek_blob) and is_edge_sealed(a) and not is_edge_sealed(None)
    with pytest.raises(EdgeError, match="malformed"):
        edge_key.open(kek_blob, context=b"s")


def test_the_private_key_file_is_private_never_overwritten_and_never_shown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "seal.key"
    key = EdgeSealingKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert EdgeSealingKey.load_or_create(path).public_key == key.public_key  # loaded, not new
    with pytest.raises(EdgeError, match="already exists"):
        EdgeSealingKey.generate().save(path)
    assert "PRIVATE" not in repr(key) and key.key_id in repr(key)
    with pytest.raises(EdgeError, match="no sealing key"):
        EdgeSealingKey.load(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("junk")
    with pytest.raises(EdgeError, match="cannot read"):
        EdgeSealingKey.load(tmp_path / "junk.key")
    with pytest.raises(ConfigError):
        seal_to_edge(b"short", b"x", context=b"s")


# The store and registration ----------------------------------------------------------------------
def test_registering_secrets_for_a_site_that_has_not_joined_is_a_conflict(
    service: SourceService, store: MetadataStore
) -> None:
    with pytest.raises(Conflict, match="edge site A has not joined: no sealing key"):
        service.register(_pg("A"))
    assert store.list_sources() == []  # nothing written
    # No secret, nothing to seal: such a source may wait for its site.
    rec = service.register(_pg("A", name="trusting", auth="none", password=None))
    assert rec.secret_fields == ()


def test_an_edge_sources_secrets_are_sealed_to_the_edge_and_unreadable_by_the_core(
    service: SourceService, store: MetadataStore, edge_key: EdgeSealingKey, tmp_path: Path
) -> None:
    store.put_edge_key("A", edge_key.public_key)
    rec = service.register(_pg("A"))
    blob = store.get_sealed_secrets(rec.id)
    assert blob is not None and is_edge_sealed(blob) and sealed_key_id(blob) == edge_key.key_id

    with pytest.raises(StoreError, match="sealed to its edge site's key"):
        store.get_secrets(rec.id)
    assert store.sealer is not None
    with pytest.raises(StoreError):
        store.sealer.open(blob, context=rec.id.encode())  # the core KEK does not open it
    with pytest.raises(StoreError):
        service.connector_for(rec)  # the core can never connect with it
    assert PASSWORD.encode() not in (tmp_path / "core.db").read_bytes()

    opened = msgpack.unpackb(edge_key.open(blob, context=rec.id.encode()))
    assert opened == {"password": PASSWORD}


def test_updates_keep_or_reseal_and_never_need_to_read_the_sealed_secrets(
    service: SourceService, store: MetadataStore, edge_key: EdgeSealingKey
) -> None:
    store.put_edge_key("A", edge_key.public_key)
    rec = service.register(_pg("A"))
    blob = store.get_sealed_secrets(rec.id)

    moved = service.update(rec.id, {"config": {"port": 6543}})  # no secret in the patch: kept
    assert moved.config["port"] == 6543 and moved.version == rec.version + 1
    assert store.get_sealed_secrets(rec.id) == blob

    service.update(rec.id, {"config": {"password": "rotated-pw-1"}})  # re-sealed to the edge
    new = store.get_sealed_secrets(rec.id)
    assert new != blob and new is not None
    assert msgpack.unpackb(edge_key.open(new, context=rec.id.encode())) == {
        "password": "rotated-pw-1"
    }

    # Moving the source elsewhere needs its secrets again: the core cannot carry them over.
    with pytest.raises(ValidationFailed, match="cannot be read back"):
        service.update(rec.id, {"edge_site": None})
    back = service.update(rec.id, {"edge_site": None, "config": {"password": "core-pw-2"}})
    assert back.edge_site is None and store.get_secrets(rec.id) == {"password": "core-pw-2"}

    # From the core to an edge: the core still reads them, so it seals them to the edge.
    there = service.update(rec.id, {"edge_site": "A"})
    assert there.edge_site == "A" and is_edge_sealed(store.get_sealed_secrets(rec.id))
    with pytest.raises(Conflict, match="edge site B has not joined"):
        service.update(rec.id, {"edge_site": "B", "config": {"password": "x"}})


def test_secrets_stored_under_the_kek_move_to_the_site_key_when_it_joins(
    service: SourceService, store: MetadataStore, edge_key: EdgeSealingKey
) -> None:
    rec = service.register(_pg(None))  # a core source, KEK-sealed ...
    store.update_source(rec.id, edge_site="A")  # ... given to a site the old way (no re-seal)
    assert not is_edge_sealed(store.get_sealed_secrets(rec.id))
    assert store.reseal_site_secrets("A") == 0  # no key yet: nothing to seal to

    store.put_edge_key("A", edge_key.public_key)
    assert store.reseal_site_secrets("A") == 1
    assert store.reseal_site_secrets("A") == 0  # idempotent
    moved = store.get_source(rec.id)
    assert moved.version == rec.version + 2  # the edge is sent the new definition
    blob = store.get_sealed_secrets(rec.id)
    assert blob is not None
    assert msgpack.unpackb(edge_key.open(blob, context=rec.id.encode())) == {"password": PASSWORD}


def test_a_rejoin_replaces_the_sites_key_and_revocation_removes_it(
    store: MetadataStore, edge_key: EdgeSealingKey
) -> None:
    first = store.put_edge_key("A", edge_key.public_key)
    assert first.key_id == edge_key.key_id and first.public_key == edge_key.public_key
    second = store.put_edge_key("A", EdgeSealingKey.generate().public_key)
    assert second.key_id != first.key_id and store.get_edge_key("A") == second
    assert store.delete_edge_key("A") and store.get_edge_key("A") is None
    assert not store.delete_edge_key("A")
    with pytest.raises(ConfigError):
        store.put_edge_key("A", b"\x00" * 31)


# Hand-over: the gateway forwards the blob, the agent opens it and reports the use ------------------
def test_the_gateway_hands_over_the_blob_as_stored_and_never_the_secret(
    service: SourceService, store: MetadataStore, edge_key: EdgeSealingKey
) -> None:
    store.put_edge_key("A", edge_key.public_key)
    rec = service.register(_pg("A"))
    legacy = service.register(_pg(None, name="legacy"))
    store.update_source(legacy.id, edge_site="A")  # still under the KEK
    gw = EdgeGateway(store, None, "nats://127.0.0.1:1")

    sent = {s["id"]: s for s in gw._site_sources("A")}
    assert PASSWORD not in repr(sent)
    assert base64.b64decode(sent[rec.id]["sealed"]) == store.get_sealed_secrets(rec.id)
    assert "password" not in sent[rec.id]["config"]
    assert "sealed" not in sent[legacy.id] and sent[legacy.id]["secrets"] == "unavailable"


def test_the_agent_opens_secrets_right_before_use_and_queues_a_credential_use(
    service: SourceService, store: MetadataStore, edge_key: EdgeSealingKey, tmp_path: Path
) -> None:
    store.put_edge_key("A", edge_key.public_key)
    rec = service.register(_pg("A"))
    gw = EdgeGateway(store, None, "nats://127.0.0.1:1")
    book = SourceBook(tmp_path / "edge" / "sources.json")
    book.replace(gw._site_sources("A"))
    assert PASSWORD not in (tmp_path / "edge" / "sources.json").read_text()  # sealed at rest

    with EdgeCache(tmp_path / "edge" / "cache", node="n1") as cache:
        agent = EdgeAgent("A", "nats://127.0.0.1:1", cache, book, sealing_key=edge_key)
        config = asyncio.run(agent._open_config(book.get(rec.id), "test"))
        assert config["password"] == PASSWORD and config["host"] == "10.0.0.7"
        queued = [e.record for e in cache.outbox_read(limit=10)]
        assert [(r["kind"], r["action"], r["purpose"], r["source_id"]) for r in queued] == [
            ("audit", "credential.use", "test", rec.id)
        ]
        assert PASSWORD not in repr(queued)

        keyless = EdgeAgent("A", "nats://127.0.0.1:1", cache, book)
        with pytest.raises(EdgeError, match="no sealing key"):
            asyncio.run(keyless._open_config(book.get(rec.id), "test"))
        stranger = EdgeAgent("A", "nats://127.0.0.1:1", cache, book,
                             sealing_key=EdgeSealingKey.generate())  # fmt: skip
        with pytest.raises(EdgeError, match="re-joined"):
            asyncio.run(stranger._open_config(book.get(rec.id), "discover"))
        assert len(cache.outbox_read(limit=10)) == 1  # failed openings are not uses


def test_credential_use_records_land_in_the_audit_log_as_the_edge(
    service: SourceService, store: MetadataStore, edge_key: EdgeSealingKey
) -> None:
    store.put_edge_key("A", edge_key.public_key)
    store.register_edge_node("n1", "A")
    rec = service.register(_pg("A"))
    other = service.register(_pg(None, name="core-only"))
    gw = EdgeGateway(store, None, "nats://127.0.0.1:1")
    use = {"kind": "audit", "source_id": rec.id, "action": "credential.use", "purpose": "discover",
           "at": 1_750_000_000.0, "seq": 1, "rid": "n1:1"}  # fmt: skip
    forged = [
        {**use, "seq": 2, "rid": "n1:2", "action": "source.delete"},  # not an edge's to write
        {**use, "seq": 3, "rid": "n1:3", "source_id": other.id},  # not its source
    ]
    assert gw._apply_batch("A", "n1", "e1", [use, *forged]) == (3, [])

    entries = store.query_audit(action="credential.use")
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.principal, entry.source_id, entry.outcome) == ("edge:A", rec.id, "ok")
    assert entry.detail["purpose"] == "discover" and entry.detail["rid"] == "n1:1"
    assert gw.rejected_by_reason == {
        "audit action not allowed from an edge": 1,
        "source not owned by this site": 1,
    }
    assert store.verify_audit().ok


def test_a_secret_reference_travels_sealed_and_resolves_in_the_edges_environment(
    service: SourceService, store: MetadataStore, edge_key: EdgeSealingKey, tmp_path: Path
) -> None:
    from datawave.datasource.security.secrets import SecretResolver

    store.put_edge_key("A", edge_key.public_key)
    rec = service.register(_pg("A", password="env:PLANT_DB_PASSWORD"))
    blob = store.get_sealed_secrets(rec.id)
    assert blob is not None and b"PLANT_DB_PASSWORD" not in blob  # the reference is sealed too
    book = SourceBook(tmp_path / "sources.json")
    book.replace(EdgeGateway(store, None, "nats://127.0.0.1:1")._site_sources("A"))
    with EdgeCache(tmp_path / "cache", node="n1") as cache:
        resolver = SecretResolver(environ={"PLANT_DB_PASSWORD": PASSWORD})
        agent = EdgeAgent("A", "nats://127.0.0.1:1", cache, book, sealing_key=edge_key,
                          resolver=resolver)  # fmt: skip
        assert asyncio.run(agent._open_config(book.get(rec.id), "test"))["password"] == PASSWORD
