"""Locate the data shipped with aether: model manifests and index recipes."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``models`` or ``indexes``: inside the wheel, or at the repository root in a source checkout."""
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"aether's {name}/ data directory is missing from this installation")


@cache
def model_manifests() -> dict[str, dict[str, Any]]:
    """Every model manifest, keyed by lower-cased model name and by file stem."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(data_dir("models").glob("*.json")):
        manifest = json.loads(path.read_text())
        out[manifest["name"].lower()] = manifest
        out[path.stem.lower()] = manifest
    return out


def model_manifest(name: str) -> dict[str, Any]:
    """The manifest of one model by name."""
    manifests = model_manifests()
    try:
        return manifests[name.lower()]
    except KeyError:
        known = sorted({m["name"] for m in manifests.values()})
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(known)}") from None
