"""``MANIFEST.json``: the root of a store, replaced atomically at every checkpoint.

It names the format version, the model identity, the live segment and closing files
(with their checksums) and the checkpoint: the last transaction folded into segments.
Its own CRC32C covers every other field, so a damaged manifest is never half-trusted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CorruptionError, FormatVersionError, StoreNotFoundError
from . import _fs, checked_json
from ._fs import io_errors

FORMAT_VERSION = 1
NAME = "MANIFEST.json"


def parse(data: bytes, path: str = NAME) -> dict[str, Any]:
    """Parse and verify manifest bytes; only typed errors escape."""
    body = checked_json.loads(data, path=path, what="manifest")
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
    # The checksum proves the bytes are what a writer wrote; the shape checks below keep a
    # manifest from a buggy or hostile writer from surfacing as a KeyError deep in recovery.
    if not isinstance(body.get("store_id"), str):
        raise CorruptionError("manifest field 'store_id' is missing or malformed", path=path)
    model = body["model"]
    if not isinstance(model.get("identity"), str) or not _is_int(model.get("dim")) or model["dim"] < 1:
        raise CorruptionError("manifest field 'model' is malformed", path=path)
    ck = body["checkpoint"]
    if not all(_is_int(ck.get(k)) and ck[k] >= 0 for k in ("seq", "tx", "next_version_id")):
        raise CorruptionError("manifest field 'checkpoint' is malformed", path=path)
    for key in ("segments", "closings"):
        for entry in body[key]:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("file"), str)
                or not _safe_rel(entry["file"])
                or not all(_is_int(entry.get(k)) and entry[k] >= 0 for k in ("rows", "bytes", "crc32c"))
            ):
                raise CorruptionError(f"manifest field {key!r} has a malformed entry", path=path)
    return body


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _safe_rel(rel: str) -> bool:
    """A file named by the manifest must stay inside the store directory."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and "\\" not in rel and all(p not in ("", ".", "..") for p in parts)


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
    with io_errors("write manifest", root / NAME):
        _fs.write_atomic(root / NAME, checked_json.dumps(body))
