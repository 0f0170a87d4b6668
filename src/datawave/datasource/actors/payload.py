"""Settings as they cross into Ray: never with the store password.

Actor constructor arguments live in the GCS (and Serve's configs in its checkpoint) for the life
of the cluster, readable by anyone who can reach it. So the settings an actor is created with
carry the store URL with its password masked (``***``), and the actor puts the password back
from its own process: ``DATAWAVE_STORE_URL`` in the environment the raylet gave it (``datawave
up`` starts Ray with the caller's environment; on a cluster, set it on every node), or the file
named by ``secrets.store_password_file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from datawave.datasource.config import DatawaveSettings
from datawave.datasource.errors import ConfigError

__all__ = [
    "MASK",
    "is_masked",
    "local_settings",
    "mask_store_url",
    "remote_settings",
    "store_url_for",
]

MASK = "***"
_PASSWORD_KEYS = frozenset({"password", "passwd", "pwd"})


def mask_store_url(url: str) -> str:
    """``url`` with its password (userinfo or query) replaced by ``***``; others unchanged."""
    try:
        u = make_url(url)
    except ArgumentError:
        return url
    query = {k: (MASK if k.lower() in _PASSWORD_KEYS else v) for k, v in u.query.items()}
    if u.password is None and query == dict(u.query):
        return url
    masked = u.set(password=MASK if u.password is not None else None, query=query)
    return masked.render_as_string(hide_password=False)


def is_masked(url: str) -> bool:
    """Whether ``url`` carries a masked password (``mask_store_url`` output)."""
    try:
        u = make_url(url)
    except ArgumentError:
        return False
    return u.password == MASK or any(v == MASK for v in u.query.values())


def remote_settings(settings: DatawaveSettings) -> dict[str, Any]:
    """What an actor or replica is created with: the settings, store password masked."""
    payload = settings.model_dump(mode="json")
    if settings.store_url:
        payload["store_url"] = mask_store_url(settings.store_url)
    return payload


def store_url_for(
    masked: str, settings: DatawaveSettings, environ: Mapping[str, str] | None = None
) -> str:
    """The real store URL for a ``masked`` one, from this process's own configuration.

    Raises:
        ConfigError: the URL is masked and neither ``DATAWAVE_STORE_URL`` (in ``settings`` or
            ``environ``) nor ``secrets.store_password_file`` supplies the password.
    """
    if not is_masked(masked):
        return masked
    candidates = [settings.store_url, (environ or {}).get("DATAWAVE_STORE_URL")]
    for cand in candidates:
        if cand:
            cand = _normalize(cand)
            if mask_store_url(cand) == masked:
                return cand
    pw_file = settings.secrets.store_password_file
    if pw_file is not None:
        return _with_password(masked, _read_password(pw_file))
    raise ConfigError(
        "store_url: the store password is not passed through Ray; set DATAWAVE_STORE_URL in "
        "the environment of every Ray node (and of this process), or "
        "secrets.store_password_file",
        field="store_url",
    )


def local_settings(
    payload: Mapping[str, Any] | DatawaveSettings, environ: Mapping[str, str]
) -> DatawaveSettings:
    """Settings inside an actor: the payload, with the store password restored locally."""
    s = (
        payload
        if isinstance(payload, DatawaveSettings)
        else DatawaveSettings.model_validate(dict(payload))
    )
    if s.store_url and is_masked(s.store_url):
        url = store_url_for(s.store_url, s.model_copy(update={"store_url": None}), environ)
        s = s.model_copy(update={"store_url": url})
    return s


def _normalize(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _read_password(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"secrets.store_password_file: cannot read {path}: {type(exc).__name__}",
            field="secrets.store_password_file",
        ) from None
    return text.rstrip("\r\n")


def _with_password(masked: str, password: str) -> str:
    u = make_url(masked)
    query = {k: (password if v == MASK else v) for k, v in u.query.items()}
    out = u.set(password=password if u.password == MASK else u.password, query=query)
    return out.render_as_string(hide_password=False)
