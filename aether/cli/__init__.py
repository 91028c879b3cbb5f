"""The ``aether`` command line (typer + rich).

Core commands live in ``_core``; each feature area adds a module with a ``register(app)``
function, listed in ``_MODULES`` (a module that is absent is skipped).
"""

from __future__ import annotations

import importlib

from ._app import app, main

_MODULES = ("_core", "_state", "_security", "_maintenance", "_server", "_mcp")

for _name in _MODULES:
    try:
        _mod = importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_name}":
            raise
        continue
    _mod.register(app)

__all__ = ["app", "main"]
