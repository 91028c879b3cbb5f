"""The version-row schema shared by the WAL, the Parquet segments and the in-memory table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from .._time import OPEN

INT_COLUMNS = ("version_id", "valid_from", "valid_to", "tx_from", "tx_to")
STR_COLUMNS = ("atom_id", "subject", "modality", "content", "content_meta", "metadata")


def row_schema(dim: int) -> pa.Schema:
    """Arrow schema of version rows; ``tags`` values are JSON-encoded scalars so types survive."""
    return pa.schema(
        [
            ("version_id", pa.int64()),
            ("atom_id", pa.string()),
            ("subject", pa.string()),
            ("modality", pa.string()),
            ("content", pa.string()),
            ("content_meta", pa.string()),
            ("tags", pa.map_(pa.string(), pa.string())),
            ("metadata", pa.string()),
            ("quality", pa.float64()),
            ("valid_from", pa.int64()),
            ("valid_to", pa.int64()),
            ("tx_from", pa.int64()),
            ("tx_to", pa.int64()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def dumps(obj: Any) -> str:
    """Canonical compact JSON (sorted keys) used for every JSON column."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=65536)
def _dumps_scalar(kind: str, value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def dumps_tag(value: Any) -> str:
    """JSON of one tag value, cached: tag values repeat a lot (keyed by type, since ``True == 1``)."""
    return _dumps_scalar(type(value).__name__, value)


_MAP = pa.map_(pa.string(), pa.string())


def np_array(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    """A primitive Arrow array over a numpy array (zero-copy when already contiguous and typed)."""
    arr = np.ascontiguousarray(values, dtype=typ.to_pandas_dtype())
    return pa.Array.from_buffers(typ, len(arr), [None, pa.py_buffer(arr)])


def tags_array(tags: list[dict[str, Any]]) -> pa.Array:
    """Tag dicts as the ``tags`` map column (keys sorted, values JSON), built from flat lists."""
    offsets = [0]
    keys: list[str] = []
    vals: list[str] = []
    for d in tags:
        if d:
            if len(d) == 1:
                for k, v in d.items():
                    keys.append(k)
                    vals.append(dumps_tag(v))
            else:
                for k in sorted(d):
                    keys.append(k)
                    vals.append(dumps_tag(d[k]))
        offsets.append(len(keys))
    arr = pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(vals, pa.string())
    )
    return arr if arr.type == _MAP else arr.cast(_MAP)


@dataclass
class RowBatch:
    """A batch of version rows in columnar form."""

    version_id: np.ndarray
    atom_id: list[str]
    subject: list[str]
    modality: list[str]
    content: list[str]
    content_meta: list[str]
    tags: list[dict[str, Any]]
    metadata: list[str]
    quality: np.ndarray
    valid_from: np.ndarray
    valid_to: np.ndarray
    tx_from: np.ndarray
    tx_to: np.ndarray
    vectors: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.atom_id)

    @classmethod
    def new_versions(
        cls,
        first_version: int,
        tx: int,
        *,
        atom_id: list[str],
        subject: list[str],
        modality: list[str],
        content: list[str],
        content_meta: list[str],
        tags: list[dict[str, Any]],
        metadata: list[str],
        quality: np.ndarray,
        valid_from: np.ndarray,
        valid_to: np.ndarray,
        vectors: np.ndarray,
        extra: dict[str, Any] | None = None,
    ) -> RowBatch:
        """The rows a transaction at ``tx`` writes: version ids from ``first_version`` on, believed from ``tx`` on."""
        m = len(atom_id)
        return cls(
            version_id=np.arange(first_version, first_version + m, dtype=np.int64),
            atom_id=atom_id,
            subject=subject,
            modality=modality,
            content=content,
            content_meta=content_meta,
            tags=tags,
            metadata=metadata,
            quality=quality,
            valid_from=valid_from,
            valid_to=valid_to,
            tx_from=np.full(m, tx, np.int64),
            tx_to=np.full(m, OPEN, np.int64),
            vectors=vectors,
            extra=extra if extra is not None else {},
        )

    @classmethod
    def empty(cls, dim: int) -> RowBatch:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, [], [], [], [], [], [], [], np.zeros(0), z, z, z, z, np.zeros((0, dim), np.float32))

    def take(self, idx: np.ndarray) -> RowBatch:
        """The rows at positions ``idx`` of this batch, in that order."""
        il = idx.tolist()
        return RowBatch(
            version_id=self.version_id[idx],
            atom_id=[self.atom_id[i] for i in il],
            subject=[self.subject[i] for i in il],
            modality=[self.modality[i] for i in il],
            content=[self.content[i] for i in il],
            content_meta=[self.content_meta[i] for i in il],
            tags=[self.tags[i] for i in il],
            metadata=[self.metadata[i] for i in il],
            quality=self.quality[idx],
            valid_from=self.valid_from[idx],
            valid_to=self.valid_to[idx],
            tx_from=self.tx_from[idx],
            tx_to=self.tx_to[idx],
            vectors=self.vectors[idx],
        )

    def to_arrow(self) -> pa.Table:
        dim = self.vectors.shape[1]
        flat = np_array(np.ascontiguousarray(self.vectors, dtype=np.float32).reshape(-1), pa.float32())
        tags = tags_array(self.tags)
        cols = [
            np_array(self.version_id, pa.int64()),
            pa.array(self.atom_id, pa.string()),
            pa.array(self.subject, pa.string()),
            pa.array(self.modality, pa.string()),
            pa.array(self.content, pa.string()),
            pa.array(self.content_meta, pa.string()),
            tags,
            pa.array(self.metadata, pa.string()),
            np_array(self.quality, pa.float64()),
            np_array(self.valid_from, pa.int64()),
            np_array(self.valid_to, pa.int64()),
            np_array(self.tx_from, pa.int64()),
            np_array(self.tx_to, pa.int64()),
            pa.FixedSizeListArray.from_arrays(flat, dim),
        ]
        return pa.Table.from_arrays(cols, schema=row_schema(dim))

    @classmethod
    def from_arrow(cls, table: pa.Table) -> RowBatch:
        dim = table.schema.field("vector").type.list_size
        def ints(name: str) -> np.ndarray:
            return np.asarray(table.column(name).to_numpy(), dtype=np.int64)
        vec_col = table.column("vector").combine_chunks()
        flat = vec_col.values.to_numpy(zero_copy_only=False) if len(vec_col) else np.zeros(0, np.float32)
        tags = [
            {k: json.loads(v) for k, v in (entry or [])} for entry in table.column("tags").to_pylist()
        ]
        return cls(
            version_id=ints("version_id"),
            atom_id=table.column("atom_id").to_pylist(),
            subject=table.column("subject").to_pylist(),
            modality=table.column("modality").to_pylist(),
            content=table.column("content").to_pylist(),
            content_meta=table.column("content_meta").to_pylist(),
            tags=tags,
            metadata=table.column("metadata").to_pylist(),
            quality=np.asarray(table.column("quality").to_numpy(), dtype=np.float64),
            valid_from=ints("valid_from"),
            valid_to=ints("valid_to"),
            tx_from=ints("tx_from"),
            tx_to=ints("tx_to"),
            vectors=np.asarray(flat, dtype=np.float32).reshape(-1, dim),
        )


def concat(batches: list[RowBatch], dim: int) -> RowBatch:
    """Concatenate row batches."""
    if not batches:
        return RowBatch.empty(dim)
    if len(batches) == 1:
        return batches[0]
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in batches])
    def lst(name: str) -> list[Any]:
        return [x for b in batches for x in getattr(b, name)]
    return RowBatch(
        cat("version_id"), lst("atom_id"), lst("subject"), lst("modality"), lst("content"),
        lst("content_meta"), lst("tags"), lst("metadata"), cat("quality"), cat("valid_from"),
        cat("valid_to"), cat("tx_from"), cat("tx_to"), np.concatenate([b.vectors for b in batches]),
    )


# ---------------------------------------------------------------------------- per-row sealing hook
# With an encrypting codec (aether.security.codec.AeadCodec), the sensitive fields of each row
# (atom id, subject, content, content_meta, tags, metadata, vector) become one ciphertext sealed
# with the row subject's data key; only the version id, key id, modality, quality and times stay
# as columns. Plain codecs have no ``seal_rows`` and tables pass through unchanged.


def seal_rows(table: pa.Table, codec: Any) -> pa.Table:
    """Plain version rows -> what goes to disk (sealed rows when ``codec`` encrypts rows)."""
    fn = getattr(codec, "seal_rows", None)
    return table if fn is None else fn(table)


def open_rows(table: pa.Table, codec: Any) -> pa.Table:
    """Inverse of :func:`seal_rows`: sealed rows (a ``sealed`` column) -> plain version rows."""
    if "sealed" not in table.schema.names:
        return table
    fn = getattr(codec, "open_rows", None)
    if fn is None:
        from ..errors import KeyRequiredError

        raise KeyRequiredError("rows are encrypted and no key was given")
    result: pa.Table = fn(table)
    return result
