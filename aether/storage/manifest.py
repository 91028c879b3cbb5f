"""``MANIFEST.json``: the root of a store, replaced atomically at every checkpoint.

It names the format version, the model identity, the live segment and closing files
(with their checksums) and the checkpoint: the last transaction folded into segments.
Its own CRC32C covers every other field, so a damaged manifest is never half-trusted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import crc32c

from ..errors import CorruptionError, FormatVersionError, StoreNotFoundError
from ._fs import io_errors, write_atomic

FORMAT_VERSION = 1
NAME = "MANIFEST.json"


def _checksum(body: dict[str, Any]) -> int:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return crc32c.crc32c(canon)


def parse(data: bytes, path: str = NAME) -> dict[str, Any]:
    """Parse and verify manifest bytes; only typed errors escape."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptionError(f"manifest is not valid JSON: {exc}", path=path) from None
    if not isinstance(doc, dict) or "checksum" not in doc:
        raise CorruptionError("manifest has no checksum", path=path)
    body = {k: v for k, v in doc.items() if k != "checksum"}
    if _checksum(body) != doc["checksum"]:
        raise CorruptionError("manifest checksum mismatch", path=path)
    version = body.get("format_version")
    if not isinstance(version, int):
        raise CorruptionError("manifest has no format_version", path=path)
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"store format {version} is newer than this aether understands ({FORMAT_VERSION}); upgrade aether"
        )
    for key, typ in (("segments", list), ("closings", list), ("checkpoint", dict), ("model", dict)):
        if not isinstance(body.get(key), typ):
            raise CorruptionError(f"manifest field {key!r} is missing or malformed", path=path)
    return body


def load(root: Path) -> dict[str, Any]:
    path = root / NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreNotFoundError(f"no aether store at {root} (no {NAME})") from None
    except OSError as exc:
        raise CorruptionError(f"cannot read manifest: {exc}", path=str(path)) from None
    return parse(data, str(path))


def save(root: Path, body: dict[str, Any]) -> None:
    doc = dict(body)
    doc["checksum"] = _checksum(body)
    with io_errors("write manifest", root / NAME):
        write_atomic(root / NAME, json.dumps(doc, indent=1, sort_keys=True).encode())
