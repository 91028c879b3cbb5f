"""Immutable Parquet files: version-row segments and tx_to closings of sealed rows.

Each file is written whole to a temporary name, fsynced and renamed; its CRC32C is
recorded in the manifest, so a flipped byte is caught on open before Parquet sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CorruptionError, TamperedError
from . import _fs
from ._fs import io_errors
from .codec import Codec

#: Columns written without compression (float vectors, sealed ciphertext: incompressible).
_PLAIN = frozenset({"vector", "sealed"})
#: Columns worth dictionary-encoding (few distinct values).
_DICT = frozenset({"subject", "modality", "tags", "content_meta", "metadata", "key_id"})

CLOSINGS_SCHEMA = pa.schema([("version_id", pa.int64()), ("tx_to", pa.int64())])


def write_table(root: Path, rel: str, table: pa.Table, codec: Codec, store_id: str) -> dict[str, Any]:
    """Write ``table`` as Parquet (zstd) at ``root/rel``; returns its manifest entry."""
    sink = pa.BufferOutputStream()
    table = _vectors_as_binary(table)
    names = table.schema.names
    # Float vectors barely compress (a few %) but cost most of the write and read time under zstd:
    # they are stored plain. Dictionary encoding only where values repeat (not ids, text or vectors).
    comp: dict[str, str] = {c: ("none" if c in _PLAIN else "zstd") for c in names}
    levels = {c: 1 for c in names if c not in _PLAIN}
    pq.write_table(
        table,
        sink,
        compression=comp,
        compression_level=levels,
        use_dictionary=[c for c in names if c in _DICT],
        write_statistics=[c for c in names if c not in _PLAIN],  # min/max of vector bytes: useless, slow
        write_page_checksum=True,
        row_group_size=65536,
    )
    buf = sink.getvalue()
    # Plain stores write the Arrow buffer as is (no extra copy of a segment's bytes; read_table mirrors this).
    data = buf if not codec.encrypted else codec.seal(buf.to_pybytes(), f"file|{store_id}|{rel}".encode())
    path = root / rel
    with io_errors("mkdir", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    _fs.write_atomic(path, data)
    return {"file": rel, "rows": table.num_rows, "bytes": len(data), "crc32c": crc32c.crc32c(data)}


def read_table(root: Path, entry: dict[str, Any], codec: Codec, store_id: str) -> pa.Table:
    """Read and verify one file listed in the manifest."""
    table, _ = read_segment(root, entry, codec, store_id)
    return table


def read_segment(
    root: Path, entry: dict[str, Any], codec: Codec, store_id: str, *, defer_vectors: bool = False
) -> tuple[pa.Table, Callable[[], pa.ChunkedArray] | None]:
    """Read and verify one file listed in the manifest.

    With ``defer_vectors`` (plain stores), the whole file is still checksummed now, but its
    ``vector`` column is left out of the table and decoded later by the returned function
    (from the same verified, memory-mapped bytes).
    """
    rel = entry["file"]
    path = root / rel
    data: Any
    try:
        if codec.encrypted:
            data = path.read_bytes()
        else:  # memory-mapped: checksummed and decoded in place, no copy of the whole file first
            with pa.memory_map(str(path)) as mm:
                data = mm.read_buffer()
    except FileNotFoundError:
        raise CorruptionError("file listed in the manifest is missing", path=str(path)) from None
    except OSError as exc:
        raise CorruptionError(f"cannot read: {exc}", path=str(path)) from None
    if len(data) != entry["bytes"] or crc32c.crc32c(data) != entry["crc32c"]:
        raise CorruptionError("checksum mismatch (file changed or damaged)", path=str(path))
    try:
        plain = data if not codec.encrypted else codec.open(data, f"file|{store_id}|{rel}".encode())
    except TamperedError as exc:
        raise CorruptionError(f"fails authentication: {exc}", path=str(path)) from None
    later = defer_vectors and not codec.encrypted
    try:
        names = pq.read_schema(pa.BufferReader(plain)).names
        later = later and "vector" in names
        cols = [c for c in names if c != "vector"] if later else None
        table = pq.read_table(pa.BufferReader(plain), columns=cols, use_threads=True, pre_buffer=True)
    except Exception as exc:
        raise CorruptionError(f"not a readable Parquet file: {exc}", path=str(path)) from None
    if table.num_rows != entry["rows"]:
        raise CorruptionError("row count differs from the manifest", path=str(path))
    if not later:
        return _vectors_as_lists(table), None

    def fetch() -> pa.ChunkedArray:
        try:
            vec = pq.read_table(pa.BufferReader(plain), columns=["vector"], use_threads=False)
        except Exception as exc:
            raise CorruptionError(f"not a readable Parquet file: {exc}", path=str(path)) from None
        if vec.num_rows != entry["rows"]:
            raise CorruptionError("row count differs from the manifest", path=str(path))
        return _vectors_as_lists(vec).column("vector")

    return table, fetch


def _vectors_as_binary(table: pa.Table) -> pa.Table:
    """Store the ``vector`` column as fixed-size binary (the float32 bytes of each row).

    Parquet writes and reads a nested fixed-size list element by element (levels, statistics):
    ~20x slower than the same bytes as one fixed-size binary value per row. Zero-copy both ways.
    """
    if "vector" not in table.schema.names:
        return table
    typ = table.schema.field("vector").type
    if not (pa.types.is_fixed_size_list(typ) and typ.value_type == pa.float32()):
        return table
    dim = typ.list_size
    chunks = []
    for chunk in table.column("vector").chunks:
        k = len(chunk)
        flat = chunk.values.to_numpy(zero_copy_only=False)[chunk.offset * dim : (chunk.offset + k) * dim]
        buf = pa.py_buffer(np.ascontiguousarray(flat, np.float32))
        chunks.append(pa.Array.from_buffers(pa.binary(4 * dim), k, [None, buf]))
    col = pa.chunked_array(chunks, pa.binary(4 * dim))
    i = table.schema.get_field_index("vector")
    return table.set_column(i, pa.field("vector", pa.binary(4 * dim)), col)


def _vectors_as_lists(table: pa.Table) -> pa.Table:
    """Inverse of :func:`_vectors_as_binary` (segments written before it keep their list column)."""
    if "vector" not in table.schema.names:
        return table
    typ = table.schema.field("vector").type
    if not pa.types.is_fixed_size_binary(typ) or typ.byte_width % 4:
        return table
    dim = typ.byte_width // 4
    if table.column("vector").null_count:
        raise CorruptionError("a segment has a missing vector")
    ltype = pa.list_(pa.float32(), dim)
    chunks = []
    for chunk in table.column("vector").chunks:
        k = len(chunk)
        vals = pa.Array.from_buffers(pa.float32(), k * dim, [None, chunk.buffers()[1]], offset=chunk.offset * dim)
        chunks.append(pa.FixedSizeListArray.from_arrays(vals, dim))
    col = pa.chunked_array(chunks, ltype)
    i = table.schema.get_field_index("vector")
    return table.set_column(i, pa.field("vector", ltype), col)


def closings_table(version_ids: np.ndarray, tx_to: np.ndarray) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(version_ids, pa.int64()), pa.array(tx_to, pa.int64())], schema=CLOSINGS_SCHEMA
    )
