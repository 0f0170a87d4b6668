"""datawave datasource: register, test, discover and watch every data source you own.

The public face is small: :func:`connect` returns a client of a running core (or of a Ray
cluster reachable from a driver script); everything else lives in the layered subpackages
``models → connectors/store → engines → actors/edge → serve/cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datawave.datasource import errors
from datawave.datasource.config import DatawaveSettings, load_settings

if TYPE_CHECKING:
    from datawave.datasource.actors.client import Client

__version__ = "0.1.0"

__all__ = ["Client", "DatawaveSettings", "__version__", "connect", "errors", "load_settings"]


def connect(address: str | None = None, **kwargs: Any) -> Client:
    """Connect to a datawave core on a Ray cluster; see :func:`datawave.datasource.actors.client.connect`."""
    from datawave.datasource.actors.client import connect as _connect

    return _connect(address, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Client":
        from datawave.datasource.actors.client import Client

        return Client
    raise AttributeError(name)
