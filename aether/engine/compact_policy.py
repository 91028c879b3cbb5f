"""Compaction policies on top of :func:`aether.engine.compact.compact`: segment merging and retention.

``compact(engine)`` without options rewrites every live row into one segment. With
``merge_below`` and/or ``retain_after`` it runs :func:`compact_policy` instead, which rewrites
only what needs it:

* a segment is *rewritten* when it is small (fewer than ``merge_below`` rows), holds erased
  rows, or holds versions that retention drops; other segments are kept byte for byte;
* each run of adjacent rewritten segments becomes one new segment in the same place (rows stay
  in version-id order, which the table's lookups rely on), with closings folded in;
* retention drops versions whose ``tx_to`` is older than the horizon: no query as of the
  horizon or later can see them (queries as of an earlier time then see less history);
* closings of kept segments' rows are rewritten into one closings file; old files are deleted
  after the manifest swap (the commit point: a crash leaves the old manifest and its files);
* derived indexes: when no row is dropped the rows keep their positions and the bucket index
  files stay valid (re-opened, nothing rebuilt); when rows are dropped their files are removed
  and the indexes rebuild from the rows (they hold vectors of purged rows).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import numpy as np

from .._time import OPEN
from ..storage.segments import closings_table, write_table
from .compact import (
    CompactResult,
    _disk_bytes,
    _reload,
    no_index_publication,
    remove_index_files,
    remove_reindex_staging,
)
from .table import VersionTable

if TYPE_CHECKING:
    from .store import Engine

#: Default for ``merge_below``: segments smaller than this are merged with their neighbours.
DEFAULT_MERGE_BELOW = 65_536


def _runs(candidate: list[bool]) -> list[tuple[int, int]]:
    """Maximal ``[i, j)`` runs of adjacent candidate segments."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(candidate):
        if candidate[i]:
            j = i
            while j < len(candidate) and candidate[j]:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def _reopen(engine: Engine, body: dict[str, Any]) -> None:
    """Swap the manifest and reload with the rows in the same positions: derived indexes re-open."""
    with engine.generation_swap():
        engine.reload_from_manifest(body)
        engine.derived.reopen(engine, reset=False)


def compact_policy(
    engine: Engine, *, merge_below: int | None = None, retain_after: int | None = None
) -> CompactResult:
    """Merge small segments, purge erased rows, drop versions closed before ``retain_after`` (µs).

    See the module docstring. ``merge_below=None`` means :data:`DEFAULT_MERGE_BELOW`.
    """
    merge_below = DEFAULT_MERGE_BELOW if merge_below is None else int(merge_below)
    engine._check_writable()
    with engine._wlock, no_index_publication(engine):
        engine._check_writable()
        if engine.path is None:
            return compact_in_memory(engine, retain_after)
        root = engine.path
        before = _disk_bytes(root)
        engine.checkpoint()
        assert engine._wal is not None
        t = engine.table
        snap = engine._snap
        n = snap.n
        body = dict(engine.manifest)
        segs: list[dict[str, Any]] = list(body["segments"])
        if sum(int(e["rows"]) for e in segs) != n:  # every row is in a segment right after a checkpoint
            return _full_compact(engine)
        drop = t.dead[:n].copy()
        if retain_after is not None:
            drop |= t.tx_to[:n] < retain_after
        starts = np.cumsum([0] + [int(e["rows"]) for e in segs])
        candidate = [
            int(e["rows"]) < merge_below or bool(drop[starts[i] : starts[i + 1]].any()) for i, e in enumerate(segs)
        ]
        # A lone small segment with nothing to drop gains nothing from a rewrite.
        runs = [
            (i, j) for i, j in _runs(candidate) if j - i > 1 or drop[starts[i] : starts[j]].any()
        ]
        if not runs:
            return CompactResult(n, n, 0, 0, before, before)
        tag = secrets.token_hex(4)
        new_segments: list[dict[str, Any]] = []
        kept = np.ones(n, bool)
        run_at = {i: j for i, j in runs}
        i = 0
        while i < len(segs):
            if i not in run_at:
                new_segments.append(segs[i])
                i += 1
                continue
            j = run_at[i]
            lo, hi = int(starts[i]), int(starts[j])
            kept[lo:hi] = False
            rows = np.arange(lo, hi)[~drop[lo:hi]]
            if len(rows):
                rel = f"segments/{snap.last_seq:020d}-m{tag}-{i:04d}.parquet"
                entry = write_table(root, rel, engine.hooks.segment_table(engine, lo, hi, only=rows), engine.codec,
                                    engine.store_id)
                entry.update(min_version=int(t.version_id[rows[0]]), max_version=int(t.version_id[rows[-1]]))
                new_segments.append(entry)
            i = j
        # Kept segments store tx_to as it was when they were written: carry every closing of their rows.
        closed = np.flatnonzero(kept & (t.tx_to[:n] != OPEN))
        closings: list[dict[str, Any]] = []
        if len(closed):
            rel = f"closings/{snap.last_seq:020d}-m{tag}.parquet"
            closings.append(
                write_table(root, rel, closings_table(t.version_id[closed], t.tx_to[closed]), engine.codec,
                            engine.store_id)
            )
        old_files = {e["file"] for e in segs + list(body["closings"])}
        body["segments"] = new_segments
        body["closings"] = closings
        body["compactions"] = int(body.get("compactions", 0)) + 1
        dropped = int(drop.sum())
        removed = 0
        if dropped:
            body["erased"] = []
            # Index files hold vectors of the dropped rows (removed atomically: see remove_all).
            removed += remove_index_files(engine)
        for old in engine._wal.rotate(snap.last_seq + 1):  # old WAL files may hold dropped rows
            old.unlink(missing_ok=True)
            removed += 1
        if dropped:
            engine.hooks.after_compaction(engine, table_replaced=False)
            _reload(engine, body)
        else:
            _reopen(engine, body)
        live = {e["file"] for e in new_segments + closings}
        for rel in old_files - live:
            (root / rel).unlink(missing_ok=True)
            removed += 1
        remove_reindex_staging(root)
        return CompactResult(n, engine._snap.n, dropped, removed, before, _disk_bytes(root))


def _full_compact(engine: Engine) -> CompactResult:
    from .compact import compact

    return compact(engine)


def compact_in_memory(engine: Engine, retain_after: int | None) -> CompactResult:
    """In-memory stores have no segments: purge erased rows and apply retention to the table."""
    t = engine.table
    n = engine._snap.n
    drop = t.dead[:n].copy()
    if retain_after is not None:
        drop |= t.tx_to[:n] < retain_after
    if not drop.any():
        return CompactResult(n, n, 0, 0, 0, 0)
    alive = np.flatnonzero(~drop)
    new = VersionTable(t.dim, capacity=len(alive) + 1024)
    if len(alive):
        new.append(t.batch_range(0, n).take(alive))
    with engine.generation_swap():  # readers overlapping the table swap retry
        engine.replace_table(new)
        engine.hooks.after_compaction(engine, table_replaced=True)
        _reload(engine, None)
    return CompactResult(n, new.n, n - new.n, 0, 0, 0)
