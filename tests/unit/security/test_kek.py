"""Key-encryption keys: providers (file, env, plugin), the keyring, and the envelope sealer."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest

from datawave.datasource.config import load_settings
from datawave.datasource.errors import ConfigError, StoreError
from datawave.datasource.security.kek import (
    ENTRY_POINT_GROUP,
    FileKekProvider,
    Keyring,
    kek_id,
    kek_provider,
    load_keyring,
    parse_key,
    read_key_file,
    write_key_file,
)
from datawave.datasource.store.sealing import AesGcmSealer, blob_kek_id
from tests.unit.security.plugins import install_plugin


def key_file(path: Path, key: bytes | None = None, mode: int = 0o600) -> bytes:
    key = key or secrets.token_bytes(32)
    path.write_text(key.hex())
    path.chmod(mode)
    return key


# -- file provider ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o020])
def test_a_key_file_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek"
    key = key_file(path, mode=mode)

    with pytest.raises(ConfigError) as err:
        read_key_file(path)

    assert err.value.context["field"] == "key_file"
    assert "chmod 600" in err.value.message and f"{mode & 0o777:04o}" in err.value.message
    assert key.hex() not in err.value.message


def test_a_missing_key_is_an_error_naming_the_setting_and_nothing_is_created(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kek"

    with pytest.raises(ConfigError) as err:
        read_key_file(path)

    assert err.value.message.startswith("key_file:")
    assert not path.exists()


def test_create_makes_a_private_random_key_once(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "kek"

    first = read_key_file(path, create=True)
    again = read_key_file(path, create=True)

    assert len(first) == 32 and first == again
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content", ["", "zz" * 32, "ab" * 31, "ab" * 33])
def test_a_key_file_without_32_hex_bytes_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kek"
    path.write_text(content)
    path.chmod(0o600)

    with pytest.raises(ConfigError, match="32 bytes as hex"):
        read_key_file(path)


def test_write_key_file_replaces_atomically_with_owner_only_mode(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    key_file(path)
    new = secrets.token_bytes(32)

    write_key_file(path, new)

    assert read_key_file(path) == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek"]  # no temp file left


def test_file_provider_reads_older_keys_from_keyring_and_settings(tmp_path: Path) -> None:
    current, ring_key, listed = (secrets.token_bytes(32) for _ in range(3))
    key_file(tmp_path / "kek", current)
    (tmp_path / "keyring").mkdir()
    key_file(tmp_path / "keyring" / f"previous-{kek_id(ring_key)}", ring_key)
    key_file(tmp_path / "old.kek", listed)
    settings = load_settings(
        data_dir=tmp_path, secrets={"previous_kek_files": [str(tmp_path / "old.kek")]}
    )

    ring = load_keyring(settings, environ={})

    assert ring.current_id == kek_id(current)
    assert set(ring.ids) == {kek_id(current), kek_id(ring_key), kek_id(listed)}
    assert ring.ids[0] == kek_id(current)


# -- env provider -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "encode",
    [
        bytes.hex,
        lambda k: base64.b64encode(k).decode(),
        lambda k: base64.urlsafe_b64encode(k).decode().rstrip("="),
    ],
)
def test_env_provider_accepts_hex_and_base64(tmp_path: Path, encode: object) -> None:
    key = secrets.token_bytes(32)
    settings = load_settings(data_dir=tmp_path, secrets={"kek_provider": "env"})

    ring = load_keyring(settings, environ={"DATAWAVE_KEK": encode(key)})  # type: ignore[operator]

    assert ring.current == key


def test_env_provider_without_the_variable_names_it_and_the_setting(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, secrets={"kek_provider": "env", "kek_env": "MY_KEK"}
    )

    with pytest.raises(ConfigError) as err:
        load_keyring(settings, environ={"DATAWAVE_KEK": secrets.token_hex(32)})

    assert err.value.context["field"] == "secrets.kek_env"
    assert "MY_KEK" in err.value.message
    assert not (tmp_path / "kek").exists()  # never a silent default key


def test_env_provider_refuses_a_short_key_without_echoing_it(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, secrets={"kek_provider": "env"})
    value = "deadbeefcafe" * 3

    with pytest.raises(ConfigError) as err:
        load_keyring(settings, environ={"DATAWAVE_KEK": value})

    assert value not in err.value.message and "32 bytes" in err.value.message


def test_env_provider_previous_keys(tmp_path: Path) -> None:
    cur, old1, old2 = (secrets.token_bytes(32) for _ in range(3))
    settings = load_settings(data_dir=tmp_path, secrets={"kek_provider": "env"})
    env = {"DATAWAVE_KEK": cur.hex(),
           "DATAWAVE_KEK_PREVIOUS": f"{old1.hex()}, {base64.b64encode(old2).decode()}"}  # fmt: skip

    ring = load_keyring(settings, environ=env)

    assert set(ring.ids) == {kek_id(cur), kek_id(old1), kek_id(old2)}


def test_parse_key_rejects_garbage() -> None:
    assert parse_key("not a key") is None
    assert parse_key(base64.b64encode(b"x" * 31).decode()) is None


# -- plugin provider ----------------------------------------------------------------------------
def test_a_plugin_provider_is_loaded_from_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, group=ENTRY_POINT_GROUP, name="fakekms", attr="make",
                   source="""
        class Kms:
            def __init__(self, settings):
                self.ns = settings.ray.namespace
            def load(self):
                return bytes(range(32))
            def previous(self):
                return [bytes(range(1, 33))]
        def make(settings):
            return Kms(settings)
        """)  # fmt: skip
    settings = load_settings(data_dir=tmp_path, secrets={"kek_provider": "fakekms"})

    ring = load_keyring(settings, environ={})

    assert ring.current == bytes(range(32))
    assert kek_id(bytes(range(1, 33))) in ring.ids


def test_an_unknown_provider_is_a_config_error_listing_the_known_ones(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, secrets={"kek_provider": "nosuch"})

    with pytest.raises(ConfigError) as err:
        kek_provider(settings, environ={})

    assert err.value.context["field"] == "secrets.kek_provider"
    assert "file" in err.value.message and "env" in err.value.message


def test_a_plugin_that_returns_no_provider_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, group=ENTRY_POINT_GROUP, name="broken", attr="make",
                   source="def make(settings):\n    return 42\n")  # fmt: skip
    settings = load_settings(data_dir=tmp_path, secrets={"kek_provider": "broken"})

    with pytest.raises(ConfigError, match="did not return a KekProvider"):
        kek_provider(settings, environ={})


# -- sealer ---------------------------------------------------------------------------------------
def test_seal_and_open_round_trip_bound_to_context() -> None:
    sealer = AesGcmSealer(secrets.token_bytes(32))
    blob = sealer.seal(b"hunter2", context=b"source-1")

    assert sealer.open(blob, context=b"source-1") == b"hunter2"
    assert blob_kek_id(blob) == sealer.kek_id
    with pytest.raises(StoreError, match="failed authentication"):
        sealer.open(blob, context=b"source-2")


@pytest.mark.parametrize("where", [3, 12, 30, 90, -1])
def test_a_flipped_byte_never_opens(where: int) -> None:
    sealer = AesGcmSealer(secrets.token_bytes(32))
    blob = bytearray(sealer.seal(b"hunter2", context=b"s"))
    blob[where] ^= 0x01

    with pytest.raises(StoreError):
        sealer.open(bytes(blob), context=b"s")


def test_rewrap_changes_only_the_wrapped_data_key() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    blob = AesGcmSealer(old).seal(b"payload", context=b"s")

    rewrapped = AesGcmSealer(new, previous=[old]).rewrap(blob, context=b"s")

    assert blob_kek_id(rewrapped) == kek_id(new)
    assert rewrapped[-(12 + len(b"payload") + 16) :] == blob[-(12 + len(b"payload") + 16) :]
    assert AesGcmSealer(new).open(rewrapped, context=b"s") == b"payload"  # old key not needed
    with pytest.raises(StoreError, match="does not hold"):
        AesGcmSealer(old).open(rewrapped, context=b"s")


def test_an_unknown_kek_error_names_ids_never_keys() -> None:
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    blob = AesGcmSealer(a).seal(b"x")

    with pytest.raises(StoreError) as err:
        AesGcmSealer(b).open(blob)

    assert kek_id(a) in err.value.message and kek_id(b) in err.value.message
    assert a.hex() not in err.value.message and b.hex() not in err.value.message


# -- keyring reload (a rotation by another process) ----------------------------------------------
def test_a_running_process_follows_a_rotation_of_the_key_file(tmp_path: Path) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    path, ring_dir = tmp_path / "kek", tmp_path / "keyring"
    key_file(path, old)
    running = AesGcmSealer(keyring=Keyring(FileKekProvider(path, keyring=ring_dir)))
    before = running.seal(b"old secret", context=b"s1")

    # What `datawave keys rotate` does: keep the old key, then replace the key file.
    write_key_file(ring_dir / f"previous-{kek_id(old)}", old)
    write_key_file(path, new)
    rotated = AesGcmSealer(keyring=Keyring(FileKekProvider(path, keyring=ring_dir)))
    after = rotated.seal(b"new secret", context=b"s2")

    assert blob_kek_id(after) == kek_id(new)
    assert running.open(after, context=b"s2") == b"new secret"  # reloads on the unknown id
    assert rotated.open(before, context=b"s1") == b"old secret"
    assert blob_kek_id(running.seal(b"x")) == kek_id(new)  # and seals with the new key


def test_a_failed_reload_keeps_the_keys_already_held(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    path = tmp_path / "kek"
    key_file(path, key)
    ring = Keyring(FileKekProvider(path))
    os.chmod(path, 0o644)  # now unreadable by policy

    assert ring.reload() is False
    assert ring.current == key


def test_a_key_file_deleted_while_running_is_never_recreated(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    ring = Keyring(FileKekProvider(path, create=True))  # dev start-up: creates the key
    first = ring.current
    sealer = AesGcmSealer(keyring=ring)
    blob = sealer.seal(b"x", context=b"s")
    path.unlink()

    assert ring.reload() is False  # missing now: an error, logged, keys kept
    assert not path.exists() and ring.current == first
    assert sealer.open(blob, context=b"s") == b"x"
