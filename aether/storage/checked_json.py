"""Self-checksummed JSON documents (the manifest, the keyring, index catalogs).

The document carries a ``checksum`` field: the CRC32C of the canonical JSON (sorted keys,
compact separators) of every other field, so damage is detected before a field is trusted.
"""

from __future__ import annotations

import json
from typing import Any

import crc32c

from ..errors import CorruptionError


def checksum(body: dict[str, Any]) -> int:
    """CRC32C of the canonical JSON of ``body``."""
    return crc32c.crc32c(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def dumps(body: dict[str, Any]) -> bytes:
    """``body`` plus its checksum, as readable JSON bytes."""
    return json.dumps({**body, "checksum": checksum(body)}, indent=1, sort_keys=True).encode()


def loads(data: bytes, *, path: str, what: str) -> dict[str, Any]:
    """Parse and verify; returns the body without the checksum. Only ``CorruptionError`` escapes."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or "checksum" not in doc:
            raise CorruptionError(f"{what} has no checksum", path=path)
        body = {k: v for k, v in doc.items() if k != "checksum"}
        ok = checksum(body) == doc["checksum"]
    except CorruptionError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise CorruptionError(f"{what} is not valid JSON: {exc}", path=path) from None
    if not ok:
        raise CorruptionError(f"{what} checksum mismatch", path=path)
    return body
