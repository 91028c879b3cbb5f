"""The version table's text columns: the newest rows as Python lists (the tail), older ones as Arrow
chunks, with the readers that take many rows of a chunk at once and the JSON decoding of tag and
metadata values.
"""

from __future__ import annotations

import bisect
import json
from typing import Any

import numpy as np
import pyarrow as pa

from ..storage.rows import row_schema, tags_array


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


_TEXT_SCHEMA = pa.schema([row_schema(1).field(name) for name in _TEXT])
