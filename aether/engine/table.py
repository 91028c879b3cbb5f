"""The in-memory version table: numpy columns for time and vectors, Arrow or lists for text.

Rows are appended in ``version_id`` order and never moved. Readers take a snapshot
(row count, last transaction) and read the arrays up to that row count without a lock:
a writer fills new rows completely before it publishes the new count, and the only
in-place change it makes (closing ``tx_to``) uses a transaction time newer than any
snapshot that could observe the row, so a reader always sees whole transactions.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage.rows import RowBatch, dumps_tag, np_array, row_schema, tags_array

#: At most this many bulk runs in ``_AtomRows`` before they are folded into its CSR arrays.
_MAX_RUNS = 4096
_TAIL_SEAL = 8192  # tail rows kept as Python lists before they are folded into an Arrow chunk


class _Tail:
    """The newest rows' text columns, as Python lists (cheap appends)."""

    __slots__ = ("atom_id", "content", "content_meta", "metadata", "modality", "subject", "tags")

    def __init__(self) -> None:
        self.atom_id: list[str] = []
        self.subject: list[str] = []
        self.modality: list[str] = []
        self.content: list[str] = []
        self.content_meta: list[str] = []
        self.tags: list[dict[str, Any]] = []
        self.metadata: list[str] = []

    def __len__(self) -> int:
        return len(self.atom_id)


#: The text columns kept per chunk, in the row schema's order.
_TEXT = ("atom_id", "subject", "modality", "content", "content_meta", "tags", "metadata")


def _tag_key(key: str, value: Any) -> tuple[str, str]:
    return key, dumps_tag(value)


class _AtomIndex:
    """``atom id -> code``, a dict over ``atom_ids`` built on first use.

    Opening a store with a million atoms need not hash a million strings into a dict before
    the first write or point lookup (searches never use it).
    """

    __slots__ = ("_arrow", "_d", "_ids", "_lock", "_scans")

    def __init__(self, ids: list[str]) -> None:
        self._ids = ids
        self._d: dict[str, int] | None = {}
        self._lock = threading.Lock()
        self._arrow: pa.Array | None = None  # the ids as Arrow while the dict is not built
        self._scans = 0

    def dict(self) -> dict[str, int]:
        d = self._d
        if d is None:
            with self._lock:
                if self._d is None:
                    self._d = dict(zip(self._ids, range(len(self._ids)), strict=True))
                    self._arrow = None
                d = self._d
        return d

    def reset(self, ids: pa.Array) -> None:
        """``atom_ids`` is exactly ``ids`` (codes in order), set in bulk: build the dict on demand."""
        self._d = None
        self._arrow = ids
        self._scans = 0

    def get(self, key: str, default: Any = None) -> Any:
        arrow = self._arrow
        if self._d is None and arrow is not None and self._scans < 16:
            # A few point lookups (open-time hooks, a first get) scan the Arrow ids instead of
            # hashing them all into a dict; repeated lookups build the dict.
            self._scans += 1
            if not isinstance(key, str):
                return default
            pos = pc.index(arrow, pa.scalar(key, pa.string())).as_py()
            return default if pos is None or pos < 0 else pos
        return self.dict().get(key, default)

    def __getitem__(self, key: str) -> int:
        return self.dict()[key]

    def __setitem__(self, key: str, code: int) -> None:
        self.dict()[key] = code

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None if isinstance(key, str) else key in self.dict()

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))  # ids are unique and in code order, like the dict's keys

    def keys(self) -> list[str]:
        return list(self._ids)

    def items(self) -> list[tuple[str, int]]:
        return list(zip(list(self._ids), range(len(self._ids)), strict=True))

    def update(self, pairs: Any) -> None:
        self.dict().update(pairs)


class _AtomRows:
    """Rows of each atom code, as a read-only mapping ``code -> ascending row list``.

    Built lazily: rows bulk-loaded from segments are indexed by one stable argsort of the
    code column (CSR arrays) on first use, not by a million small Python lists at open;
    rows appended by commits afterwards go to a small dict until it is folded in.
    """

    __slots__ = ("_csr_n", "_extra", "_extra_rows", "_lock", "_order", "_run_codes", "_runs", "_starts", "_table")

    def __init__(self, table: VersionTable) -> None:
        self._table = table
        self._csr_n = 0  # rows [0, _csr_n) are in the CSR arrays
        self._order = np.zeros(0, np.int64)
        self._starts = np.zeros(1, np.int64)
        self._extra: dict[int, list[int]] = {}
        self._extra_rows = 0
        # Bulk batches of brand-new atoms: codes [c, c + m) are rows [r, r + m), one (c, m, r) per batch
        # (no per-row Python); ``_run_codes`` holds each run's first code, for bisection.
        self._runs: list[tuple[int, int, int]] = []
        self._run_codes: list[int] = []
        self._lock = threading.Lock()

    def _build(self) -> None:
        t = self._table
        n = t.n
        codes = t.atom_code[:n]
        self._order = np.argsort(codes, kind="stable").astype(np.int64)
        counts = np.bincount(codes, minlength=len(t.atom_ids)) if n else np.zeros(len(t.atom_ids), np.int64)
        starts = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        self._starts = starts
        self._csr_n = n
        self._extra = {}
        self._extra_rows = 0
        self._runs = []
        self._run_codes = []

    def stale(self) -> None:
        """Rows were bulk-appended without per-row bookkeeping: rebuild on next use."""
        with self._lock:
            self._csr_n = -1

    def add(self, codes: np.ndarray, start: int, *, fresh: bool = False) -> None:
        """Record rows ``start, start+1, ...`` with these codes (commits; the table's ``n`` already counts them).

        ``fresh``: the codes were just assigned, one per row in increasing order (new atoms only).
        """
        with self._lock:
            if self._csr_n < 0:
                return  # rebuilt from the code column (which has these rows) on next use
            extra = self._extra
            skip = max(0, self._csr_n - start)  # a reader's rebuild may already have covered them
            m = len(codes)
            if (
                fresh and skip == 0 and m >= 64 and len(self._runs) < _MAX_RUNS
                and int(codes[-1]) - int(codes[0]) == m - 1
            ):
                self._runs.append((int(codes[0]), m, start))
                self._run_codes.append(int(codes[0]))
                return
            for i, c in enumerate(codes[skip:].tolist(), start + skip):
                lst = extra.get(c)
                if lst is None:
                    extra[c] = [i]
                else:
                    lst.append(i)
            self._extra_rows += len(codes) - skip
            if self._extra_rows > max(1 << 17, self._csr_n):  # fold into the CSR arrays: keeps the dict small
                self._csr_n = -1

    def get(self, code: int | None, default: Any = None) -> Any:
        if code is None:
            return default
        with self._lock:
            if self._csr_n < 0:
                self._build()
            order, starts, more = self._order, self._starts, self._extra.get(int(code))
            more = list(more) if more else None
            if self._runs:
                j = bisect.bisect_right(self._run_codes, int(code)) - 1
                if j >= 0:
                    c0, m, r0 = self._runs[j]
                    if int(code) < c0 + m:  # the atom was new in a bulk batch: that row, then any later ones
                        more = [r0 + int(code) - c0] + (more or [])
        out: list[int] = []
        c = int(code)
        if 0 <= c < len(starts) - 1:
            a, b = starts[c], starts[c + 1]
            if b > a:
                out = order[a:b].tolist()
        if more:
            out = out + more
        return out if out else default

    def __getitem__(self, code: int) -> list[int]:
        rows = self.get(code)
        if rows is None:
            raise KeyError(code)
        result: list[int] = rows
        return result

    def items(self) -> list[tuple[int, list[int]]]:
        """Every ``(code, rows)`` pair with rows (a full walk: for checks and tools, not hot paths)."""
        out = []
        for c in range(len(self._table.atom_ids)):
            rows = self.get(c)
            if rows is not None:
                out.append((c, rows))
        return out

    def __contains__(self, code: object) -> bool:
        return isinstance(code, (int, np.integer)) and self.get(int(code)) is not None


def _tail_arrow(t: _Tail, a: int = 0, b: int | None = None) -> pa.Table:
    """Text columns of tail rows ``[a, b)`` as an Arrow table (the chunk schema)."""
    sl = slice(a, b)
    return pa.table(
        {
            "atom_id": pa.array(t.atom_id[sl], pa.string()),
            "subject": pa.array(t.subject[sl], pa.string()),
            "modality": pa.array(t.modality[sl], pa.string()),
            "content": pa.array(t.content[sl], pa.string()),
            "content_meta": pa.array(t.content_meta[sl], pa.string()),
            "tags": tags_array(t.tags[sl]),
            "metadata": pa.array(t.metadata[sl], pa.string()),
        }
    )


#: Commits of at least this many rows keep the WAL's Arrow table as their text chunk (no re-encoding).
_ARROW_CHUNK_MIN = 512


class _VectorLoader:
    """Copies segment vectors into a table on a background thread, newest rows first, so that an
    open returns before ~1.5 GB per million 384-d rows is decoded and faulted into memory.

    A waiter never depends on the thread alone: if it never started, died, or does not exist in
    this process (after a fork), the waiter runs the remaining jobs itself.
    """

    def __init__(self, table: VersionTable, jobs: list[tuple[int, int, Callable[[], pa.ChunkedArray]]]) -> None:
        self._table = table
        self._jobs = sorted(jobs, key=lambda j: j[0], reverse=True)
        self._next = 0  # jobs before this index are done
        self.end = max(e for _, e, _ in jobs)  # rows [ready_from, end) are in place
        self.ready_from = self.end
        self.error: BaseException | None = None
        self._stopped = False
        self._init_sync()
        _LOADERS.add(self)

    def _init_sync(self) -> None:
        self._cond = threading.Condition()
        self._runner = threading.Lock()  # held by whoever is running jobs
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            if self._thread is not None or self._next >= len(self._jobs):
                return
            th = threading.Thread(target=self._run, name="aether-vectors", daemon=True)
            try:
                th.start()
            except RuntimeError:  # no thread available: waiters run the jobs themselves
                return
            self._thread = th

    def stop(self) -> None:
        """Stop after the current job (the store closed); a later waiter finishes the rest."""
        self._stopped = True

    def _run(self, *, inline: bool = False) -> None:
        with self._runner:
            while True:
                with self._cond:
                    if self._next >= len(self._jobs) or self.error is not None or (self._stopped and not inline):
                        break
                    start, _, fetch = self._jobs[self._next]
                try:
                    self._table._copy_vectors(fetch(), start)
                except BaseException as exc:  # handed to every reader that waits for these rows
                    with self._cond:
                        self.error = exc
                        self._cond.notify_all()
                    return
                with self._cond:
                    self._next += 1
                    # rows segments copied at open (no job) are in place already
                    self.ready_from = 0 if self._next >= len(self._jobs) else start
                    self._cond.notify_all()
            if self._next >= len(self._jobs):
                self._jobs = []  # lets go of the segments' memory maps

    def wait(self, start: int) -> None:
        self.start()
        while True:
            with self._cond:
                if self.ready_from <= start:
                    return
                if self.error is not None:
                    raise self.error
                th = self._thread
                if th is not None and th.is_alive():
                    self._cond.wait(0.5)
                    continue
            if self._runner.acquire(blocking=False):  # nobody is loading: do it here
                self._runner.release()
                self._run(inline=True)
            else:
                with self._cond:
                    self._cond.wait(0.05)

    def _after_fork(self) -> None:
        self._init_sync()


_LOADERS: weakref.WeakSet[_VectorLoader] = weakref.WeakSet()


def _loaders_after_fork() -> None:
    for ld in list(_LOADERS):
        ld._after_fork()


if hasattr(os, "register_at_fork"):  # the child has no loader thread, and locks copied mid-use
    os.register_at_fork(after_in_child=_loaders_after_fork)


class VersionTable:
    """All version rows of a store, in memory."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.n = 0
        cap = max(capacity, 16)
        self.version_id = np.zeros(cap, np.int64)
        self.valid_from = np.zeros(cap, np.int64)
        self.valid_to = np.zeros(cap, np.int64)
        self.tx_from = np.zeros(cap, np.int64)
        self.tx_to = np.zeros(cap, np.int64)
        self.quality = np.zeros(cap, np.float64)
        self.atom_code = np.zeros(cap, np.int32)
        self.dead = np.zeros(cap, np.bool_)
        self._vectors = np.zeros((cap, dim), np.float32)
        self._loader: _VectorLoader | None = None
        self.atom_ids: list[str] = []
        self.atom_index = _AtomIndex(self.atom_ids)
        self.atom_rows = _AtomRows(self)
        # Tag postings, built per (key, JSON value) pair on first query and extended as rows arrive:
        # pair -> (rows scanned, matching rows).
        self._postings: dict[tuple[str, str], tuple[int, np.ndarray]] = {}
        self._plock = threading.Lock()
        self._tx_sorted_n = 0  # rows [0, _tx_sorted_n) were checked to be in tx_from order ...
        self._tx_unsorted = False  # ... and this says whether that check failed
        self._chunk_starts: list[int] = []
        self._chunks: list[pa.Table | _Tail] = []
        self._tail: _Tail | None = None
        self._uncoded: list[tuple[int, int, pa.ChunkedArray]] = []
        self._readers: dict[int, _ChunkReader] = {}  # row readers of Arrow text chunks, by chunk index

    # -- growth ------------------------------------------------------------------------
    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more rows (commits call it before their WAL write: growing may wait
        for a background vector load, and its failure must fail the commit before anything is durable)."""
        self._reserve(extra)

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        cap = len(self.version_id)
        if need <= cap:
            return
        self.vectors  # noqa: B018  # every row in place (or its load error raised) before anything changes
        new_cap = max(need, cap * 2)
        for name in ("version_id", "valid_from", "valid_to", "tx_from", "tx_to", "quality", "atom_code", "dead"):
            old = getattr(self, name)
            arr = np.zeros(new_cap, old.dtype)
            arr[: self.n] = old[: self.n]
            setattr(self, name, arr)
        vec = np.zeros((new_cap, self.dim), np.float32)
        vec[: self.n] = self.vectors[: self.n]  # (waits for a background load: every row is copied)
        self._vectors = vec

    def _code(self, atom_id: str) -> int:
        code = self.atom_index.get(atom_id)
        if code is None:
            code = len(self.atom_ids)
            self.atom_ids.append(atom_id)
            self.atom_index[atom_id] = code
        return code

    def _codes(self, ids: list[str], *, new: bool = False) -> tuple[np.ndarray, bool]:
        """Atom codes of ``ids``, assigning new codes in order of first appearance; and whether every
        id was new and distinct (codes ``base, base + 1, ...``). ``new``: the caller checked that already."""
        index = self.atom_index.dict()
        base = len(self.atom_ids)
        if new or not index:  # new ids only, or first rows: build the id index in C
            uniq = ids if new else list(dict.fromkeys(ids))
            self.atom_ids.extend(uniq)
            index.update(zip(uniq, range(base, base + len(uniq)), strict=True))
            if len(uniq) == len(ids):
                return np.arange(base, base + len(ids), dtype=np.int32), True
            return np.fromiter((index[a] for a in ids), np.int32, count=len(ids)), False
        get = index.get
        found = [get(a) for a in ids]
        fresh = False
        if None in found:  # new ids: codes assigned in bulk, in order of first appearance
            new_ids = list(dict.fromkeys(a for a, c in zip(ids, found, strict=True) if c is None))
            self.atom_ids.extend(new_ids)
            index.update(zip(new_ids, range(base, base + len(new_ids)), strict=True))
            fresh = len(new_ids) == len(ids)
            found = [get(a) for a in ids]
        return np.asarray(found, np.int32), fresh

    # -- appends -----------------------------------------------------------------------
    def append(self, rows: RowBatch) -> None:
        """Append rows (already version-numbered); text goes to a list tail, or stays in Arrow for big batches."""
        m = len(rows)
        if m == 0:
            return
        self._reserve(m)
        s, e = self.n, self.n + m
        self.version_id[s:e] = rows.version_id
        self.valid_from[s:e] = rows.valid_from
        self.valid_to[s:e] = rows.valid_to
        self.tx_from[s:e] = rows.tx_from
        self.tx_to[s:e] = rows.tx_to
        self.quality[s:e] = rows.quality
        self._vectors[s:e] = rows.vectors  # past the rows a background load writes: no wait
        self.dead[s:e] = False
        codes, fresh = self._codes(rows.atom_id, new=bool(rows.extra.get("new_atoms")))
        self.atom_code[s:e] = codes
        arrow = rows.extra.get("arrow")  # the WAL encoder's plain Arrow table of these very rows
        if m >= _ARROW_CHUNK_MIN and isinstance(arrow, pa.Table) and arrow.num_rows == m:
            self._seal_tail()
            self._chunk_starts.append(s)
            self._chunks.append(arrow.select(list(_TEXT)))
            self.n = e
            self.atom_rows.add(codes, s, fresh=fresh)
            return
        if self._tail is None or len(self._tail) >= _TAIL_SEAL:
            self._seal_tail()
            self._tail = _Tail()
            self._chunk_starts.append(s)
            self._chunks.append(self._tail)
        tail = self._tail
        tail.atom_id.extend(rows.atom_id)
        tail.subject.extend(rows.subject)
        tail.modality.extend(rows.modality)
        tail.content.extend(rows.content)
        tail.content_meta.extend(rows.content_meta)
        tail.tags.extend(rows.tags)
        tail.metadata.extend(rows.metadata)
        self.n = e
        self.atom_rows.add(codes, s, fresh=fresh)

    def _seal_tail(self) -> None:
        """Fold the list tail into an Arrow chunk (compact, and fast for bulk reads)."""
        if self._tail is None or not len(self._tail):
            return
        idx = self._chunks.index(self._tail)
        self._chunks[idx] = _tail_arrow(self._tail)
        self._tail = None

    def append_arrow(self, table: pa.Table, *, defer_codes: bool = False) -> None:
        """Bulk-append a loaded segment, keeping its text columns in Arrow form (no per-row Python).

        With ``defer_codes`` the atom codes are left for :meth:`finish_codes` (one pass over all
        segments of an open instead of a Python dict lookup per row and segment).
        """
        m = table.num_rows
        if m == 0:
            return
        self._seal_tail()
        self._reserve(m)
        s, e = self.n, self.n + m

        def ints(name: str) -> np.ndarray:
            return np.asarray(table.column(name).to_numpy(), dtype=np.int64)

        self.version_id[s:e] = ints("version_id")
        self.valid_from[s:e] = ints("valid_from")
        self.valid_to[s:e] = ints("valid_to")
        self.tx_from[s:e] = ints("tx_from")
        self.tx_to[s:e] = ints("tx_to")
        self.quality[s:e] = table.column("quality").to_numpy()
        if "vector" in table.schema.names:  # else: see defer_vectors
            self._copy_vectors(table.column("vector"), s)
        self.dead[s:e] = False
        text = table.select(list(_TEXT))
        self._chunk_starts.append(s)
        self._chunks.append(text)
        if defer_codes:
            self._uncoded.append((s, e, text.column("atom_id")))
            self.n = e
            self.atom_rows.stale()
            return
        # Atom codes: dictionary-encode in Arrow, then map the unique ids.
        enc = table.column("atom_id").combine_chunks().dictionary_encode()
        uniq = enc.dictionary.to_pylist()
        local = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        mapping = self._codes(uniq)[0] if uniq else np.zeros(0, np.int32)
        self.atom_code[s:e] = mapping[local] if len(uniq) else np.zeros(m, np.int32)
        self.n = e
        self.atom_rows.stale()

    def _copy_vectors(self, col: pa.ChunkedArray, pos: int) -> None:
        for chunk in col.chunks:  # chunk by chunk: no combined copy of all vectors
            k = len(chunk)
            if k:
                flat = chunk.values.to_numpy(zero_copy_only=False)
                off = chunk.offset * self.dim
                self._vectors[pos : pos + k] = flat[off : off + k * self.dim].reshape(k, self.dim)
            pos += k

    # -- vectors, possibly still loading ---------------------------------------------------
    @property
    def vectors(self) -> np.ndarray:
        """The ``(capacity, dim)`` vector column; waits for a background load of the store's rows to finish."""
        ld = self._loader
        if ld is not None:
            ld.wait(0)
            self._loader = None
        return self._vectors

    def vectors_from(self, start: int) -> np.ndarray:
        """The vector column, once rows ``start`` onwards are in place (the tail need not wait for old rows)."""
        ld = self._loader
        if ld is not None and start < ld.end:
            ld.wait(start)
        return self._vectors

    def defer_vectors(self, jobs: list[tuple[int, int, Callable[[], pa.ChunkedArray]]]) -> None:
        """Load the vectors of rows appended without them (``append_arrow`` of a table with no ``vector``
        column) on a background thread, newest rows first; ``jobs`` are ``(start, end, fetch)`` and tile
        ``[0, end)``. Until then :attr:`vectors` waits, and :meth:`vectors_from` waits only for its rows.
        The thread starts with :meth:`start_loading` or the first wait."""
        if jobs:
            self._loader = _VectorLoader(self, jobs)

    def start_loading(self) -> None:
        """Start the background load of :meth:`defer_vectors` (any reader that needs it starts it too)."""
        if self._loader is not None:
            self._loader.start()

    def stop_loading(self) -> None:
        """The store is closing: stop the background load after its current segment."""
        if self._loader is not None:
            self._loader.stop()

    def finish_codes(self) -> None:
        """Assign the atom codes of rows appended with ``defer_codes`` (all at once, hashed in Arrow)."""
        pending, self._uncoded = self._uncoded, []
        if not pending:
            return
        if self.atom_index:  # codes exist already: map segment by segment
            for s, e, col in pending:
                enc = col.combine_chunks().dictionary_encode()
                uniq = enc.dictionary.to_pylist()
                local = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
                self.atom_code[s:e] = self._codes(uniq)[0][local] if uniq else 0
            self.atom_rows.stale()
            return
        allids = pa.chunked_array([c for _, _, col in pending for c in col.chunks], pa.string()).combine_chunks()
        enc = allids.dictionary_encode()  # one hash pass: unique ids (first-appearance order) and codes
        self.atom_ids.extend(enc.dictionary.to_pylist())
        self.atom_index.reset(enc.dictionary)
        flat = np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int32)
        pos = 0
        for s, e, _ in pending:
            self.atom_code[s:e] = flat[pos : pos + (e - s)]
            pos += e - s
        self.atom_rows.stale()

    # -- reads -------------------------------------------------------------------------
    def tx_prefix(self, as_of: int, n: int) -> int | None:
        """The number of rows among ``[0, n)`` committed at or before ``as_of``, which are then rows
        ``[0, r)``: commits append rows in transaction order. ``None`` if ``tx_from`` is not
        non-decreasing over the rows (checked once per row, incrementally)."""
        with self._plock:
            done = self._tx_sorted_n
            if done < n and not self._tx_unsorted:
                seg = self.tx_from[max(0, done - 1) : n]
                self._tx_unsorted = bool((seg[1:] < seg[:-1]).any())
                self._tx_sorted_n = n
            if self._tx_unsorted:
                return None
        return int(np.searchsorted(self.tx_from[:n], as_of, side="right"))

    def row_index(self, version_ids: np.ndarray) -> np.ndarray:
        """Row positions of version ids (ids are ascending with rows); ``KeyError`` if one is unknown."""
        pos, ok = self._find_versions(version_ids)
        if not bool(np.all(ok)):
            raise KeyError("unknown version id")
        return pos

    def rows_present(self, version_ids: np.ndarray) -> np.ndarray:
        """Row positions of those of ``version_ids`` that the table holds (compaction may have dropped some)."""
        if self.n == 0 or len(version_ids) == 0:
            return np.zeros(0, np.int64)
        pos, ok = self._find_versions(version_ids)
        return np.asarray(pos[ok], np.int64)

    def _find_versions(self, version_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self.version_id[: self.n], version_ids)
        ok = (pos < self.n) & (self.version_id[np.minimum(pos, max(self.n - 1, 0))] == version_ids)
        return pos, ok

    def text(self, row: int) -> dict[str, Any]:
        """The text columns of one row, decoded."""
        c = bisect.bisect_right(self._chunk_starts, row) - 1
        chunk = self._chunks[c]
        i = row - self._chunk_starts[c]
        if isinstance(chunk, _Tail):
            return {
                "atom_id": chunk.atom_id[i],
                "subject": chunk.subject[i],
                "modality": chunk.modality[i],
                "content": chunk.content[i],
                "content_meta": json.loads(chunk.content_meta[i]),
                "tags": dict(chunk.tags[i]),
                "metadata": json.loads(chunk.metadata[i]),
            }
        rec = chunk.slice(i, 1).to_pylist()[0]
        return {
            "atom_id": rec["atom_id"],
            "subject": rec["subject"],
            "modality": rec["modality"],
            "content": rec["content"],
            "content_meta": json.loads(rec["content_meta"]),
            "tags": {k: json.loads(v) for k, v in (rec["tags"] or [])},
            "metadata": json.loads(rec["metadata"]),
        }

    def text_columns(self, rows: Sequence[int] | np.ndarray) -> dict[str, list[Any]]:
        """The text columns of ``rows`` (any order, repeats allowed), decoded, one list per column.

        Read the way a result set needs them: one read per chunk the rows fall in (a per-row Arrow
        slice costs ~13 us a row; see :class:`_ChunkReader`), tag maps decoded to dicts. ``content_meta`` and
        ``metadata`` stay JSON text: :func:`loads_object` parses them (``"{}"`` without a parser).
        """
        pos = np.asarray(rows, np.int64)
        m = len(pos)
        if not m:
            return {k: [] for k in _TEXT}
        starts = self._chunk_starts
        # A result set's rows mostly lie in one chunk (one segment, or the tail): read them there
        # without the per-chunk grouping and scattering below (~40 us of a 10-row read).
        plist = pos.tolist()
        lo, hi = min(plist), max(plist)
        c = bisect.bisect_right(starts, lo) - 1
        if c >= 0 and (c + 1 == len(starts) or hi < starts[c + 1]):
            return self._chunk_rows(c, plist)
        at_chunk: dict[int, list[int]] = {}  # chunk -> positions in rows
        for j, p in enumerate(plist):
            at_chunk.setdefault(bisect.bisect_right(starts, p) - 1, []).append(j)
        parts: list[dict[str, list[Any]]] = []
        order: list[int] = []  # the positions in rows of the chunks' values, concatenated
        for c, at in at_chunk.items():
            parts.append(self._chunk_rows(c, [plist[j] for j in at]))
            order += at
        inv = [0] * m
        for i, j in enumerate(order):
            inv[j] = i
        take = operator.itemgetter(*inv)  # m >= 2 here (one row lies in one chunk): returns a tuple
        return {k: list(take(list(itertools.chain.from_iterable(g[k] for g in parts)))) for k in _TEXT}

    def _chunk_rows(self, c: int, plist: list[int]) -> dict[str, list[Any]]:
        """:meth:`text_columns` of table rows ``plist``, all in chunk ``c``."""
        base = self._chunk_starts[c]
        local = [p - base for p in plist] if base else plist
        chunk = self._chunks[c]
        if isinstance(chunk, _Tail):
            got: dict[str, list[Any]] = {}
            for k in _TEXT:
                src = getattr(chunk, k)
                # tag dicts copied: callers own the dicts they get
                got[k] = [dict(src[i]) for i in local] if k == "tags" else [src[i] for i in local]
            return got
        got = self._reader(c, chunk).rows(local)
        got["tags"] = _decode_tags(got["tags"])
        return got

    def _reader(self, c: int, chunk: pa.Table) -> _ChunkReader:
        """The (cached) row reader of Arrow text chunk ``c``; chunks never change in place, but a sealed
        list tail replaces its chunk, so the cache entry is checked against the chunk itself."""
        got = self._readers.get(c)
        if got is None or got.table is not chunk:
            got = _ChunkReader(chunk)
            self._readers[c] = got
        return got

    def _chunk_spans(self, start: int, end: int) -> Iterator[tuple[pa.Table | _Tail, int, int, int]]:
        """``(chunk, lo, a, b)`` for each text chunk holding rows of ``[start, end)``: its rows ``[a, b)``
        are table rows ``lo, lo + 1, ...``."""
        for c, cstart in enumerate(list(self._chunk_starts)):
            if cstart >= end:
                break  # chunks are in row order; one a writer is adding now lies past any reader's end
            chunk = self._chunks[c]
            clen = len(chunk) if isinstance(chunk, _Tail) else chunk.num_rows
            lo, hi = max(start, cstart), min(end, cstart + clen)
            if lo < hi:
                yield chunk, lo, lo - cstart, hi - cstart

    def column_slices(self, name: str, start: int, end: int) -> Iterator[tuple[int, Any]]:
        """``(first_row, values)`` for each text chunk holding rows of ``[start, end)`` of text column
        ``name``: a list for the list tail, an Arrow column slice for a sealed chunk (a scan converts
        or compares once per chunk, not per row)."""
        for chunk, lo, a, b in self._chunk_spans(start, end):
            if isinstance(chunk, _Tail):
                yield lo, getattr(chunk, name)[a:b]
            else:
                yield lo, chunk.column(name).slice(a, b - a)

    def batch_range(self, start: int, end: int) -> RowBatch:
        """Rows ``[start, end)`` as a ``RowBatch``, read chunk by chunk (columnar, no per-row lookups)."""
        cols: dict[str, list[Any]] = {k: [] for k in _Tail.__slots__}
        for chunk, _, a, b in self._chunk_spans(start, end):
            if isinstance(chunk, _Tail):
                for k in _Tail.__slots__:
                    cols[k].extend(getattr(chunk, k)[a:b])
            else:
                part = chunk.slice(a, b - a)
                for k in _Tail.__slots__:
                    if k == "tags":
                        cols[k].extend(
                            {key: json.loads(v) for key, v in (entry or [])} for entry in part.column(k).to_pylist()
                        )
                    else:
                        cols[k].extend(part.column(k).to_pylist())
        sl = slice(start, end)
        return RowBatch(
            version_id=self.version_id[sl].copy(),
            atom_id=cols["atom_id"],
            subject=cols["subject"],
            modality=cols["modality"],
            content=cols["content"],
            content_meta=cols["content_meta"],
            tags=cols["tags"],
            metadata=cols["metadata"],
            quality=self.quality[sl].copy(),
            valid_from=self.valid_from[sl].copy(),
            valid_to=self.valid_to[sl].copy(),
            tx_from=self.tx_from[sl].copy(),
            tx_to=self.tx_to[sl].copy(),
            vectors=self.vectors_from(start)[sl].copy(),
        )

    def _posting(self, key: tuple[str, str], n: int) -> np.ndarray:
        """Rows (of at least the first ``n``) whose tags hold ``key`` (a (name, JSON value) pair).

        Scanned columnar per chunk on first use and cached; later calls scan only newer rows.
        Chunks are never changed in place (a sealed tail has the same content), so cached rows stay valid.
        """
        with self._plock:
            done, rows = self._postings.get(key, (0, np.zeros(0, np.int64)))
            if done >= n:
                return rows
            name, want = key
            found = [rows]
            for chunk, lo, a, b in self._chunk_spans(done, n):
                if isinstance(chunk, _Tail):
                    hit = [
                        i
                        for i, d in enumerate(chunk.tags[a:b], lo)
                        if name in d and _same_tag(d[name], want)
                    ]
                    found.append(np.asarray(hit, np.int64))
                else:
                    col = chunk.column("tags").slice(a, b - a).combine_chunks()
                    if not len(col.keys):
                        continue
                    entry = pc.and_(pc.equal(col.keys, name), pc.equal(col.items, want))
                    ent = np.flatnonzero(np.asarray(entry.to_numpy(zero_copy_only=False), np.bool_))
                    if len(ent):
                        offsets = np.asarray(col.offsets.to_numpy(), np.int64)
                        owner = np.searchsorted(offsets, ent, side="right") - 1
                        found.append(np.unique(owner).astype(np.int64) + lo)
            rows = np.concatenate(found) if len(found) > 1 else rows
            self._postings[key] = (n, rows)
            return rows

    def tag_mask(self, tags: dict[str, Any], n: int) -> np.ndarray:
        """Rows (of the first ``n``) whose tags contain every ``key == value`` pair."""
        mask = np.ones(n, np.bool_)
        for k, v in tags.items():
            rows = self._posting(_tag_key(k, v), n)
            if not len(rows):
                return np.zeros(n, np.bool_)
            sel = np.zeros(n, np.bool_)
            sel[rows[rows < n]] = True
            mask &= sel
        return mask

    def arrow_range(self, start: int, end: int) -> pa.Table:
        """Rows ``[start, end)`` as a row-schema Arrow table (text from the chunks, no per-row Python
        for Arrow chunks; times, quality and vectors from the live columns, so closings are included)."""
        parts: list[pa.Table] = []
        for chunk, _, a, b in self._chunk_spans(start, end):
            part = _tail_arrow(chunk, a, b) if isinstance(chunk, _Tail) else chunk.slice(a, b - a).select(list(_TEXT))
            parts.append(part.cast(_TEXT_SCHEMA) if part.schema != _TEXT_SCHEMA else part)
        text = pa.concat_tables(parts) if parts else _TEXT_SCHEMA.empty_table()
        sl = slice(start, end)
        m = end - start
        flat = np_array(self.vectors_from(start)[sl].reshape(-1), pa.float32())
        cols = {name: text.column(name) for name in _TEXT}
        cols.update(
            version_id=np_array(self.version_id[sl], pa.int64()),
            quality=np_array(self.quality[sl], pa.float64()),
            valid_from=np_array(self.valid_from[sl], pa.int64()),
            valid_to=np_array(self.valid_to[sl], pa.int64()),
            tx_from=np_array(self.tx_from[sl], pa.int64()),
            tx_to=np_array(self.tx_to[sl], pa.int64()),
            vector=pa.FixedSizeListArray.from_arrays(flat, self.dim)
            if m
            else pa.array([], pa.list_(pa.float32(), self.dim)),
        )
        schema = row_schema(self.dim)
        return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


class _Strings:
    """Zero-copy reads of a string array without nulls: its offsets as numpy, its bytes as a memoryview."""

    __slots__ = ("data", "offs")

    def __init__(self, arr: pa.Array) -> None:
        bufs = arr.buffers()
        wide = pa.types.is_large_string(arr.type)
        offs = np.frombuffer(bufs[1], np.int64 if wide else np.int32)
        self.offs = offs[arr.offset : arr.offset + len(arr) + 1]
        self.data = memoryview(bufs[2]) if bufs[2] is not None else memoryview(b"")

    def get(self, idx: list[int]) -> list[str]:
        o, d = self.offs, self.data
        return [str(d[o[i] : o[i + 1]], "utf-8") for i in idx]

    def constant(self) -> str | None:
        """The value every row holds, or ``None`` if they differ (or there are none).

        Checked once per chunk (vectorised, O(rows)): a column such as ``modality``, ``subject``
        or ``content_meta`` often holds one value everywhere, and is then read without per-row work.
        Two sampled rows reject a varying column before any full pass.
        """
        o, d = self.offs, self.data
        n = len(o) - 1
        if n <= 0:
            return None
        a0, a1 = int(o[0]), int(o[1])
        width = a1 - a0
        if width > 256 or int(o[-1]) - a0 != n * width:
            return None
        first = bytes(d[a0:a1])
        for i in (n - 1, n // 2):
            if bytes(d[int(o[i]) : int(o[i + 1])]) != first:
                return None
        buf = np.frombuffer(d, np.uint8, count=n * width, offset=a0).reshape(n, width) if width else None
        step = max(1, (1 << 22) // max(width, 8))  # checked in blocks: a few MiB of temporaries at most
        for i in range(0, n, step):
            if not (np.diff(o[i : i + step + 1]) == width).all():
                return None
            if buf is not None and not (buf[i : i + step] == buf[0]).all():
                return None
        return str(first, "utf-8")


class _Column:
    """Value reads from one inner chunk of a text column (strings, or a tag map of string pairs)."""

    __slots__ = ("arr", "const", "items", "keys", "nulls", "offs", "strings")

    def __init__(self, arr: pa.Array) -> None:
        self.arr = arr
        self.strings = self.keys = self.items = None
        self.offs: np.ndarray | None = None
        self.nulls: np.ndarray | None = None
        #: ``(value,)`` when every row holds ``value`` (a string; for a map ``()``: every entry
        #: empty, or ``None``: every entry null), else ``None``.
        self.const: tuple[Any] | None = None
        if isinstance(arr, pa.MapArray):
            if arr.null_count:
                self.nulls = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), np.bool_)
            keys, items = arr.keys, arr.items
            if keys.null_count == 0 and items.null_count == 0 and pa.types.is_string(keys.type) and (
                pa.types.is_string(items.type)
            ):
                self.offs = arr.offsets.to_numpy(zero_copy_only=False)  # of this slice, into the unsliced children
                self.keys, self.items = _Strings(keys), _Strings(items)
                if len(arr) and self.offs[-1] == self.offs[0]:  # no entry has a pair
                    if arr.null_count == len(arr):
                        self.const = (None,)
                    elif not arr.null_count:
                        self.const = ((),)
        elif arr.null_count == 0 and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            self.strings = _Strings(arr)
            value = self.strings.constant()
            if value is not None:
                self.const = (value,)

    def get(self, idx: list[int]) -> list[Any]:
        """Python values of rows ``idx`` (a map as its ``(key, value)`` pairs, a null map as ``None``)."""
        if self.const is not None:
            v = self.const[0]
            return [[] for _ in idx] if v == () else [v] * len(idx)
        if self.strings is not None:
            return self.strings.get(idx)
        if self.keys is not None and self.items is not None and self.offs is not None:
            o = self.offs
            ko, kd, vo, vd = self.keys.offs, self.keys.data, self.items.offs, self.items.data
            out: list[Any] = []
            for i in idx:
                a, b = o[i : i + 2].tolist()
                if b == a:
                    out.append(None if self.nulls is not None and self.nulls[i] else [])
                    continue
                kk, vv = ko[a : b + 1].tolist(), vo[a : b + 1].tolist()
                out.append([(str(kd[kk[j] : kk[j + 1]], "utf-8"), str(vd[vv[j] : vv[j + 1]], "utf-8"))
                            for j in range(b - a)])
            return out
        return [self.arr[i].as_py() for i in idx]


class _ChunkReader:
    """Row reads from an Arrow text chunk: per column, its inner chunks (Parquet row groups) and their starts.

    ``Table.take`` concatenates every inner chunk first (12 ms for 10 rows of a 150k-row segment of
    three row groups) and pyarrow's per-call wrappers cost microseconds each; built once per chunk,
    this reads 10 rows of 7 columns in ~20 us.
    """

    __slots__ = ("bounds", "cols", "consts", "same", "table")

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.cols: dict[str, tuple[np.ndarray, list[_Column]]] = {}
        self.bounds: dict[str, list[int]] = {}  # each column's inner chunk starts, for bisection
        for name in _TEXT:
            col = table.column(name)
            lens = [len(c) for c in col.chunks]
            starts = np.zeros(len(lens) + 1, np.int64)
            np.cumsum(lens, out=starts[1:])
            self.cols[name] = (starts, [_Column(c) for c in col.chunks])
            self.bounds[name] = starts[:-1].tolist()
        first = self.cols[_TEXT[0]][0]
        self.same = all(np.array_equal(st, first) for st, _ in self.cols.values())  # one row-group layout
        #: ``(value,)`` per column whose every inner chunk holds that one value (``_Column.const``).
        self.consts: dict[str, tuple[Any]] = {}
        for name, (_, parts) in self.cols.items():
            cs = [p.const for p in parts if len(p.arr)]  # an empty row group holds no value
            if cs and all(c is not None and c == cs[0] and type(c[0]) is type(cs[0][0]) for c in cs):
                self.consts[name] = cs[0]  # type: ignore[assignment]

    def rows(self, local: list[int]) -> dict[str, list[Any]]:
        """Every text column's values at chunk rows ``local``."""
        consts = self.consts
        if not self.same:
            return {name: self._get(name, local, self._groups(name, local)) for name in _TEXT}
        groups = self._groups(_TEXT[0], local) if len(consts) < len(_TEXT) else []
        out: dict[str, list[Any]] = {}
        for name in _TEXT:
            c = consts.get(name)
            if c is None:
                out[name] = self._get(name, local, groups)
            else:  # one value in every row group: no per-row reads
                v = c[0]
                out[name] = [[] for _ in local] if v == () else [v] * len(local)
        return out

    def _groups(self, name: str, local: list[int]) -> list[tuple[int, list[int], list[int]]]:
        """``(inner chunk, positions in local, rows in that chunk)`` for each inner chunk holding rows."""
        starts, parts = self.cols[name]
        if len(parts) == 1:
            return [(0, list(range(len(local))), local)]
        bounds = self.bounds[name]
        j = bisect.bisect_right(bounds, min(local)) - 1
        if j + 1 == len(parts) or max(local) < bounds[j + 1]:  # all in one row group
            base = bounds[j]
            return [(j, list(range(len(local))), [i - base for i in local] if base else local)]
        where = (np.searchsorted(starts, local, side="right") - 1).tolist()
        out = []
        for j in sorted(set(where)):
            at = [i for i, w in enumerate(where) if w == j]
            base = int(starts[j])
            out.append((j, at, [local[i] - base for i in at]))
        return out

    def _get(self, name: str, local: list[int], groups: list[tuple[int, list[int], list[int]]]) -> list[Any]:
        parts = self.cols[name][1]
        if len(groups) == 1:
            return parts[groups[0][0]].get(groups[0][2])
        out: list[Any] = [None] * len(local)
        for j, at, rows in groups:
            for i, v in zip(at, parts[j].get(rows), strict=True):
                out[i] = v
        return out


def loads_many(texts: list[str]) -> list[Any]:
    """``[json.loads(t) for t in texts]`` in one parse of a JSON array: per-call overhead is most of
    the cost of parsing a small value (10 metadata objects and 10 tag values: 43 us -> 9 us)."""
    if len(texts) > 1:
        try:
            out: list[Any] = json.loads("[" + ",".join(texts) + "]")
            if len(out) == len(texts):
                return out
        except ValueError:
            pass  # parsed one by one below, which raises for the bad one
    return [json.loads(t) for t in texts]


def loads_objects(texts: list[str]) -> list[dict[str, Any]]:
    """JSON object column values (``content_meta``, ``metadata``) as dicts, ``"{}"`` without parsing."""
    out: list[Any] = [{} if t == "{}" else None for t in texts]
    todo = [i for i, v in enumerate(out) if v is None]
    for i, v in zip(todo, loads_many([texts[i] for i in todo]), strict=True):
        out[i] = v
    return out


def _decode_tags(entries: list[Any]) -> list[dict[str, Any]]:
    """Arrow tag maps (``[(key, JSON value), ...]`` or ``None``) as dicts, the values parsed in one call."""
    values = loads_many([v for entry in entries if entry for _, v in entry])
    it = iter(values)
    return [{key: next(it) for key, _ in entry} if entry else {} for entry in entries]


def loads_object(text: str) -> dict[str, Any]:
    """A JSON object column value (``content_meta``, ``metadata``) as a dict; the common ``"{}"`` without parsing."""
    if text == "{}":
        return {}
    out: dict[str, Any] = json.loads(text)
    return out


def _same_tag(value: Any, want: str) -> bool:
    try:
        return dumps_tag(value) == want
    except TypeError:  # an unhashable value (not a valid tag) matches nothing
        return False


_TEXT_SCHEMA = pa.schema([row_schema(1).field(name) for name in _TEXT])
