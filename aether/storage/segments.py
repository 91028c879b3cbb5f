"""Immutable Parquet files: version-row segments and tx_to closings of sealed rows.

Each file is written whole to a temporary name, fsynced and renamed; its CRC32C is
recorded in the manifest, so a flipped byte is caught on open before Parquet sees it.
"""

from __future__ import annotations

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

CLOSINGS_SCHEMA = pa.schema([("version_id", pa.int64()), ("tx_to", pa.int64())])


def write_table(root: Path, rel: str, table: pa.Table, codec: Codec, store_id: str) -> dict[str, Any]:
    """Write ``table`` as Parquet (zstd) at ``root/rel``; returns its manifest entry."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        write_page_checksum=True,
        row_group_size=65536,
    )
    data = codec.seal(sink.getvalue().to_pybytes(), f"file|{store_id}|{rel}".encode())
    path = root / rel
    with io_errors("mkdir", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    _fs.write_atomic(path, data)
    return {"file": rel, "rows": table.num_rows, "bytes": len(data), "crc32c": crc32c.crc32c(data)}


def read_table(root: Path, entry: dict[str, Any], codec: Codec, store_id: str) -> pa.Table:
    """Read and verify one file listed in the manifest."""
    rel = entry["file"]
    path = root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptionError("file listed in the manifest is missing", path=str(path)) from None
    except OSError as exc:
        raise CorruptionError(f"cannot read: {exc}", path=str(path)) from None
    if len(data) != entry["bytes"] or crc32c.crc32c(data) != entry["crc32c"]:
        raise CorruptionError("checksum mismatch (file changed or damaged)", path=str(path))
    try:
        plain = codec.open(data, f"file|{store_id}|{rel}".encode())
    except TamperedError as exc:
        raise CorruptionError(f"fails authentication: {exc}", path=str(path)) from None
    try:
        table = pq.read_table(pa.BufferReader(plain))
    except Exception as exc:
        raise CorruptionError(f"not a readable Parquet file: {exc}", path=str(path)) from None
    if table.num_rows != entry["rows"]:
        raise CorruptionError("row count differs from the manifest", path=str(path))
    return table


def closings_table(version_ids: np.ndarray, tx_to: np.ndarray) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(version_ids, pa.int64()), pa.array(tx_to, pa.int64())], schema=CLOSINGS_SCHEMA
    )
