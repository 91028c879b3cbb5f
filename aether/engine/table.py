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
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage.rows import RowBatch, dumps_tag, np_array, row_schema
from .atoms import _AtomIndex, _AtomRows
from .text_chunks import (
    _TEXT,
    _TEXT_SCHEMA,
    _ChunkReader,
    _decode_tags,
    _Tail,
    _tail_arrow,
)
from .text_chunks import _Strings as _Strings  # (read here by tests of the chunk readers)
from .vector_load import _VectorLoader

_TAIL_SEAL = 8192  # tail rows kept as Python lists before they are folded into an Arrow chunk


def _tag_key(key: str, value: Any) -> tuple[str, str]:
    return key, dumps_tag(value)


#: Commits of at least this many rows keep the WAL's Arrow table as their text chunk (no re-encoding).
_ARROW_CHUNK_MIN = 512


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


def _same_tag(value: Any, want: str) -> bool:
    try:
        return dumps_tag(value) == want
    except TypeError:  # an unhashable value (not a valid tag) matches nothing
        return False
