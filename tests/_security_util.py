"""Helpers for the security and erasure tests: scan every file of a store for secrets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def decoded_parquet(path: Path) -> bytes:
    """Every string and vector value of a (plain) Parquet file, as bytes (zstd can hide raw literals)."""
    try:
        table = pq.read_table(path)
    except Exception:  # encrypted files are not Parquet at all
        return b""
    out = []
    for name in table.column_names:
        col = table.column(name)
        if name == "vector" and col.type.id == pa.binary(4).id:  # segments store vectors as fixed-size binary
            out.append(b"".join(col.to_pylist()))
        elif name == "vector":
            vals = col.combine_chunks().values.to_numpy(zero_copy_only=False)
            out.append(np.asarray(vals, np.float32).tobytes())
        else:
            out.append(repr(col.to_pylist()).encode())
    return b"\n".join(out)


def find_secret(root: Path, needles: list[bytes]) -> list[str]:
    """``file: needle`` for each needle found in a file's raw bytes or in its decoded Parquet values."""
    hits = []
    for p in files_of(root):
        raw = p.read_bytes()
        dec = decoded_parquet(p) if p.suffix == ".parquet" else b""
        for n in needles:
            if n in raw or n in dec:
                hits.append(f"{p.relative_to(root)}: {n[:24]!r}")
    return hits


def flip_byte(path: Path, offset: int | None = None) -> int:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))
    return at


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "LOCK").unlink(missing_ok=True)
    return dst


def snapshot_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in files_of(root)}
