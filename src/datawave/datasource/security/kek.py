"""Key-encryption keys (KEKs): where the key that wraps every source secret's data key comes from.

A KEK is 32 random bytes. Blobs name the KEK that wrapped them by its *kek id* (the first 8 bytes
of its SHA-256, shown as 16 hex digits), so a process can say which key it lacks without ever
showing key material. There is no built-in default key: a missing key is a :class:`ConfigError`
naming the setting to fix.

Providers (``secrets.kek_provider``):

- ``file`` (default): ``key_file`` (default ``<data_dir>/kek``), 32 bytes as hex, readable by its
  owner only (a group- or world-readable key file is refused). Older keys still accepted while a
  rotation finishes: ``<keyring_dir>/previous-<kek id>`` files (written by ``datawave keys
  rotate``) and ``secrets.previous_kek_files``.
- ``env``: the variable named by ``secrets.kek_env`` (hex or base64); older keys, comma separated,
  in ``secrets.previous_kek_env``. The environment is read by the entry point (the CLI, the actor
  process) and handed down as a mapping.
- a plugin: an entry point in the ``datawave.kek_providers`` group, named like the provider; it is
  called with the settings and returns a :class:`KekProvider` (a KMS, a vault, an HSM...).

A :class:`Keyring` holds what one process knows and reloads it when a blob names a key it does
not hold (another process rotated) or, before sealing, when the provider says its keys changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from datawave.datasource.config import DatawaveSettings
from datawave.datasource.errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "KEK_BYTES",
    "PREVIOUS_PREFIX",
    "EnvKekProvider",
    "FileKekProvider",
    "KekProvider",
    "Keyring",
    "StaticKekProvider",
    "kek_id",
    "kek_provider",
    "kek_setting",
    "keyring_dir",
    "load_keyring",
    "parse_key",
    "read_key_file",
    "write_key_file",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "datawave.kek_providers"
KEK_BYTES = 32
PREVIOUS_PREFIX = "previous-"


def kek_id(key: bytes) -> str:
    """The public name of a KEK: 16 hex digits of its SHA-256 (what sealed blobs carry)."""
    return hashlib.sha256(key).digest()[:8].hex()


def parse_key(text: str | bytes) -> bytes | None:
    """32 bytes from hex or base64 (standard or url-safe) text; ``None`` when it is neither."""
    raw = (text.decode("ascii", "replace") if isinstance(text, bytes) else text).strip()
    if len(raw) == 2 * KEK_BYTES:
        try:
            return bytes.fromhex(raw)
        except ValueError:
            pass
    for altchars in (None, b"-_"):
        try:
            key = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEK_BYTES:
            return key
    return None


@runtime_checkable
class KekProvider(Protocol):
    """Where KEKs come from. ``load`` raises :class:`ConfigError` when there is no key."""

    def load(self) -> bytes: ...

    def previous(self) -> list[bytes]: ...


def read_key_file(path: Path, *, field: str = "key_file", create: bool = False) -> bytes:
    """Read a hex KEK from ``path`` (owner-only permissions); create it only when asked.

    Raises:
        ConfigError: the file is missing (and ``create`` is false), readable by group or others,
            or does not hold 32 bytes of hex. ``field`` names the setting to fix.
    """
    if not path.exists():
        if not create:
            raise ConfigError(
                f"{field}: key-encryption key {path} does not exist (run `datawave up` in the "
                "dev profile, provision the key, or choose another secrets.kek_provider)",
                field=field,
            )
        write_key_file(path, secrets.token_bytes(KEK_BYTES), exclusive=True)
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{field}: cannot read {path}: {type(exc).__name__}", field=field
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{field}: {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"a key-encryption key must be private: chmod 600 {path}",
            field=field,
        )
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEK_BYTES:
        raise ConfigError(f"{field}: {path} must hold {KEK_BYTES} bytes as hex", field=field)
    return key


def write_key_file(path: Path, key: bytes, *, exclusive: bool = False) -> None:
    """Write ``key`` as hex, mode 0600, atomically (a reader sees the old or the new key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.hex().encode())
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.hex().encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def keyring_dir(settings: DatawaveSettings) -> Path:
    """Where ``datawave keys rotate`` keeps older keys of the file provider."""
    return settings.secrets.keyring_dir or settings.resolved_key_file.parent / "keyring"


@dataclass
class StaticKekProvider:
    """Keys given in code (tests, embedding); nothing to reload."""

    key: bytes
    older: Sequence[bytes] = ()

    def load(self) -> bytes:
        return self.key

    def previous(self) -> list[bytes]:
        return list(self.older)


class FileKekProvider:
    """The ``file`` provider: ``key_file`` plus older keys from the keyring dir and settings."""

    def __init__(
        self,
        path: Path,
        *,
        keyring: Path | None = None,
        previous_files: Iterable[Path] = (),
        create: bool = False,
    ) -> None:
        self.path = path
        self.keyring = keyring
        self.previous_files = list(previous_files)
        self.create = create

    def load(self) -> bytes:
        key = read_key_file(self.path, create=self.create)
        self.create = False  # only ever at start-up: a key deleted later is an error, not new
        return key

    def previous(self) -> list[bytes]:
        out = [read_key_file(p, field="secrets.previous_kek_files") for p in self.previous_files]
        for p in self.keyring_files():
            out.append(read_key_file(p, field="secrets.keyring_dir"))
        return out

    def keyring_files(self) -> list[Path]:
        if self.keyring is None or not self.keyring.is_dir():
            return []
        return sorted(self.keyring.glob(f"{PREVIOUS_PREFIX}*"))

    def version(self) -> object:
        """Changes whenever a key file is replaced or the keyring gains or loses a file."""
        out: list[object] = []
        for p in [self.path, *self.previous_files, *([self.keyring] if self.keyring else [])]:
            try:
                st = p.stat()
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)


class EnvKekProvider:
    """The ``env`` provider: keys taken from an environment mapping the entry point passed down."""

    def __init__(self, environ: Mapping[str, str], *, name: str, previous_name: str) -> None:
        self._value = environ.get(name)
        self._previous = environ.get(previous_name, "")
        self.name = name
        self.previous_name = previous_name

    def load(self) -> bytes:
        if not self._value:
            raise ConfigError(
                f"secrets.kek_env: the environment variable {self.name} is not set in this "
                "process (the 'env' key-encryption key provider reads the key from it)",
                field="secrets.kek_env",
            )
        key = parse_key(self._value)
        if key is None:
            raise ConfigError(
                f"secrets.kek_env: {self.name} must hold {KEK_BYTES} bytes as hex or base64",
                field="secrets.kek_env",
            )
        return key

    def previous(self) -> list[bytes]:
        out = []
        for i, part in enumerate(p for p in self._previous.split(",") if p.strip()):
            key = parse_key(part)
            if key is None:
                raise ConfigError(
                    f"secrets.previous_kek_env: entry {i + 1} of {self.previous_name} is not "
                    f"{KEK_BYTES} bytes as hex or base64",
                    field="secrets.previous_kek_env",
                )
            out.append(key)
        return out


def kek_provider(
    settings: DatawaveSettings,
    *,
    environ: Mapping[str, str],
    create: bool = False,
    group: str = ENTRY_POINT_GROUP,
) -> KekProvider:
    """The provider ``settings.secrets.kek_provider`` names.

    Args:
        environ: the environment of the calling process, read by its entry point.
        create: let the ``file`` provider create a fresh key when none exists (dev start-up only).
    """
    cfg = settings.secrets
    if cfg.kek_provider == "file":
        return FileKekProvider(
            settings.resolved_key_file,
            keyring=keyring_dir(settings),
            previous_files=cfg.previous_kek_files,
            create=create,
        )
    if cfg.kek_provider == "env":
        return EnvKekProvider(environ, name=cfg.kek_env, previous_name=cfg.previous_kek_env)
    for ep in entry_points(group=group):
        if ep.name != cfg.kek_provider:
            continue
        try:
            factory: Callable[..., Any] = ep.load()
        except ImportError as exc:
            missing = getattr(exc, "name", None) or type(exc).__name__
            raise ConfigError(
                f"secrets.kek_provider: plugin {cfg.kek_provider!r} cannot load: {missing} is "
                "not installed",
                field="secrets.kek_provider",
            ) from None
        provider = factory(settings)
        if not isinstance(provider, KekProvider):
            raise ConfigError(
                f"secrets.kek_provider: plugin {cfg.kek_provider!r} ({ep.value}) did not return "
                "a KekProvider (load() and previous())",
                field="secrets.kek_provider",
            )
        return provider
    known = sorted({"file", "env", *(ep.name for ep in entry_points(group=group))})
    raise ConfigError(
        f"secrets.kek_provider: unknown provider {cfg.kek_provider!r} (known: {', '.join(known)})",
        field="secrets.kek_provider",
    )


class Keyring:
    """The KEKs one process holds: the current one (seals) and older ones (still open).

    Thread-safe. Reloading only adds keys and may change the current one; if the provider
    fails on reload (a file caught mid-replace, a vault briefly down) the keys already held stay
    in use.
    """

    def __init__(self, provider: KekProvider) -> None:
        self.provider = provider
        self._lock = threading.Lock()
        self._version: object = self._provider_version()
        self.current, self._keys = self._read()

    @property
    def current_id(self) -> str:
        return kek_id(self.current)

    @property
    def ids(self) -> list[str]:
        """Known kek ids, the current one first."""
        cur = self.current_id
        return [cur, *sorted(k for k in self._keys if k != cur)]

    def get(self, kid: str) -> bytes | None:
        return self._keys.get(kid)

    def reload(self) -> bool:
        """Re-read the provider; True when the set of keys changed."""
        with self._lock:
            version = self._provider_version()
            try:
                current, keys = self._read()
            except ConfigError as exc:
                log.warning("keeping the key-encryption keys already loaded: %s", exc.message)
                return False
            # Keys held before stay held: a process never loses what it could open.
            keys = {**self._keys, **keys}
            changed = current != self.current or keys.keys() != self._keys.keys()
            self.current, self._keys, self._version = current, keys, version
        if changed:
            log.info("key-encryption keys reloaded: current kek id %s", self.current_id)
        return changed

    def refresh(self) -> bool:
        """Reload only if the provider reports a change (cheap; called before sealing)."""
        if self._provider_version() == self._version:
            return False
        return self.reload()

    def _provider_version(self) -> object:
        version = getattr(self.provider, "version", None)
        return version() if callable(version) else None

    def _read(self) -> tuple[bytes, dict[str, bytes]]:
        current = self.provider.load()
        if len(current) != KEK_BYTES:
            raise ConfigError(f"key-encryption key must be {KEK_BYTES} bytes", field="key_file")
        keys = {kek_id(k): k for k in self.provider.previous() if len(k) == KEK_BYTES}
        keys[kek_id(current)] = current
        return current, keys


def load_keyring(
    settings: DatawaveSettings, *, environ: Mapping[str, str], create: bool = False
) -> Keyring:
    """The keyring of this process (see :func:`kek_provider` for the arguments)."""
    return Keyring(kek_provider(settings, environ=environ, create=create))


def kek_setting(settings: DatawaveSettings) -> str:
    """The setting an operator fixes when the key is wrong: named in start-up errors."""
    return {"file": "key_file", "env": "secrets.kek_env"}.get(
        settings.secrets.kek_provider, "secrets.kek_provider"
    )
