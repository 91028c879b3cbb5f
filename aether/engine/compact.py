"""Compaction: rewrite the live rows into a fresh segment, purging erased rows and their vectors.

``compact(engine)`` is the first, simplest policy: after a checkpoint, every row that is not
dead (erased) is written, with its final ``tx_to`` (closings folded in), into one new segment;
the manifest is swapped atomically to name only that segment (no closings, no pending
erasures); then the old segment, closing and WAL files and the derived index files (which hold
vectors of erased rows) are deleted, and the derived indexes rebuild from the new rows. Version
ids, transaction times and the hash-chained log are unchanged: history stays as it was, minus
the erased rows.

A crash at any point leaves either the old manifest (old files still there; orphans of the new
one are removed on open) or the new one. Segment-merge and retention policies build on this
function later; keep it the one entry point.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..storage._fs import tree_bytes
from ..storage.segments import write_table

if TYPE_CHECKING:
    from .store import Engine


@dataclass(frozen=True)
class CompactResult:
    """What a compaction did."""

    rows_before: int
    rows_after: int
    #: rows removed (erased)
    purged: int
    #: files deleted (segments, closings, WAL, index files)
    files_removed: int
    bytes_before: int
    bytes_after: int


def _disk_bytes(root: Path | None) -> int:
    if root is None:
        return 0
    return tree_bytes(root)


def _reload(engine: Engine, body: dict[str, Any] | None) -> None:
    """Save ``body`` (if given) as the manifest and reload the table; readers overlapping it retry."""
    with engine.generation_swap():
        if body is not None:
            engine.reload_from_manifest(body)
        # Rows moved: a derived index with ``on_reset`` rebuilds from scratch; others re-open.
        engine.derived.reopen(engine, reset=True)


def remove_index_files(engine: Engine) -> int:
    """Remove the derived indexes' files (each renames its folder away first: a crash never leaves a
    catalog without its files); returns how many there were."""
    return engine.derived.remove_files(engine)


#: Where a re-index (``aether.maintenance.reindex``, a layer above) stages its parts; named here
#: because compaction, below it, has to remove them.
REINDEX_STAGING = "reindex"


def remove_reindex_staging(root: Path) -> None:
    """Drop the staged parts of an interrupted re-index after a compaction deleted their sources.

    They could never be installed now (a resumed re-index plans the new segments and names each
    part by its source's checksum), and they hold copies of rows the compaction purged: after a
    subject's erasure, ciphertext that a keyring copy taken earlier would still open.
    """
    d = root / REINDEX_STAGING
    if d.is_dir():
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def no_index_publication(engine: Engine) -> Iterator[None]:
    """Hold index publication off for a compaction (with the write lock already held).

    Background index builds publish their in-memory state under the write lock (so they wait for
    the compaction, then drop a build of the replaced table) and write their files under the
    store's publication lock (taken here): one already writing finishes first, one not yet
    started finds the table replaced and writes nothing. So no index file with vectors of purged
    rows is written after the compaction removed them, and the compaction never waits, under the
    write lock, for a build that needs the write lock to finish (a deadlock).
    """
    with engine.derived.hold_publication(engine):
        yield


def check_options(engine: Engine, *, merge_below: Any, retain_after: Any) -> int | None:
    """Validate compaction options; returns the retention horizon to use (µs, or ``None``).

    A horizon past the latest commit would purge every superseded version, making every past
    as-of answer wrong: it is rejected when it lies in the future, and a horizon between the
    latest commit and now (e.g. ``retain=timedelta(0)``) means "up to the latest commit".
    """
    if merge_below is not None and (
        not isinstance(merge_below, int | np.integer) or isinstance(merge_below, bool) or merge_below < 0
    ):
        raise InvalidInputError(f"merge_below must be a non-negative number of rows, got {merge_below!r}")
    if retain_after is None:
        return None
    if not isinstance(retain_after, int | np.integer) or isinstance(retain_after, bool):
        raise InvalidInputError(f"retain must be a time or a timedelta, got {retain_after!r}")
    last = int(engine._snap.last_tx)
    if int(retain_after) > max(int(engine.clock()), last):
        raise InvalidInputError(
            "retain reaches past the latest commit (a future time or a negative timedelta): it would purge "
            "every superseded version and make every past as-of answer wrong"
        )
    return min(int(retain_after), last + 1)  # past the latest commit, every horizon drops the same


def compact(engine: Engine, *, merge_below: int | None = None, retain_after: int | None = None) -> CompactResult:
    """Rewrite the store without its erased rows (see the module docstring).

    With ``merge_below`` (rows) or ``retain_after`` (a transaction time, µs) the segment-merge and
    retention policy of :mod:`aether.engine.compact_policy` runs instead (rewrites only what needs it).

    Raises
    ------
    ReadOnlyError
        The store was opened read-only.
    StorageIOError
        A write failed; the store is left as it was (the old manifest stays in force).
    """
    retain_after = check_options(engine, merge_below=merge_below, retain_after=retain_after)
    if merge_below is not None or retain_after is not None:
        from .compact_policy import compact_policy

        return compact_policy(engine, merge_below=merge_below, retain_after=retain_after)
    engine._check_writable()
    with engine._wlock, no_index_publication(engine):
        engine._check_writable()
        before = _disk_bytes(engine.path)
        t = engine.table
        n_before = engine._snap.n
        if engine.path is None:
            from .compact_policy import compact_in_memory  # (it imports this module)

            return compact_in_memory(engine, None)

        root = engine.path
        engine.checkpoint()
        assert engine._wal is not None
        snap = engine._snap
        n = snap.n
        alive = np.flatnonzero(~t.dead[:n])
        body = dict(engine.manifest)
        old_files = [e["file"] for e in body["segments"] + body["closings"]]
        segments: list[dict[str, Any]] = []
        if len(alive):
            rel = f"segments/{snap.last_seq:020d}-c{secrets.token_hex(4)}.parquet"
            table = engine.hooks.segment_table(engine, 0, n, only=alive)
            entry = write_table(root, rel, table, engine.codec, engine.store_id)
            entry.update(min_version=int(t.version_id[alive[0]]), max_version=int(t.version_id[alive[-1]]))
            segments.append(entry)
        body["segments"] = segments
        body["closings"] = []
        body["erased"] = []
        body["compactions"] = int(body.get("compactions", 0)) + 1
        removed = 0
        # Derived index files hold vectors of erased rows: remove them before the swap (a crash
        # then leaves the old manifest and no index, which is rebuilt from the rows).
        removed += remove_index_files(engine)
        # WAL files before the current one may still hold rows from before the erasure.
        for old in engine._wal.rotate(snap.last_seq + 1):
            old.unlink(missing_ok=True)
            removed += 1
        engine.hooks.after_compaction(engine, table_replaced=False)
        _reload(engine, body)
        for rel in old_files:
            p = root / rel
            if p.exists():
                p.unlink()
            removed += 1
        remove_reindex_staging(root)
        return CompactResult(
            n_before, engine._snap.n, n_before - engine._snap.n, removed, before, _disk_bytes(root)
        )
