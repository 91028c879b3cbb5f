"""The in-memory version table: numpy columns for time and vectors, Arrow or lists for text.

Rows are appended in ``version_id`` order and never moved. Readers take a snapshot
(row count, last transaction) and read the arrays up to that row count without a lock:
a writer fills new rows completely before it publishes the new count, and the only
in-place change it makes (closing ``tx_to``) uses a transaction time newer than any
snapshot that could observe the row, so a reader always sees whole transactions.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage.rows import RowBatch, dumps, dumps_tag

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


def _tag_key(key: str, value: Any) -> tuple[str, str]:
    return key, dumps_tag(value)


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
        self.vectors = np.zeros((cap, dim), np.float32)
        self.atom_ids: list[str] = []
        self.atom_index: dict[str, int] = {}
        self.atom_rows: dict[int, list[int]] = {}
        self.tag_rows: dict[tuple[str, str], list[int]] = {}
        self._chunk_starts: list[int] = []
        self._chunks: list[pa.Table | _Tail] = []
        self._tail: _Tail | None = None

    # -- growth ------------------------------------------------------------------------
    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        cap = len(self.version_id)
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        for name in ("version_id", "valid_from", "valid_to", "tx_from", "tx_to", "quality", "atom_code", "dead"):
            old = getattr(self, name)
            arr = np.zeros(new_cap, old.dtype)
            arr[: self.n] = old[: self.n]
            setattr(self, name, arr)
        vec = np.zeros((new_cap, self.dim), np.float32)
        vec[: self.n] = self.vectors[: self.n]
        self.vectors = vec

    def _code(self, atom_id: str) -> int:
        code = self.atom_index.get(atom_id)
        if code is None:
            code = len(self.atom_ids)
            self.atom_ids.append(atom_id)
            self.atom_index[atom_id] = code
        return code

    # -- appends -----------------------------------------------------------------------
    def append(self, rows: RowBatch) -> None:
        """Append rows (already version-numbered) as Python-list tail rows."""
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
        self.vectors[s:e] = rows.vectors
        self.dead[s:e] = False
        if self._tail is None or len(self._tail) >= _TAIL_SEAL:
            self._seal_tail()
            self._tail = _Tail()
            self._chunk_starts.append(s)
            self._chunks.append(self._tail)
        tail = self._tail
        for i in range(m):
            row = s + i
            code = self._code(rows.atom_id[i])
            self.atom_code[row] = code
            self.atom_rows.setdefault(code, []).append(row)
            for k, v in rows.tags[i].items():
                self.tag_rows.setdefault(_tag_key(k, v), []).append(row)
        tail.atom_id.extend(rows.atom_id)
        tail.subject.extend(rows.subject)
        tail.modality.extend(rows.modality)
        tail.content.extend(rows.content)
        tail.content_meta.extend(rows.content_meta)
        tail.tags.extend(rows.tags)
        tail.metadata.extend(rows.metadata)
        self.n = e

    def _seal_tail(self) -> None:
        """Fold the list tail into an Arrow chunk (compact, and fast for bulk reads)."""
        if self._tail is None or not len(self._tail):
            return
        idx = self._chunks.index(self._tail)
        t = self._tail
        self._chunks[idx] = pa.table(
            {
                "atom_id": t.atom_id,
                "subject": t.subject,
                "modality": t.modality,
                "content": t.content,
                "content_meta": t.content_meta,
                "tags": pa.array(
                    [[(k, dumps_tag(v)) for k, v in sorted(d.items())] for d in t.tags],
                    type=pa.map_(pa.string(), pa.string()),
                ),
                "metadata": t.metadata,
            }
        )
        self._tail = None

    def append_arrow(self, table: pa.Table) -> None:
        """Bulk-append a loaded segment, keeping its text columns in Arrow form."""
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
        vec = table.column("vector").combine_chunks()
        self.vectors[s:e] = vec.values.to_numpy(zero_copy_only=False).reshape(m, self.dim)
        self.dead[s:e] = False
        # Atom codes: dictionary-encode in Arrow, then map the (few) new ids in Python.
        enc = table.column("atom_id").combine_chunks().dictionary_encode()
        uniq = enc.dictionary.to_pylist()
        local = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        mapping = np.array([self._code(a) for a in uniq], dtype=np.int32)
        codes = mapping[local] if len(uniq) else np.zeros(0, np.int32)
        self.atom_code[s:e] = codes
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
        for group in np.split(order, bounds):
            if len(group):
                self.atom_rows.setdefault(int(codes[group[0]]), []).extend((group + s).tolist())
        # Tag postings: flatten the map column and group rows by (key, value).
        tags = table.column("tags").combine_chunks()
        if len(tags.keys):
            offsets = np.asarray(tags.offsets.to_numpy(), dtype=np.int64)
            counts = np.diff(offsets)
            row_of_entry = np.repeat(np.arange(m, dtype=np.int64), counts) + s
            # Join key and value with NUL (invalid in neither, absent from JSON text) to encode pairs.
            joined = pc.binary_join_element_wise(tags.keys, tags.items, "\x00").dictionary_encode()
            pairs = [p.split("\x00", 1) for p in joined.dictionary.to_pylist()]
            keys = [p[0] for p in pairs]
            vals = [p[1] for p in pairs]
            pidx = np.asarray(joined.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
            order = np.argsort(pidx, kind="stable")
            bounds = np.flatnonzero(np.diff(pidx[order])) + 1
            for group in np.split(order, bounds):
                if len(group):
                    j = int(pidx[group[0]])
                    self.tag_rows.setdefault((keys[j], vals[j]), []).extend(row_of_entry[group].tolist())
        text = table.select(["atom_id", "subject", "modality", "content", "content_meta", "tags", "metadata"])
        self._chunk_starts.append(s)
        self._chunks.append(text)
        self.n = e

    # -- reads -------------------------------------------------------------------------
    def row_index(self, version_ids: np.ndarray) -> np.ndarray:
        """Row positions of version ids (ids are ascending with rows)."""
        pos = np.searchsorted(self.version_id[: self.n], version_ids)
        ok = (pos < self.n) & (self.version_id[np.minimum(pos, max(self.n - 1, 0))] == version_ids)
        if not bool(np.all(ok)):
            raise KeyError("unknown version id")
        return pos

    def text(self, row: int) -> dict[str, Any]:
        """The text columns of one row, decoded."""
        import bisect

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

    def batch(self, rows: np.ndarray) -> RowBatch:
        """Full rows (text and vectors) as a ``RowBatch``, e.g. to write a segment."""
        texts = [self.text(int(r)) for r in rows]
        return RowBatch(
            version_id=self.version_id[rows].copy(),
            atom_id=[t["atom_id"] for t in texts],
            subject=[t["subject"] for t in texts],
            modality=[t["modality"] for t in texts],
            content=[t["content"] for t in texts],
            content_meta=[dumps(t["content_meta"]) for t in texts],
            tags=[t["tags"] for t in texts],
            metadata=[dumps(t["metadata"]) for t in texts],
            quality=self.quality[rows].copy(),
            valid_from=self.valid_from[rows].copy(),
            valid_to=self.valid_to[rows].copy(),
            tx_from=self.tx_from[rows].copy(),
            tx_to=self.tx_to[rows].copy(),
            vectors=self.vectors[rows].copy(),
        )

    def batch_range(self, start: int, end: int) -> RowBatch:
        """Rows ``[start, end)`` as a ``RowBatch``, read chunk by chunk (columnar, no per-row lookups)."""
        cols: dict[str, list[Any]] = {k: [] for k in _Tail.__slots__}
        for c, cstart in enumerate(self._chunk_starts):
            chunk = self._chunks[c]
            cend = cstart + len(chunk) if isinstance(chunk, _Tail) else cstart + chunk.num_rows
            lo, hi = max(start, cstart), min(end, cend)
            if lo >= hi:
                continue
            a, b = lo - cstart, hi - cstart
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
            vectors=self.vectors[sl].copy(),
        )

    def tag_mask(self, tags: dict[str, Any], n: int) -> np.ndarray:
        """Rows (of the first ``n``) whose tags contain every ``key == value`` pair."""
        mask = np.ones(n, np.bool_)
        for k, v in tags.items():
            posting = self.tag_rows.get(_tag_key(k, v))
            if not posting:
                return np.zeros(n, np.bool_)
            sel = np.zeros(n, np.bool_)
            rows = np.asarray(posting[: len(posting)], dtype=np.int64)
            sel[rows[rows < n]] = True
            mask &= sel
        return mask
