"""Import batches as :meth:`aether.Memory.add_columns` columns (the columnar import path).

:mod:`aether.ingest` reads a file in batches; this module turns one batch (an Arrow record
batch of a Parquet file, or the parsed objects of JSONL lines) into the keyword arguments of
``add_columns``, converting each column the way :func:`aether.ingest.to_op` converts one
row's value, so that both paths store the same thing. Arrow columns of the usual types
(strings, timezone-aware or naive timestamps, dates, floats, fixed-size float vectors) are
converted without per-row Python; other values (JSON text, tag maps, ISO strings) per row.

A row the per-row path would reject is found here and reported with ``to_op``'s own error
message; anything this module cannot convert exactly raises :class:`Fallback`, and the
caller imports that batch row by row (today's path).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..api import ITEM_FIELDS
from ..errors import InvalidInputError
from .rows import json_field, parse_time, to_op, vector_rows

if TYPE_CHECKING:
    import pyarrow as pa

    from ..api import Memory

_KEYS = ITEM_FIELDS
_DEFAULTS: dict[str, Any] = {"modality": "text", "subject": "default", "quality_score": 1.0}


class Fallback(Exception):
    """This batch cannot be converted exactly: import it row by row."""


@dataclass
class Columns:
    """One batch ready for ``add_columns``: its keyword arguments and each row's line number."""

    kwargs: dict[str, Any]
    lines: list[int]
    #: ``to_op`` of row ``i`` (for the row-by-row fallback after a rejected commit).
    item: Callable[[int], Any]

    @property
    def atom_ids(self) -> list[str]:
        ids: list[str] = self.kwargs["atom_id"]
        return ids

    def __len__(self) -> int:
        return len(self.lines)


def _fill_ids(ids: list[Any]) -> list[Any]:
    from ..api import _new_atom_ids

    missing = [i for i, a in enumerate(ids) if a is None]
    for i, a in zip(missing, _new_atom_ids(len(missing)), strict=True):
        ids[i] = a
    return ids


def _per_row(values: list[Any], convert: Callable[[Any], Any], bad: np.ndarray) -> list[Any]:
    """``convert`` each non-null value; rows whose conversion raises are marked in ``bad``.

    Equal values (strings, numbers, Arrow map entries) are converted once and share the result:
    tag maps and metadata repeat a lot, and the columns path validates a shared dict once.
    """
    out: list[Any] = [None] * len(values)
    cache: dict[Any, Any] = {}
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, list):  # an Arrow map row: [(key, value), ...]
            try:
                key: Any = ("m", tuple(v))
                hash(key)
            except TypeError:
                key = None
        elif isinstance(v, (str, int)) and not isinstance(v, bool):
            key = (type(v), v)
        else:
            key = None
        hit = cache.get(key, _MISS) if key is not None else _MISS
        if hit is not _MISS:
            if hit is _BAD:
                bad[i] = True
            else:
                out[i] = hit
            continue
        try:
            res = convert(v)
        except InvalidInputError:
            bad[i] = True
            res = _BAD
        else:
            out[i] = res
        if key is not None and len(cache) < 65536:
            cache[key] = res
    return out


_MISS = object()
_BAD = object()


def _mapping(name: str) -> Callable[[Any], Any]:

    def conv(v: Any) -> Any:
        out = json_field(v, name)
        if name == "tags" and not isinstance(out, Mapping):
            raise InvalidInputError("tags must be an object")
        return dict(out) if isinstance(out, Mapping) else out

    return conv


def from_items(mem: Memory, items: list[Any], lines: list[int]) -> tuple[Columns, list[tuple[int, str]]]:
    """Columns of parsed JSONL objects; also ``(line, error)`` for the rows ``to_op`` rejects."""

    n = len(items)
    bad = np.zeros(n, np.bool_)
    for i, it in enumerate(items):
        if not isinstance(it, Mapping) or "content" not in it or not it.keys() <= _KEYS_SET:
            bad[i] = True
    cols: dict[str, list[Any]] = {}
    for key in _KEYS:
        vals = [it.get(key) if not bad[i] else None for i, it in enumerate(items)]
        if any(v is not None for v in vals):
            cols[key] = vals
    if "content" not in cols:
        cols["content"] = [None] * n
    for i, c in enumerate(cols["content"]):
        if c is None:
            bad[i] = True
    kwargs = _convert(cols, bad, vectors=_list_vectors(cols.pop("vector", None), n, bad, mem))
    return _finish(mem, kwargs, bad, lines, lambda i: to_op(mem, items[i]))


_KEYS_SET = frozenset(_KEYS)


def _list_vectors(vals: list[Any] | None, n: int, bad: np.ndarray, mem: Memory) -> np.ndarray | None:
    if vals is None:
        return None
    dim = mem.embedder.dim
    out = np.zeros((n, dim), np.float32)
    for i, v in enumerate(vals):
        if bad[i]:
            continue
        if v is None:
            raise Fallback  # some rows with a vector, some without: row by row
        try:
            arr = np.asarray(v, np.float32)
        except (TypeError, ValueError):
            bad[i] = True
            continue
        if arr.shape != (dim,):
            bad[i] = True
            continue
        out[i] = arr
    norms = np.linalg.norm(out, axis=1)
    bad |= ~(np.isfinite(out).all(axis=1) & (norms > 0) & np.isfinite(norms))  # to_op names the reason
    return out


def from_arrow(mem: Memory, batch: pa.RecordBatch, first_row: int) -> tuple[Columns, list[tuple[int, str]]]:
    """Columns of a Parquet record batch whose first row is (0-based) row ``first_row`` of the file."""
    import pyarrow as pa
    import pyarrow.compute as pc


    n = batch.num_rows
    bad = np.zeros(n, np.bool_)
    names = batch.schema.names
    for name in names:
        if name not in _KEYS_SET:  # an unknown column: rows where it is set are bad ("unknown keys")
            bad |= np.asarray(batch.column(name).is_valid().to_numpy(zero_copy_only=False), np.bool_)
    cols: dict[str, Any] = {}
    for key in _KEYS:
        if key in names and key != "vector" and batch.column(key).null_count < n:
            cols[key] = batch.column(key)
    content = cols.get("content")
    if content is None:
        bad[:] = True
    elif not pa.types.is_string(content.type) and not pa.types.is_large_string(content.type):
        raise Fallback
    else:
        bad |= np.asarray(content.is_null().to_numpy(zero_copy_only=False), np.bool_)
    for key in ("valid_from", "valid_to"):
        col = cols.get(key)
        if col is None:
            continue
        typ = col.type
        if pa.types.is_timestamp(typ):
            cols[key] = col if typ.tz is not None else pc.assume_timezone(col, "UTC")
        elif pa.types.is_date(typ):
            cols[key] = col.cast(pa.timestamp("s")).cast(pa.timestamp("s", tz="UTC"))
        else:
            cols[key] = col.to_pylist()  # ints, ISO strings...: per row, as to_op reads them
    for key in ("tags", "metadata", "content_metadata", "atom_id", "modality", "subject", "content"):
        if key in cols:
            cols[key] = cols[key].to_pylist()
    if "quality_score" in cols:
        q = cols["quality_score"]
        if pa.types.is_floating(q.type) or pa.types.is_integer(q.type):
            cols["quality_score"] = np.asarray(q.fill_null(1.0).to_numpy(zero_copy_only=False), np.float64)
        else:
            cols["quality_score"] = q.to_pylist()
    vectors = None
    if "vector" in names:
        col = batch.column("vector")
        typ = col.type
        if col.null_count == n:
            pass
        elif not (pa.types.is_fixed_size_list(typ) and pa.types.is_floating(typ.value_type)) or col.null_count:
            raise Fallback
        else:
            if typ.list_size != mem.embedder.dim:
                bad[:] = True  # every row: "expected vectors of dimension ..."
            vectors = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(n, typ.list_size)
            norms = np.linalg.norm(vectors, axis=1)
            bad |= ~(np.isfinite(vectors).all(axis=1) & (norms > 0) & np.isfinite(norms))
    kwargs = _convert(cols, bad, vectors=vectors)

    def item(i: int) -> Any:
        rec = batch.slice(i, 1)
        vecs = vector_rows(rec)
        if vecs is not None:
            rec = rec.drop_columns(["vector"])
        out = rec.to_pylist()[0]
        if vecs is not None and vecs[0] is not None:
            out["vector"] = vecs[0]
        return to_op(mem, out)

    return _finish(mem, kwargs, bad, list(range(first_row + 1, first_row + n + 1)), item)


def _convert(cols: dict[str, Any], bad: np.ndarray, *, vectors: np.ndarray | None) -> dict[str, Any]:
    """Per-row conversions of the columns that need them (as ``to_op`` does for one row)."""
    out: dict[str, Any] = {}
    for key, vals in cols.items():
        if key in ("valid_from", "valid_to"):
            out[key] = _per_row(vals, _timer(key), bad) if isinstance(vals, list) else vals
        elif key in ("tags", "metadata", "content_metadata"):
            out[key] = _per_row(vals, _mapping(key), bad)
        elif key in _DEFAULTS and isinstance(vals, list):
            d = _DEFAULTS[key]
            out[key] = [d if v is None else v for v in vals]
        else:
            out[key] = vals
    if vectors is not None:
        out["vectors"] = vectors
    return out


def _timer(name: str) -> Callable[[Any], Any]:

    return lambda v: parse_time(v, name)


def _finish(
    mem: Memory, kwargs: dict[str, Any], bad: np.ndarray, lines: list[int], op_of: Callable[[int], Any]
) -> tuple[Columns, list[tuple[int, str]]]:
    """Report the bad rows with ``to_op``'s message and drop them from the columns."""
    errors: list[tuple[int, str]] = []
    for i in np.flatnonzero(bad).tolist():
        try:
            op_of(i)
        except InvalidInputError as exc:
            errors.append((lines[i], str(exc)))
            continue
        raise Fallback  # flagged here but accepted row by row: let the row path decide
    keep = np.flatnonzero(~bad)
    item = op_of
    kept_lines = lines
    if len(keep) < len(bad):
        kwargs = {k: _take(v, keep) for k, v in kwargs.items()}
        kept_lines = [lines[i] for i in keep.tolist()]
        base = keep.tolist()
        item = lambda i: op_of(base[i])  # noqa: E731
    kwargs["atom_id"] = _fill_ids(list(kwargs["atom_id"]) if "atom_id" in kwargs else [None] * len(kept_lines))
    return Columns(kwargs, kept_lines, item), errors


def _take(values: Any, keep: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[keep]
    if isinstance(values, list):
        return [values[i] for i in keep.tolist()]
    import pyarrow as pa

    return values.take(pa.array(keep, pa.int64()))  # an Arrow array
