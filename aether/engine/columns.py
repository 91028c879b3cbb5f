"""Column-wise bulk writes (``Memory.add_columns``): validate whole columns, then build the rows in one go.

``add_many`` takes one dict per item and pays per-item Python for every field. Here each
column is checked once: scalars (one modality, one tags dict...) are validated a single time
and broadcast, arrays (numpy ``datetime64``, Arrow timestamps, float vectors) are converted
and range-checked vectorised, and strings go through Arrow, which rejects non-strings and
lone surrogates in C. When every atom id is new the transaction's rows are assembled directly
from the columns; otherwise (an id that already exists or repeats inside the batch: a new
version, as with ``add``) the batch is expanded into ordinary :class:`PutOp` operations and
takes the general planning path, with identical semantics.

Every error names the offending row, and nothing is written when any row is invalid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._time import MAX_US, MIN_US, OPEN, to_us
from ..embed.base import as_unit_vectors
from ..errors import (
    AetherError,
    InvalidContentError,
    InvalidInputError,
    InvalidIntervalError,
    NaiveDatetimeError,
)
from ..storage.rows import RowBatch
from .txplan import PutOp, RetractOp, all_new, new_atom_rows
from .validate import (
    check_atom_id,
    check_content,
    check_json,
    check_modality,
    check_quality,
    check_subject,
    check_tags,
)

if TYPE_CHECKING:
    from .store import Engine


@dataclass
class ColumnsPut:
    """Many brand-new-or-updated atoms given column-wise (validated; see :func:`build`)."""

    atom_id: list[str]
    content: list[str]
    content_meta: list[str]
    tags: list[dict[str, Any]]
    metadata: list[str]
    modality: list[str]
    subject: list[str]
    quality: np.ndarray
    valid_from: np.ndarray  # int64 microseconds; rows flagged in ``vf_now`` take the commit time
    vf_now: np.ndarray | None
    valid_to: np.ndarray  # int64 microseconds, OPEN for open-ended
    vectors: np.ndarray | None  # (n, dim) unit rows; None until the engine embeds the content

    def __len__(self) -> int:
        return len(self.atom_id)

    def rows(self, engine: Engine, tx: int) -> RowBatch | None:
        """The new rows when every atom id is new and distinct, else ``None`` (use :meth:`to_puts`)."""
        if not all_new(engine, self.atom_id):
            return None
        assert self.vectors is not None
        vf = self.valid_from
        if self.vf_now is not None:
            vf = np.where(self.vf_now, np.int64(tx), vf)
        _check_order(vf, self.valid_to)
        return new_atom_rows(
            engine,
            tx,
            atom_id=self.atom_id,
            subject=self.subject,
            modality=self.modality,
            content=self.content,
            content_meta=self.content_meta,
            tags=self.tags,
            metadata=self.metadata,
            quality=self.quality,
            valid_from=vf,
            valid_to=self.valid_to,
            vectors=self.vectors,
        )

    def to_puts(self) -> list[PutOp]:
        """The same batch as per-row operations (for the general planner)."""
        now = self.vf_now
        vecs = self.vectors
        return [
            PutOp(
                atom_id=self.atom_id[i],
                content=self.content[i],
                content_meta=self.content_meta[i],
                tags=self.tags[i],
                metadata=self.metadata[i],
                modality=self.modality[i],
                subject=self.subject[i],
                quality=float(self.quality[i]),
                valid_from=None if now is not None and now[i] else int(self.valid_from[i]),
                valid_to=int(self.valid_to[i]),
                vector=None if vecs is None else vecs[i],
            )
            for i in range(len(self.atom_id))
        ]


def _check_order(vf: np.ndarray, vt: np.ndarray) -> None:
    bad = np.flatnonzero(vt <= vf)
    if len(bad):
        raise InvalidIntervalError(f"row {int(bad[0])}: valid_to must be after valid_from")


def _row_error(i: int, exc: AetherError) -> AetherError:
    return type(exc)(f"row {i}: {exc}")


def _as_list(values: Any, n: int | None, what: str) -> list[Any]:
    """A column as a Python list (Arrow arrays, numpy arrays, any sized iterable)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        out = values.to_pylist()
    elif isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InvalidInputError(f"{what} must be one-dimensional, got shape {values.shape}")
        out = values.tolist()
    elif isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence, Iterable)):
        raise InvalidInputError(f"{what} must be a sequence, got {type(values).__name__}")
    else:
        out = list(values)
    if n is not None and len(out) != n:
        raise InvalidInputError(f"{what} has {len(out)} values for {n} rows")
    return out


def _strings(values: list[Any], check: Callable[[Any], str], what: str) -> pa.Array:
    """Check a string column (in place: str subclasses such as numpy's ``str_`` become ``str``) and
    return it as Arrow: types and lone surrogates in one Arrow conversion; the per-row check runs
    only to find and name a bad row."""
    if not all(type(v) is str for v in values):
        values[:] = [str(v) if isinstance(v, str) else v for v in values]
    arr = None
    try:
        arr = pa.array(values, pa.string())
        ok = all(type(v) is str for v in values)
    except (pa.ArrowException, UnicodeError, TypeError, ValueError):
        ok = False
    if not ok or arr is None:
        for i, v in enumerate(values):
            try:
                check(v)
            except AetherError as exc:
                raise _row_error(i, exc) from None
        raise InvalidInputError(f"{what}: every value must be a str")  # pragma: no cover - check() raised
    return arr


def _content(values: list[Any], limit: int) -> list[str]:
    arr = _strings(values, lambda v: check_content(v, limit), "content")
    for i, v in enumerate(values):
        if not v.strip():
            raise _row_error(i, InvalidContentError("content is empty"))
    sizes = pc.binary_length(arr)
    big = np.flatnonzero(sizes.to_numpy(zero_copy_only=False) > limit)
    if len(big):
        i = int(big[0])
        raise _row_error(i, InvalidContentError(
            f"content is {sizes[i].as_py()} bytes; the limit is {limit} (max_content_bytes)"
        ))
    return values


def _atom_ids(values: Any, n: int, fresh: Callable[[int], list[str]]) -> list[str]:
    if values is None:
        return fresh(n)
    ids = _as_list(values, n, "atom_id")
    missing = [i for i, a in enumerate(ids) if a is None]
    if missing:  # as in add_many: no id means a fresh one
        for i, a in zip(missing, fresh(len(missing)), strict=True):
            ids[i] = a
    _strings(ids, check_atom_id, "atom_id")
    for i, a in enumerate(ids):
        if not a or len(a) > 256:
            raise _row_error(i, InvalidInputError("atom_id must be a non-empty str of at most 256 chars"))
    return ids


def _times(values: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Microseconds per row and a mask of rows left unset (``None``, NaT or an Arrow null)."""
    if values is None:
        return np.zeros(n, np.int64), np.ones(n, np.bool_)
    if isinstance(values, (str, Mapping)) or not hasattr(values, "__len__"):  # one time for every row
        return np.full(n, to_us(values, name=name), np.int64), None
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        # numpy datetimes carry no timezone; numpy documents them as UTC, so they are read as UTC.
        if values.ndim != 1 or len(values) != n:
            raise InvalidInputError(f"{name} has shape {values.shape} for {n} rows")
        unset = np.isnat(values)
        unit, count = np.datetime_data(values.dtype)
        if unit in ("Y", "M"):  # calendar units: through days (years 1-9999 fit easily once range-checked)
            raw = values.view(np.int64).astype(np.float64) * count
            lim = (1 - 1970, 9999 - 1970) if unit == "Y" else ((1 - 1970) * 12, (9999 - 1970) * 12 + 11)
            _check_span(~unset & ((raw < lim[0]) | (raw > lim[1])), name)
            values = values.astype("datetime64[D]")
            unit, count = "D", 1
        us = _to_us(values.view(np.int64), unit, count, unset, name)
        return us, unset if unset.any() else None
    if isinstance(values, (pa.Array, pa.ChunkedArray)) and pa.types.is_timestamp(values.type):
        if values.type.tz is None:
            raise NaiveDatetimeError(f"{name}: an Arrow timestamp column without a timezone; aether needs aware times")
        if len(values) != n:
            raise InvalidInputError(f"{name} has {len(values)} values for {n} rows")
        raw = values.cast(pa.int64())  # the instants in the column's own unit (UTC-based, whatever the tz)
        unset = np.asarray(raw.is_null().to_numpy(zero_copy_only=False), np.bool_)
        ints = np.array(raw.fill_null(0).to_numpy(zero_copy_only=False), np.int64)  # a writable copy
        us = _to_us(ints, values.type.unit, 1, unset, name)
        return us, unset if unset.any() else None
    vals = _as_list(values, n, name)
    out = np.zeros(n, np.int64)
    unset = np.zeros(n, np.bool_)
    for i, v in enumerate(vals):
        if v is None:
            unset[i] = True
            continue
        try:
            out[i] = to_us(v, name=name)
        except AetherError as exc:
            raise _row_error(i, exc) from None
    return out, unset if unset.any() else None


#: Microseconds per unit of numpy / Arrow datetimes (finer units are divided, flooring).
_US_PER = {"W": 7 * 86_400_000_000, "D": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000,
           "ms": 1_000, "us": 1}
_PER_US = {"ns": 1_000, "ps": 1_000_000, "fs": 1_000_000_000, "as": 1_000_000_000_000}



def _vectors(vectors: Any, dim: int, n: int, rows: str) -> np.ndarray | None:
    """Caller vectors as unit rows, one per row (``rows`` names what the rows are, for the message)."""
    if vectors is None:
        return None
    vecs = as_unit_vectors(vectors, dim)
    if vecs.shape[0] != n:
        raise InvalidInputError(f"{n} {rows} but {vecs.shape[0]} vectors")
    return vecs


def _valid_columns(valid_from: Any, valid_to: Any, n: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The valid-time columns: ``(valid_from, rows whose valid_from is "now", valid_to)``, intervals checked."""
    vf, vf_now = _times(valid_from, n, "valid_from")
    vt, vt_open = _times(valid_to, n, "valid_to")
    if vt_open is not None:
        vt[vt_open] = OPEN
    known = ~vf_now if vf_now is not None else np.ones(n, np.bool_)
    bad = np.flatnonzero(known & (vt <= vf))
    if len(bad):
        raise _row_error(int(bad[0]), InvalidIntervalError("valid_to must be after valid_from"))
    return vf, vf_now, vt

def _to_us(raw: np.ndarray, unit: str, count: int, unset: np.ndarray, name: str) -> np.ndarray:
    """Integer instants in ``count`` x ``unit`` since the epoch -> microseconds, range-checked before
    any multiplication (numpy's own casts wrap around silently). Sub-microsecond digits are dropped:
    aether stores microseconds, like Python's datetime."""
    raw = np.where(unset, 0, raw)
    if unit in _US_PER:
        f = _US_PER[unit] * count
        _check_span(~unset & ((raw < -(-MIN_US // f)) | (raw > MAX_US // f)), name)
        return raw * f
    if unit in _PER_US and count == 1:
        us = np.floor_divide(raw, _PER_US[unit])
        _check_span(~unset & ((us < MIN_US) | (us > MAX_US)), name)
        return us
    raise InvalidInputError(f"{name}: unsupported datetime unit {count}{unit}")


def _check_span(bad: np.ndarray, name: str) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        msg = f"{name} is outside the representable range (UTC years 1-9999)"
        raise _row_error(int(rows[0]), InvalidIntervalError(msg))


def _per_row(
    values: Any, n: int, what: str, check: Callable[[Any], Any], is_scalar: Callable[[Any], bool]
) -> list[Any]:
    """A column given once (checked once, broadcast) or per row (each distinct value checked once)."""
    if is_scalar(values):
        return [check(values)] * n
    out = _as_list(values, n, what)
    seen: dict[Any, Any] = {}
    for i, v in enumerate(out):
        try:
            key = (type(v), v) if isinstance(v, (str, int, float)) else None
            if key is not None and key in seen:
                out[i] = seen[key]
                continue
            out[i] = check(v)
            if key is not None:
                seen[key] = out[i]
        except AetherError as exc:
            raise _row_error(i, exc) from None
    return out


def _dicts(values: Any, n: int, what: str, check: Callable[[Any], Any]) -> list[Any]:
    """A dict column: ``None``, one mapping for every row, or one mapping (or ``None``) per row."""
    if values is None or isinstance(values, Mapping):
        one = check(None if values is None else dict(values))
        return [one] * n
    out = _as_list(values, n, what)
    seen: dict[int, Any] = {}  # the same dict object repeated: checked once
    for i, v in enumerate(out):
        cached = seen.get(id(v))
        if cached is not None:
            out[i] = cached[1]
            continue
        try:
            checked = check(dict(v) if isinstance(v, Mapping) and not isinstance(v, dict) else v)
        except AetherError as exc:
            raise _row_error(i, exc) from None
        seen[id(v)] = (v, checked)  # holding v keeps its id from being reused
        out[i] = checked
    return out


def _quality(values: Any, n: int) -> np.ndarray:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return np.full(n, check_quality(values), np.float64)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.to_numpy(zero_copy_only=False)
    elif isinstance(values, np.ndarray):
        arr = values
    else:  # a list: numpy would turn True into 1.0, which check_quality rejects
        values = _as_list(values, n, "quality_score")
        plain = all(type(v) is float or type(v) is int for v in values)
        arr = np.asarray(values, np.float64) if plain else np.zeros(0)
    if arr.ndim == 1 and len(arr) == n and arr.dtype.kind in "fiu":
        q = arr.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(q) | (q < 0.0) | (q > 1.0))
        if len(bad):
            i = int(bad[0])
            raise _row_error(i, InvalidInputError(f"quality_score must be a number in [0, 1], got {arr[i]!r}"))
        return q
    vals = _as_list(values, n, "quality_score")
    out = np.empty(n, np.float64)
    for i, v in enumerate(vals):
        try:
            out[i] = check_quality(v)
        except AetherError as exc:
            raise _row_error(i, exc) from None
    return out


def build(
    content: Any,
    *,
    limit: int,
    dim: int,
    fresh_ids: Callable[[int], list[str]],
    vectors: Any = None,
    atom_id: Any = None,
    valid_from: Any = None,
    valid_to: Any = None,
    tags: Any = None,
    metadata: Any = None,
    content_metadata: Any = None,
    modality: Any = "text",
    subject: Any = "default",
    quality_score: Any = 1.0,
) -> ColumnsPut:
    """Validate the columns of :meth:`aether.Memory.add_columns`; raises before anything is written."""
    texts = _content(_as_list(content, None, "content"), limit)
    n = len(texts)
    vecs = _vectors(vectors, dim, n, "rows of content")
    vf, vf_now, vt = _valid_columns(valid_from, valid_to, n)
    return ColumnsPut(
        atom_id=_atom_ids(atom_id, n, fresh_ids),
        content=texts,
        content_meta=_dicts(content_metadata, n, "content_metadata", lambda v: check_json(v, "content_metadata")),
        tags=_dicts(tags, n, "tags", check_tags),
        metadata=_dicts(metadata, n, "metadata", lambda v: check_json(v, "metadata")),
        modality=_per_row(modality, n, "modality", check_modality, lambda v: isinstance(v, str)),
        subject=_per_row(subject, n, "subject", check_subject, lambda v: isinstance(v, str)),
        quality=_quality(quality_score, n),
        valid_from=vf,
        vf_now=vf_now,
        valid_to=vt,
        vectors=vecs,
    )


def _ids_column(atom_id: Any) -> list[str]:
    ids = _as_list(atom_id, None, "atom_id")
    _strings(ids, check_atom_id, "atom_id")
    for i, a in enumerate(ids):
        if not a or len(a) > 256:
            raise _row_error(i, InvalidInputError("atom_id must be a non-empty str of at most 256 chars"))
    return ids


def corrections(
    atom_id: Any,
    content: Any = None,
    *,
    limit: int,
    dim: int,
    vectors: Any = None,
    valid_from: Any = None,
    valid_to: Any = None,
    tags: Any = None,
    keep_tags: bool = True,
    metadata: Any = None,
    keep_metadata: bool = True,
) -> list[PutOp]:
    """Validate the columns of :meth:`aether.Memory.correct_many` into correction operations.

    ``content`` is ``None`` (every row keeps its content) or one text or ``None`` per row;
    ``keep_tags`` / ``keep_metadata`` keep each atom's latest tags / metadata (else ``tags`` /
    ``metadata`` are columns as in :func:`build`). Raises, naming the first bad row, before
    anything is written.
    """
    ids = _ids_column(atom_id)
    n = len(ids)
    texts: list[str | None] = [None] * n
    if content is not None:
        texts = _as_list(content, n, "content")
        for i, c in enumerate(texts):
            if c is not None:
                try:
                    texts[i] = check_content(str(c) if isinstance(c, str) else c, limit)  # numpy str_ -> str
                except AetherError as exc:
                    raise _row_error(i, exc) from None
    vecs = _vectors(vectors, dim, n, "atom ids")
    vf, vf_now, vt = _valid_columns(valid_from, valid_to, n)
    tag_col: list[Any] = [None] * n if keep_tags else _dicts(tags, n, "tags", check_tags)
    meta_col: list[Any] = (
        [None] * n if keep_metadata else _dicts(metadata, n, "metadata", lambda v: check_json(v, "metadata"))
    )
    vf_l = vf.tolist()
    vt_l = vt.tolist()
    now_l = vf_now.tolist() if vf_now is not None else [False] * n
    return [
        PutOp(
            atom_id=ids[i],
            content=texts[i],
            content_meta=None,
            tags=tag_col[i],
            metadata=meta_col[i],
            modality=None,
            subject=None,
            quality=None,
            valid_from=None if now_l[i] else vf_l[i],
            valid_to=vt_l[i],
            vector=None if vecs is None else vecs[i],
            must_exist=True,
        )
        for i in range(n)
    ]


def retractions(atom_id: Any, at: Any = None) -> list[RetractOp]:
    """Validate the columns of :meth:`aether.Memory.retract_many` (``at``: ``None``, one time, or one per row)."""
    ids = _ids_column(atom_id)
    n = len(ids)
    us, unset = _times(at, n, "at")
    now = unset.tolist() if unset is not None else [False] * n
    return [RetractOp(a, None if u else t) for a, t, u in zip(ids, us.tolist(), now, strict=True)]
