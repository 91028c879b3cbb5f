"""Persisted index partitions: ``index/<gen>/CATALOG.json`` and one FAISS file per partition.

Index files are derived data. Each is FAISS's own serialisation, sealed by the store's
codec (``aad = index|<store_id>|<file>``) and written atomically; the catalog records
each file's size and CRC32C, and its own CRC32C covers the rest of it. Anything that
does not verify is rebuilt from the version rows: never a silent wrong answer.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crc32c
import faiss
import numpy as np

from ..errors import CorruptionError, TamperedError
from ..storage import checked_json
from ..storage._fs import fsync_dir, io_errors, replace, write_atomic
from ..storage.codec import Codec, PlainCodec

CATALOG = "CATALOG.json"
CATALOG_FORMAT = 1


#: Prefix of an index folder being removed (renamed first, so no catalog outlives its files).
REMOVED_PREFIX = "index.removed-"

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def gen_dir(root: Path, generation: int) -> Path:
    return root / "index" / str(int(generation))


@contextlib.contextmanager
def publish_lock(root: Path) -> Iterator[None]:
    """Serialise index publication in one store (one writer process per store: a process lock suffices).

    Held from reading the old catalog through writing the new files, publishing the catalog and
    removing old files, so that one publication can never delete a file another is about to list.
    """
    key = os.path.realpath(root)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(key, threading.RLock())
    with lock:
        yield


def publish(root: Path, generation: int, body: dict[str, Any]) -> None:
    """Publish ``body`` as the generation's catalog, then remove files that no recent catalog lists.

    Files the previous catalog listed are kept one publication longer: a read-only process that
    loaded that catalog just before can still open them. Call after writing the new files.
    """
    with publish_lock(root):
        prev = load_catalog(root, generation) or {}
        save_catalog(root, generation, body)
        keep = {e["file"] for e in body.get("partitions", [])}
        keep |= {e.get("file") for e in prev.get("partitions", []) if isinstance(e, dict)}
        remove_unlisted(root, generation, {k for k in keep if isinstance(k, str)})


def remove_all(root: Path) -> int:
    """Remove every index file of the store (compaction: they hold vectors of purged rows); returns the count.

    The folder is renamed away first (one atomic step), so a crash never leaves a catalog whose
    files are partly deleted; a renamed folder left by a crash is removed by :func:`remove_leftovers`.
    """
    with publish_lock(root):
        d = root / "index"
        if not d.is_dir():
            return 0
        count = sum(1 for p in d.rglob("*") if p.is_file())
        gone = root / f"{REMOVED_PREFIX}{secrets.token_hex(4)}"
        replace(d, gone)
        fsync_dir(root)
        shutil.rmtree(gone, ignore_errors=True)
        return count


def remove_leftovers(root: Path) -> None:
    """Delete index folders a crashed :func:`remove_all` renamed but did not finish removing."""
    with contextlib.suppress(OSError):
        for p in root.iterdir():
            if p.name.startswith(REMOVED_PREFIX) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)



def vids_crc(version_ids: np.ndarray) -> int:
    """Checksum of a partition's version ids in index order (detects a changed row set)."""
    return crc32c.crc32c(np.ascontiguousarray(version_ids, np.int64).tobytes())


def aad(store_id: str, rel: str) -> bytes:
    return f"index|{store_id}|{rel}".encode()


def write_index_file(root: Path, rel: str, index: Any, codec: Codec, store_id: str) -> dict[str, Any]:
    """Serialise ``index`` to ``root/rel`` through the codec; returns ``{file, bytes, crc32c}``."""
    return write_index_bytes(root, rel, faiss.serialize_index(index), codec, store_id)


def write_index_bytes(root: Path, rel: str, serialized: np.ndarray, codec: Codec, store_id: str) -> dict[str, Any]:
    """Write an already serialised index (``faiss.serialize_index`` output) like :func:`write_index_file`."""
    data = codec.seal(np.ascontiguousarray(serialized, np.uint8).tobytes(), aad(store_id, rel))
    path = root / rel
    with io_errors("mkdir", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return {"file": rel, "bytes": len(data), "crc32c": crc32c.crc32c(data)}


def read_index_file(root: Path, entry: dict[str, Any], codec: Codec, store_id: str) -> Any:
    """Read, verify and deserialise one index file; raises ``CorruptionError`` if anything is off."""
    rel = entry["file"]
    path = root / rel
    if isinstance(codec, PlainCodec):
        return _read_mapped(path, entry)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptionError(f"cannot read index file: {exc}", path=str(path)) from None
    if len(data) != entry["bytes"] or crc32c.crc32c(data) != entry["crc32c"]:
        raise CorruptionError("index file checksum mismatch", path=str(path))
    try:
        plain = codec.open(data, aad(store_id, rel))
    except TamperedError as exc:
        raise CorruptionError(f"index file fails authentication: {exc}", path=str(path)) from None
    try:
        return faiss.deserialize_index(np.frombuffer(plain, np.uint8))
    except Exception as exc:  # FAISS raises RuntimeError on a malformed file
        raise CorruptionError(f"not a readable FAISS index: {exc}", path=str(path)) from None


def _read_mapped(path: Path, entry: dict[str, Any]) -> Any:
    """Unencrypted files: verify the checksum over a read-only map, then let FAISS map the vectors.

    The vectors of flat and HNSW-flat indexes stay in the page cache (``IO_FLAG_MMAP_IFC``)
    instead of being copied, so opening a large store does not read its indexes twice.
    """
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            ok = len(mm) == entry["bytes"] and crc32c.crc32c(mm) == entry["crc32c"]
    except (OSError, ValueError) as exc:
        raise CorruptionError(f"cannot read index file: {exc}", path=str(path)) from None
    if not ok:
        raise CorruptionError("index file checksum mismatch", path=str(path))
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    except Exception as exc:  # FAISS raises RuntimeError on a malformed file
        raise CorruptionError(f"not a readable FAISS index: {exc}", path=str(path)) from None


def save_catalog(root: Path, generation: int, body: dict[str, Any]) -> None:
    d = gen_dir(root, generation)
    with io_errors("mkdir", d):
        d.mkdir(parents=True, exist_ok=True)
    write_atomic(d / CATALOG, checked_json.dumps(body))


def load_catalog(root: Path, generation: int) -> dict[str, Any] | None:
    """The verified catalog, or ``None`` if it is missing or damaged (the index is then rebuilt)."""
    path = gen_dir(root, generation) / CATALOG
    try:
        body = checked_json.loads(path.read_bytes(), path=str(path), what="index catalog")
    except (OSError, CorruptionError):
        return None
    return body if body.get("format") == CATALOG_FORMAT else None


def remove_unlisted(root: Path, generation: int, keep: set[str]) -> None:
    """Delete index files of this generation that the catalog does not name (left by a crash or rebuild)."""
    d = gen_dir(root, generation)
    if not d.is_dir():
        return
    with publish_lock(root), contextlib.suppress(OSError):
        _remove_unlisted(d, generation, keep)


def _remove_unlisted(d: Path, generation: int, keep: set[str]) -> None:
    for p in list(d.iterdir()):
        rel = f"index/{generation}/{p.name}"
        if p.name != CATALOG and rel not in keep:
            with contextlib.suppress(OSError):  # derived data: a stale file is harmless, retried next time
                p.unlink(missing_ok=True)


__all__ = [
    "CATALOG",
    "gen_dir",
    "load_catalog",
    "publish",
    "publish_lock",
    "read_index_file",
    "remove_all",
    "remove_leftovers",
    "remove_unlisted",
    "save_catalog",
    "vids_crc",
    "write_index_bytes",
    "write_index_file",
]
