"""Where the Ray processes of ``datawave up`` listen: loopback unless ``ray.bind_host`` says so.

``ray start --node-ip-address=127.0.0.1`` alone does not keep Ray local on Linux: Ray swaps a
loopback node address for the machine's routable one, and then the GCS, the raylet, every
worker, the dashboard agent and the Ray Client server listen on all interfaces. Ray keeps a
node on loopback only in its single-machine mode (the default on macOS and Windows), which
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` selects on Linux too. Every process that joins such a
head (the head itself, drivers such as the CLI, tests and notebooks) needs that mode as well,
or it looks for the head on the routable address and times out. See ``cluster/NETWORK.md``.

This module does not import Ray: the CLI builds its environment before Ray is loaded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from datawave.datasource.config import DatawaveSettings

__all__ = ["LOCAL_ONLY_ENV", "apply_local_only", "is_loopback", "ray_bind_env"]

#: Ray's switch between single-machine (``0``: loopback) and cluster networking.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ray_bind_env(settings: DatawaveSettings) -> dict[str, str]:
    """Environment that keeps a local head (and the drivers joining it) on loopback."""
    return {LOCAL_ONLY_ENV: "0"} if is_loopback(settings.ray.bind_host) else {}


def apply_local_only(env: Mapping[str, str]) -> None:
    """Switch an already-imported Ray to single-machine networking when ``env`` asks for it.

    Ray reads the variable once, at import; a driver that imported Ray before joining our
    loopback head would otherwise resolve its own address to the routable one.
    """
    if env.get(LOCAL_ONLY_ENV) != "0":
        return
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - Ray is a dependency
        return
    ray_constants.ENABLE_RAY_CLUSTER = False
