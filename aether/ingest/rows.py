"""One import row's values as a put operation: times, JSON fields, vectors (checked as ``Memory.add`` checks them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from .._time import from_us_strict, to_us
from ..api import ITEM_KEYS
from ..errors import InvalidInputError, InvalidVectorError

if TYPE_CHECKING:
    from ..api import Memory
    from ..engine.txplan import PutOp

_TIME_KEYS = ("valid_from", "valid_to")


def parse_time(value: Any, name: str) -> Any:
    """JSON/Parquet time values: ISO-8601 text (a bare date is UTC midnight), epoch microseconds, datetimes."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInputError(f"{name}: expected a time, got {value!r}")
    if isinstance(value, int):
        return from_us_strict(value)
    if isinstance(value, datetime):
        # Arrow timestamps without a zone are taken as UTC (Parquet writers mostly mean that).
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10 and text[4] == "-" and text[7] == "-":
            try:
                d = date.fromisoformat(text)
            except ValueError as exc:
                raise InvalidInputError(f"{name}: {value!r} is not a date") from exc
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        to_us(text, name=name)  # validates (timezone required)
        return text
    raise InvalidInputError(f"{name}: expected a time, got {type(value).__name__}")


def json_field(value: Any, name: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise InvalidInputError(f"{name}: not valid JSON ({exc})") from None
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return {k: _maybe_json(v) for k, v in value}  # an Arrow map column
    return value


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


class UnitVector:
    """A vector the reader already validated and normalised in bulk (``to_op`` takes it as it is)."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v


def vector_rows(batch: Any) -> list[Any] | None:
    """The ``vector`` column of a Parquet batch as per-row values, normalised in one numpy pass.

    Fixed-size float lists (the usual layout) become :class:`UnitVector` rows; rows that are null, not
    finite or zero stay raw Python values so that ``to_op`` reports them with their row number.
    """
    import pyarrow as pa

    if "vector" not in batch.schema.names:
        return None
    col = batch.column("vector")
    typ = col.type
    if not (pa.types.is_fixed_size_list(typ) and pa.types.is_floating(typ.value_type)) or col.null_count:
        return None  # other layouts go through the per-row path
    n, dim = len(col), typ.list_size
    arr = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(n, dim)  # (slice-aware)
    norms = np.linalg.norm(arr, axis=1)
    ok = np.isfinite(arr).all(axis=1) & (norms > 0) & np.isfinite(norms)
    unit = arr / np.where(ok, norms, 1.0)[:, None]
    return [UnitVector(unit[i]) if ok[i] else arr[i].tolist() for i in range(n)]


def to_op(mem: Memory, item: Any) -> PutOp:
    """Validate one row and turn it into a put operation (raises ``InvalidInputError``)."""
    if not isinstance(item, Mapping):
        raise InvalidInputError(f"expected a JSON object, got {type(item).__name__}")
    item = {k: v for k, v in item.items() if v is not None}
    unknown = set(item) - ITEM_KEYS
    if unknown:
        raise InvalidInputError(f"unknown keys {sorted(unknown)}")
    if "content" not in item:
        raise InvalidInputError("'content' is required")
    for key in _TIME_KEYS:
        if key in item:
            item[key] = parse_time(item[key], key)
    unit = item.pop("vector") if isinstance(item.get("vector"), UnitVector) else None
    tags = json_field(item["tags"], "tags") if "tags" in item else None
    if tags is not None and not isinstance(tags, Mapping):
        raise InvalidInputError("tags must be an object")
    if unit is not None and unit.v.shape[0] != mem.engine.embedder.dim:
        raise InvalidVectorError(f"expected vectors of dimension {mem.engine.embedder.dim}, got {unit.v.shape[0]}")
    op = mem.prepare_put(
        item["content"],
        tags=dict(tags) if tags is not None else None,
        metadata=json_field(item["metadata"], "metadata") if "metadata" in item else None,
        valid_from=item.get("valid_from"),
        valid_to=item.get("valid_to"),
        modality=item.get("modality", "text"),
        subject=item.get("subject", "default"),
        quality_score=item.get("quality_score", 1.0),
        atom_id=item.get("atom_id"),
        vector=item.get("vector"),
        content_metadata=json_field(item["content_metadata"], "content_metadata")
        if "content_metadata" in item
        else None,
    )
    if unit is not None:
        op.vector = unit.v
    return op
