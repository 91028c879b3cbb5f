"""Payloads and structured content: what :class:`aether.Memory` needs beyond text.

An atom may carry a *payload*, bytes that are not its text (an image, a voice note, a video), and
a STRUCTURED atom carries a JSON object. Both are recorded in the version's content metadata
column under reserved keys (:data:`aether.models.PAYLOAD_KEY`, :data:`aether.models.JSON_KEY`),
so they follow the row everywhere it goes: the WAL and segments, the per-subject sealing of an
encrypted store, erasure scrubbing, corrections (kept unless replaced) and history. The bytes
live in the store's blob area (:mod:`aether.storage.blobs`), named by the SHA-256 digest the row
records.

Garbage collection (:func:`collect`) deletes every blob that no version still in the table (and
not erased) names: the facade runs it after an erasure and after a compaction, under the writer
lock. A blob shared by several atoms (the same bytes stored twice) stays while any of them does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InvalidInputError, InvalidPayloadError, PayloadFileError
from .models import JSON_KEY, PAYLOAD_KEY
from .storage.blobs import CHUNK, BlobStore, iter_file

if TYPE_CHECKING:
    from .engine.store import Engine

#: Default largest payload accepted (``aether.open(max_payload_bytes=...)``): 4 GiB.
DEFAULT_MAX_PAYLOAD_BYTES = 4 << 30
#: Prefix of the tags that mirror a STRUCTURED atom's top-level scalar fields (``"$.status"``).
FIELD_TAG = "$."

# RFC 6838 type/subtype names (restricted-name), optional ``; key=value`` parameters.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_CONTENT_TYPE = re.compile(rf"^({_NAME})/({_NAME})((?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(?:[^;\s\"]+|\"[^\"]*\"))*)$")

_STORES: weakref.WeakKeyDictionary[Any, BlobStore] = weakref.WeakKeyDictionary()


def check_content_type(content_type: Any) -> str:
    """A ``type/subtype`` media type (parameters allowed), with type and subtype lower-cased.

    Raises
    ------
    InvalidPayloadError
        Not a str of that form.
    """
    if not isinstance(content_type, str) or len(content_type) > 255:
        raise InvalidPayloadError(f"content_type must be a 'type/subtype' str, got {content_type!r}")
    m = _CONTENT_TYPE.match(content_type.strip())
    if m is None:
        raise InvalidPayloadError(f"content_type {content_type!r} is not a 'type/subtype' media type")
    return f"{m.group(1).lower()}/{m.group(2).lower()}{m.group(3)}"


def payload_chunks(payload: Any) -> tuple[Iterator[bytes], str | None]:
    """The bytes of ``payload`` as chunks, and the file name when it was a path.

    ``payload`` is ``bytes`` / ``bytearray`` / ``memoryview``, a path (``str`` or ``os.PathLike``)
    or a binary file object (anything with ``read``).

    Raises
    ------
    PayloadFileError
        A path that does not exist, is not a regular file or cannot be read.
    InvalidPayloadError
        Anything else.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
        return iter([data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]), None
    if isinstance(payload, str | os.PathLike):
        p = Path(os.fspath(payload))
        if not p.is_file():
            raise PayloadFileError(f"payload file {str(p)!r} does not exist or is not a regular file")
        try:
            fh = open(p, "rb")  # closed by _file_chunks
        except OSError as exc:
            raise PayloadFileError(f"payload file {str(p)!r} cannot be read: {exc.strerror or exc}") from None
        return _file_chunks(fh, p), p.name
    if callable(getattr(payload, "read", None)):
        return _guarded(iter_file(payload), getattr(payload, "name", "file object")), None
    raise InvalidPayloadError(f"payload must be bytes, a path or a binary file object, got {type(payload).__name__}")


def payload_name(payload: Any) -> str | None:
    """The file name of a path payload (or of a file object that has one), else ``None``."""
    if isinstance(payload, str | os.PathLike):
        return Path(os.fspath(payload)).name
    name = getattr(payload, "name", None) if callable(getattr(payload, "read", None)) else None
    return Path(name).name if isinstance(name, str) and name else None


def _file_chunks(fh: Any, p: Path) -> Iterator[bytes]:
    with fh:
        yield from _guarded(iter_file(fh), str(p))


def _guarded(it: Iterator[bytes], where: Any) -> Iterator[bytes]:
    try:
        yield from it
    except OSError as exc:
        raise PayloadFileError(f"payload {where!r} cannot be read: {exc.strerror or exc}") from None


def guess_content_type(name: str | None) -> str:
    """The media type of a file name (by extension), ``application/octet-stream`` when unknown."""
    import mimetypes

    if name:
        guess, _ = mimetypes.guess_type(name, strict=False)
        if guess:
            return guess
    return "application/octet-stream"


def modality_of(content_type: str) -> str:
    """The modality a media type implies (``image/*`` -> ``"image"``...), ``"text"`` otherwise."""
    major = content_type.split("/", 1)[0]
    return {"image": "image", "audio": "audio", "video": "video"}.get(major, "text")


# ---------------------------------------------------------------------- structured atoms
def check_structured(obj: Any) -> dict[str, Any]:
    """A JSON object (a dict, JSON-serialisable, no NaN); returned as a canonical copy."""
    if not isinstance(obj, Mapping):
        raise InvalidInputError(f"structured content must be a dict, got {type(obj).__name__}")
    try:
        text = json.dumps(dict(obj), sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"structured content is not JSON-serialisable: {exc}") from None
    out: dict[str, Any] = json.loads(text)
    if not out:
        raise InvalidInputError("structured content is an empty object")
    return out


def render_structured(obj: Mapping[str, Any]) -> str:
    """The deterministic text of a JSON object that is embedded and keyword-indexed.

    One ``key: value`` line per top-level key, keys sorted; strings as they are, other values
    as compact JSON with sorted keys. The same object always gives the same text.
    """
    lines = []
    for k in sorted(obj):
        v = obj[k]
        s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        lines.append(f"{k}: {s}")
    return "\n".join(lines)


def field_tags(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Tags mirroring the top-level scalar fields (str, int, float, bool) of a JSON object: ``"$.key"``."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, bool | int | float | str) and len(k) <= 120:
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**63:
                continue
            out[FIELD_TAG + k] = v
    return out


def where_tags(where: Mapping[str, Any] | None) -> dict[str, Any]:
    """``search(where={"field": value})`` as the tag filter it means."""
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise InvalidInputError(f"where must be a dict, got {type(where).__name__}")
    return {FIELD_TAG + str(k): v for k, v in where.items()}


# ---------------------------------------------------------------------- content metadata
def stored_meta(user_meta: str, *, payload: dict[str, Any] | None = None, data: Any = None) -> str:
    """The content metadata JSON to store: the caller's (already checked JSON text) plus the reserved keys."""
    meta = json.loads(user_meta) if user_meta and user_meta != "{}" else {}
    if PAYLOAD_KEY in meta or JSON_KEY in meta:
        raise InvalidInputError(f"content_metadata keys {PAYLOAD_KEY!r} and {JSON_KEY!r} are reserved")
    if payload is not None:
        meta[PAYLOAD_KEY] = payload
    if data is not None:
        meta[JSON_KEY] = data
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def descriptor(content_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"type": content_type, "size": size, "sha256": digest}


# ---------------------------------------------------------------------- the blob area of a store
def blobs_of(engine: Engine) -> BlobStore:
    """The engine's blob area (one per engine; an in-memory store's lives in a temp folder)."""
    bs = _STORES.get(engine)
    if bs is None:
        if engine.path is not None:
            root = Path(engine.path) / "blobs"
        else:
            root = Path(tempfile.mkdtemp(prefix="aether-blobs-"))
            weakref.finalize(engine, shutil.rmtree, root, True)
        bs = BlobStore(root, engine.codec, engine.store_id, read_only=engine.read_only)
        if not engine.read_only:
            bs.remove_temps()  # a write killed mid-way left its temp file
        _STORES[engine] = bs
    return bs


def live_digests(engine: Engine) -> set[str]:
    """Digests named by a version row still in the table and not erased (history included)."""
    t = engine.table
    n = engine.snapshot.n
    dead = t.dead
    out: set[str] = set()
    for start, col in t.column_slices("content_meta", 0, n):
        pairs: list[tuple[int, Any]]
        if isinstance(col, list):
            pairs = [(i, s) for i, s in enumerate(col) if PAYLOAD_KEY in s]
        else:
            hit = np.flatnonzero(np.asarray(pc.fill_null(pc.match_substring(col, PAYLOAD_KEY), False)))
            values = col.take(pa.array(hit, pa.int64())).to_pylist() if len(hit) else []
            pairs = list(zip(hit.tolist(), values, strict=True))
        for i, s in pairs:
            row = start + i
            if row >= n or dead[row]:
                continue
            try:
                desc = json.loads(s).get(PAYLOAD_KEY)
            except ValueError:
                continue
            if isinstance(desc, dict) and isinstance(desc.get("sha256"), str):
                out.add(desc["sha256"])
    return out


def collect(engine: Engine) -> int:
    """Delete the blobs no live version names (see the module docstring); returns how many."""
    if engine.read_only:
        return 0
    from . import spaces

    bs = blobs_of(engine)
    with engine.write_lock:
        spaces.purge(engine)  # vectors computed from the payloads of versions that are gone
        return bs.collect(live_digests(engine))
