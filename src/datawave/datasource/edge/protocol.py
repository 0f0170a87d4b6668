"""What travels between an edge and the core: subjects, msgpack framing, and input checks.

Every subject of an edge is under ``dw.edge.<site>``; the hub's permissions (see
:mod:`~datawave.datasource.edge.natsproc`) make the site token of a subject trustworthy: an
edge can publish only under its own site. Payload fields are still checked against it.

=========================  =========================  ======================================
subject                    direction, pattern         payload
=========================  =========================  ======================================
``.register``              edge → core, request       ``{token, node, seal_key, csr}``
``.renew``                 edge → core, request       ``{node, csr}`` → ``{ok, cert}``
``.sync``                  edge → core, request       ``{node, epoch, records: [...]}``
``.heartbeat``             edge → core, publish       ``{node, version, load, queue_depth, ...}``
``.cmd``                   core → edge, request       ``{id, kind, args}``
=========================  =========================  ======================================

A message that is not msgpack, is larger than :data:`MAX_MESSAGE_BYTES`, or lacks a field is
rejected by :func:`decode` with :class:`BadMessage`; receivers count it and carry on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgpack

from datawave.datasource.edge.natsproc import edge_subject_prefix
from datawave.datasource.errors import EdgeError

__all__ = [
    "HEALTH_CONCURRENCY",
    "HEALTH_TIMEOUT_S",
    "MAX_MESSAGE_BYTES",
    "BadMessage",
    "decode",
    "encode",
    "subject",
    "wildcard",
]

#: A ``check_health`` command: seconds per check unless the core sends its timeouts, and how
#: many checks the edge runs at once (the core waits for the waves that makes).
HEALTH_TIMEOUT_S: Final = 10.0
HEALTH_CONCURRENCY: Final = 8

#: Larger messages are refused unread (nats-server's own default max_payload is 1 MiB).
MAX_MESSAGE_BYTES: Final = 1 << 20
KINDS: Final = frozenset({"register", "renew", "sync", "heartbeat", "cmd"})


class BadMessage(EdgeError):
    """A message that cannot be accepted; ``reason`` is short and safe to count by."""

    def __init__(self, reason: str, **context: Any) -> None:
        super().__init__(f"rejected edge message: {reason}", reason=reason, **context)
        self.reason = reason


def subject(site: str, kind: str) -> str:
    """``dw.edge.<site>.<kind>``."""
    if kind not in KINDS:
        raise EdgeError(f"unknown edge subject kind {kind!r}")
    return f"{edge_subject_prefix(site)}.{kind}"


def wildcard(kind: str) -> str:
    """The core's subscription for one kind across every site: ``dw.edge.*.<kind>``."""
    if kind not in KINDS:
        raise EdgeError(f"unknown edge subject kind {kind!r}")
    return f"dw.edge.*.{kind}"


def site_of(subj: str) -> str:
    """The site token of an edge subject (trustworthy: the hub enforces it)."""
    parts = subj.split(".")
    if len(parts) < 4 or parts[0] != "dw" or parts[1] != "edge":
        raise BadMessage("not an edge subject", subject=subj[:200])
    return parts[2]


def encode(payload: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(payload, use_bin_type=True, datetime=False, default=_default)
    if len(data) > MAX_MESSAGE_BYTES:
        raise EdgeError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}", size=len(data))
    return data


def _default(obj: Any) -> Any:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, frozenset | set | tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def decode(data: bytes, *, required: Iterable[str] = ()) -> dict[str, Any]:
    """Unpack a message and check it is a map holding ``required`` keys.

    Raises:
        BadMessage: Oversized, not msgpack, not a map, or a required key is missing.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage("oversized", size=len(data))
    try:
        payload = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise BadMessage("not msgpack") from None
    except Exception:  # msgpack raises a zoo of types on garbage
        raise BadMessage("not msgpack") from None
    if not isinstance(payload, dict):
        raise BadMessage("not a map")
    missing = [k for k in required if k not in payload]
    if missing:
        raise BadMessage(f"missing {', '.join(missing)}")
    return payload
