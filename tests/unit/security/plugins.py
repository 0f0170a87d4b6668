"""Install a throw-away plugin distribution (a module + entry points) on ``sys.path``.

``importlib.metadata`` finds it exactly like an installed package, so the provider registries
are exercised through their real entry-point lookup.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from pathlib import Path

import pytest


def install_plugin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    group: str,
    name: str,
    source: str,
    attr: str,
) -> str:
    """Write module ``source`` and register ``name = module:attr`` in ``group``; returns the
    module name (unique per call so tests never share an imported module)."""
    module = f"dw_test_plugin_{uuid.uuid4().hex[:8]}"
    root = tmp_path / f"site-{module}"
    root.mkdir()
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}:{attr}\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, module, raising=False)
    return module
