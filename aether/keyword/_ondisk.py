"""The persisted keyword index's record: format, store and checksums of its files (``aether-keyword.json``).

A tantivy segment has no checksum that the Python bindings verify, so a flipped byte could
otherwise change results silently (or panic): the index is reused only while its files match the
record of its last commit, and rebuilt (it is derived) otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._analysis import ANALYZER

if TYPE_CHECKING:
    from ..engine.store import Engine

_META = "aether-keyword.json"
#: Bump when the schema or analyzer changes: an index with another format is rebuilt.
FORMAT = 1
#: Files in the index directory that carry no index data (not checksummed).
_UNSUMMED = (".tantivy-writer.lock", ".tantivy-meta.lock", ".managed.json", _META, _META + ".tmp")


def clean_leftovers(d: Path) -> None:
    """Remove the ``.tmp`` and ``.old`` siblings of ``d`` that a rebuild cut short leaves behind."""
    for extra in (d.with_name(d.name + ".tmp"), d.with_name(d.name + ".old")):
        if extra.exists():
            shutil.rmtree(extra, ignore_errors=True)


def read_meta(d: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((d / _META).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def file_sums(d: Path, cache: dict[tuple[str, int, int], int]) -> dict[str, list[int]]:
    """``name -> [size, crc32c]`` of the index files (segment files never change once written,
    so each is read once per process (``cache``); ``meta.json`` and delete files get new contents or names)."""
    import crc32c

    out: dict[str, list[int]] = {}
    for p in sorted(d.iterdir()):
        if p.name in _UNSUMMED or not p.is_file():
            continue
        st = p.stat()
        key = (p.name, st.st_size, st.st_mtime_ns)
        c = cache.get(key)
        if c is None:
            c = 0
            with open(p, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    c = crc32c.crc32c(chunk, c)
            cache[key] = c
        out[p.name] = [st.st_size, c]
    return out


def intact(d: Path, engine: Engine, tv: Any, cache: dict[tuple[str, int, int], int]) -> bool:
    """Same format and store, and every index file as recorded at the last commit (a mismatch means rebuild)."""
    meta = read_meta(d)
    want = {"format": FORMAT, "analyzer": ANALYZER, "store_id": engine.store_id}
    if meta is None or {k: meta.get(k) for k in want} != want or not tv.Index.exists(str(d)):
        return False
    files = meta.get("files")
    if not isinstance(files, dict) or "meta.json" not in files:
        return False
    try:
        # Only what the committed meta.json names: a writer killed mid-segment leaves files
        # of an uncommitted segment behind, which tantivy ignores and so do we.
        segs = json.loads((d / "meta.json").read_text(encoding="utf-8"))["segments"]
        ids = tuple(str(g["segment_id"]).replace("-", "") for g in segs)
        now = file_sums(d, cache)
    except (OSError, ValueError, KeyError, TypeError):
        return False

    def named(sums: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sums.items() if k == "meta.json" or (ids and k.startswith(ids))}

    return named(now) == named(files)


def write_meta(d: Path, engine: Engine, cache: dict[tuple[str, int, int], int]) -> None:
    """Record the format, the store and the files' checksums of the index just committed in ``d``."""
    # No fsync: a torn or lost copy only makes the next open rebuild the (derived) index.
    body = {"format": FORMAT, "analyzer": ANALYZER, "store_id": engine.store_id, "files": file_sums(d, cache)}
    tmp = d / (_META + ".tmp")
    tmp.write_text(json.dumps(body, sort_keys=True), encoding="utf-8")
    tmp.replace(d / _META)
