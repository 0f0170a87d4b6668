"""The sources an edge runs, as the core last sent them (``sources.set`` command).

Their secrets arrive sealed to this node's key (``sealed``, base64; see
:mod:`datawave.datasource.security.edgekeys`) and stay sealed here: the agent opens them only
right before it connects. The file is still private (0600) and lives next to the cache, never
in the LMDB cache (whose contents are metadata, shipped and shown). The digest is computed the
same way on both sides from ``(id, version)`` pairs; the edge reports it in every heartbeat
and the core resends the definitions when it differs (a config change or credential rotation
bumps the version).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datawave.datasource.errors import EdgeError, NotFound

__all__ = ["SourceBook", "sources_digest"]


def sources_digest(pairs: Iterable[tuple[str, int]]) -> str:
    text = ";".join(f"{i}:{v}" for i, v in sorted(pairs))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SourceBook:
    """Source definitions of one edge, persisted atomically in ``path`` (mode 0600)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._sources: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(self.path.read_text())
            self._sources = {s["id"]: s for s in data.get("sources", [])}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EdgeError(f"cannot read edge sources {self.path}: {type(exc).__name__}") from exc

    @property
    def digest(self) -> str:
        return sources_digest((s["id"], int(s.get("version", 1))) for s in self._sources.values())

    def ids(self) -> list[str]:
        return sorted(self._sources)

    def get(self, ref: str) -> dict[str, Any]:
        if ref in self._sources:
            return self._sources[ref]
        for s in self._sources.values():
            if s.get("name") == ref:
                return s
        raise NotFound(f"no source {ref!r} on this edge", kind="source", ref=ref)

    def replace(self, sources: Iterable[Mapping[str, Any]]) -> None:
        new = {}
        for s in sources:
            if not isinstance(s, Mapping) or not {"id", "type", "config"} <= set(s):
                raise EdgeError("a source definition needs id, type and config")
            entry = {
                "id": str(s["id"]),
                "name": str(s.get("name", s["id"])),
                "type": str(s["type"]),
                "config": dict(s["config"]),
                "version": int(s.get("version", 1)),
            }
            for opt in ("sealed", "secrets"):  # sealed blob, or why there is none
                if isinstance(s.get(opt), str):
                    entry[opt] = s[opt]
            new[str(s["id"])] = entry
        self._write({"sources": list(new.values())})
        self._sources = new

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
