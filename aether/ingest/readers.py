"""Reading an import file: JSONL lines or Parquet record batches, in chunks that resume at an offset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .rows import vector_rows


@dataclass
class Row:
    line: int
    item: Any  # a parsed object, or an error message (str) for a row that did not parse
    end: int  # resume position after this row: byte offset (JSONL) or row count (Parquet)
    ok: bool = True


def read_jsonl(path: Path, offset: int, first_line: int) -> Iterator[Row]:
    with path.open("rb") as fh:
        fh.seek(offset)
        pos = offset
        for lineno, raw in enumerate(fh, start=first_line):
            pos += len(raw)
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except UnicodeDecodeError as exc:
                yield Row(lineno, f"not UTF-8 text ({exc.reason})", pos, ok=False)
                continue
            except ValueError as exc:
                yield Row(lineno, f"malformed JSON ({exc})", pos, ok=False)
                continue
            yield Row(lineno, item, pos)


def read_parquet(path: Path, offset: int, batch_rows: int) -> Iterator[Row]:
    for chunk in parquet_chunks(path, offset, batch_rows):
        yield from read_batch(chunk.batch, chunk.first_row)


def read_batch(batch: Any, row0: int) -> Iterator[Row]:
    """The rows of a Parquet record batch whose first row is (0-based) file row ``row0``."""
    vecs = vector_rows(batch)
    if vecs is not None:
        batch = batch.drop_columns(["vector"])
    for i, rec in enumerate(batch.to_pylist()):
        if vecs is not None and vecs[i] is not None:
            rec["vector"] = vecs[i]
        yield Row(row0 + i + 1, rec, row0 + i + 1)


@dataclass
class Chunk:
    """A batch of an import file: parsed JSONL objects or one Parquet record batch, and where it ends."""

    end: int  # resume position after the chunk
    last_line: int
    parse_errors: list[tuple[int, str]]
    items: list[Any] | None = None  # JSONL: parsed objects ...
    lines: list[int] | None = None  # ... and their line numbers
    batch: Any = None  # Parquet: a record batch ...
    first_row: int = 0  # ... and the (0-based) file row of its first row


def jsonl_chunks(path: Path, offset: int, first_line: int, batch_rows: int) -> Iterator[Chunk]:
    items: list[Any] = []
    lines: list[int] = []
    errors: list[tuple[int, str]] = []
    end, last = offset, first_line - 1
    for row in read_jsonl(path, offset, first_line):
        end, last = row.end, row.line
        if row.ok:
            items.append(row.item)
            lines.append(row.line)
        else:
            errors.append((row.line, str(row.item)))
        if len(items) >= batch_rows:
            yield Chunk(end, last, errors, items=items, lines=lines)
            items, lines, errors = [], [], []
    yield Chunk(path.stat().st_size, last, errors, items=items, lines=lines)


def parquet_chunks(path: Path, offset: int, batch_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    row0 = 0
    for rg in range(pf.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if row0 + n <= offset:  # a whole row group done by an earlier run: do not even read it
            row0 += n
            continue
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[rg]):
            m = batch.num_rows
            if row0 + m > offset:
                skip = max(0, offset - row0)
                part = batch.slice(skip) if skip else batch
                yield Chunk(row0 + m, row0 + m, [], batch=part, first_row=row0 + skip)
            row0 += m


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in ("jsonl", "parquet"):
            raise InvalidInputError(f"unknown import format {fmt!r}; use 'jsonl' or 'parquet'")
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with path.open("rb") as fh:
        return "parquet" if fh.read(4) == b"PAR1" else "jsonl"


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:
        raise InvalidInputError(f"{path}: not a readable Parquet file ({exc})") from None
