"""Bulk import: stream a JSONL or Parquet file into a store in batches, resumably.

Each row is an object with the keys of :meth:`aether.Memory.add` (``content`` required;
``tags``, ``metadata``, ``valid_from``, ``valid_to``, ``atom_id``, ``subject``, ``modality``,
``quality_score``, ``content_metadata``, ``vector``). Rows are read in batches, embedded in
batches (rows with a ``vector`` skip the model) and committed one transaction per batch.
Each batch goes through the columnar path (:mod:`aether.ingest_columns`: a Parquet record
batch's columns straight into :meth:`aether.Memory.add_columns`); a batch it cannot convert
exactly, or one the engine rejects, is imported row by row as before, with the same result.

Bad rows (malformed JSON, a missing ``content``, an invalid time or vector...) are reported
with their 1-based line number (JSONL) or row number (Parquet); by default they are skipped
and everything else is imported. With ``atomic=True`` the whole file is one transaction:
any bad row fails the import and nothing is written.

Resumption: after each committed batch, ``<store>/import/<key>.json`` records how far the
file is done (``key`` hashes the file's absolute path, size and mtime, so an edited file
starts over); it is removed when the import completes. Before a batch commits, the
checkpoint also names the batch's last atom and the store's last transaction time, so a
process killed between the commit and the checkpoint update can tell on restart whether
that batch landed: nothing is imported twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import ingest_columns
from ._time import from_us_strict, to_us
from .api import ITEM_KEYS
from .errors import ImportFailedError, InvalidInputError, InvalidVectorError
from .ingest_columns import Columns
from .storage._fs import write_atomic

if TYPE_CHECKING:
    from .api import Memory
    from .engine.txplan import Op, PutOp

#: Rows per transaction (and per embedding call).
DEFAULT_BATCH_ROWS = 1024
#: The report lists the imported atom ids up to this many rows.
ATOM_IDS_CAP = 10_000
IMPORT_DIR = "import"
_TIME_KEYS = ("valid_from", "valid_to")

#: ``progress(done, total)``: bytes of a JSONL file, rows of a Parquet file.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class BadRow:
    """A row that was not imported: its 1-based line (JSONL) or row (Parquet) number and why."""

    line: int
    error: str


@dataclass
class ImportReport:
    """What an import did."""

    file: str
    format: str
    imported: int = 0
    bad: list[BadRow] = field(default_factory=list)
    #: Rows (lines) already done by an earlier, interrupted run and skipped now.
    resumed_rows: int = 0
    atomic: bool = False
    #: Atom ids written, in file order (``None`` past ``ATOM_IDS_CAP`` rows or for a resumed import).
    atom_ids: list[str] | None = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.imported / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "imported": self.imported,
            "bad": [{"line": b.line, "error": b.error} for b in self.bad],
            "resumed_rows": self.resumed_rows,
            "atomic": self.atomic,
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------- row -> operation


def _time(value: Any, name: str) -> Any:
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


def _json_field(value: Any, name: str) -> Any:
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
            item[key] = _time(item[key], key)
    unit = item.pop("vector") if isinstance(item.get("vector"), _Unit) else None
    tags = _json_field(item["tags"], "tags") if "tags" in item else None
    if tags is not None and not isinstance(tags, Mapping):
        raise InvalidInputError("tags must be an object")
    if unit is not None and unit.v.shape[0] != mem.engine.embedder.dim:
        raise InvalidVectorError(f"expected vectors of dimension {mem.engine.embedder.dim}, got {unit.v.shape[0]}")
    op = mem.prepare_put(
        item["content"],
        tags=dict(tags) if tags is not None else None,
        metadata=_json_field(item["metadata"], "metadata") if "metadata" in item else None,
        valid_from=item.get("valid_from"),
        valid_to=item.get("valid_to"),
        modality=item.get("modality", "text"),
        subject=item.get("subject", "default"),
        quality_score=item.get("quality_score", 1.0),
        atom_id=item.get("atom_id"),
        vector=item.get("vector"),
        content_metadata=_json_field(item["content_metadata"], "content_metadata")
        if "content_metadata" in item
        else None,
    )
    if unit is not None:
        op.vector = unit.v
    return op


# ---------------------------------------------------------------------------- readers


@dataclass
class _Row:
    line: int
    item: Any  # a parsed object, or an error message (str) for a row that did not parse
    end: int  # resume position after this row: byte offset (JSONL) or row count (Parquet)
    ok: bool = True


def _read_jsonl(path: Path, offset: int, first_line: int) -> Iterator[_Row]:
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
                yield _Row(lineno, f"not UTF-8 text ({exc.reason})", pos, ok=False)
                continue
            except ValueError as exc:
                yield _Row(lineno, f"malformed JSON ({exc})", pos, ok=False)
                continue
            yield _Row(lineno, item, pos)


def _read_parquet(path: Path, offset: int, batch_rows: int) -> Iterator[_Row]:
    for chunk in _parquet_chunks(path, offset, batch_rows):
        yield from _read_batch(chunk.batch, chunk.first_row)


def _read_batch(batch: Any, row0: int) -> Iterator[_Row]:
    """The rows of a Parquet record batch whose first row is (0-based) file row ``row0``."""
    vecs = _vector_rows(batch)
    if vecs is not None:
        batch = batch.drop_columns(["vector"])
    for i, rec in enumerate(batch.to_pylist()):
        if vecs is not None and vecs[i] is not None:
            rec["vector"] = vecs[i]
        yield _Row(row0 + i + 1, rec, row0 + i + 1)


@dataclass
class _Chunk:
    """A batch of an import file: parsed JSONL objects or one Parquet record batch, and where it ends."""

    end: int  # resume position after the chunk
    last_line: int
    parse_errors: list[tuple[int, str]]
    items: list[Any] | None = None  # JSONL: parsed objects ...
    lines: list[int] | None = None  # ... and their line numbers
    batch: Any = None  # Parquet: a record batch ...
    first_row: int = 0  # ... and the (0-based) file row of its first row


def _jsonl_chunks(path: Path, offset: int, first_line: int, batch_rows: int) -> Iterator[_Chunk]:
    items: list[Any] = []
    lines: list[int] = []
    errors: list[tuple[int, str]] = []
    end, last = offset, first_line - 1
    for row in _read_jsonl(path, offset, first_line):
        end, last = row.end, row.line
        if row.ok:
            items.append(row.item)
            lines.append(row.line)
        else:
            errors.append((row.line, str(row.item)))
        if len(items) >= batch_rows:
            yield _Chunk(end, last, errors, items=items, lines=lines)
            items, lines, errors = [], [], []
    yield _Chunk(path.stat().st_size, last, errors, items=items, lines=lines)


def _parquet_chunks(path: Path, offset: int, batch_rows: int) -> Iterator[_Chunk]:
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
                yield _Chunk(row0 + m, row0 + m, [], batch=part, first_row=row0 + skip)
            row0 += m


class _Unit:
    """A vector the reader already validated and normalised in bulk (``to_op`` takes it as it is)."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v


def _vector_rows(batch: Any) -> list[Any] | None:
    """The ``vector`` column of a Parquet batch as per-row values, normalised in one numpy pass.

    Fixed-size float lists (the usual layout) become :class:`_Unit` rows; rows that are null, not
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
    return [_Unit(unit[i]) if ok[i] else arr[i].tolist() for i in range(n)]


def _detect_format(path: Path, fmt: str | None) -> str:
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


# ---------------------------------------------------------------------------- checkpoint


class _Checkpoint:
    def __init__(self, store: Path | None, path: Path, fmt: str) -> None:
        st = path.stat()
        ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        name = hashlib.sha256(ident.encode()).hexdigest()[:24] + ".json"
        self.file = None if store is None else store / IMPORT_DIR / name
        self.doc: dict[str, Any] = {
            "file": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "format": fmt,
            "offset": 0, "line": 0, "imported": 0, "bad": [], "pending": None,
        }

    def load(self) -> None:
        if self.file is None or not self.file.exists():
            return
        try:
            doc = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return  # a damaged checkpoint: start over (rows carry no duplicate risk until the first commit)
        if doc.get("file") == self.doc["file"] and doc.get("size") == self.doc["size"]:
            self.doc.update(doc)

    def save(self) -> None:
        if self.file is None:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.file, json.dumps(self.doc, sort_keys=True).encode())

    def reset(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)


def _landed(mem: Memory, pending: Mapping[str, Any]) -> bool:
    """Did the batch described by ``pending`` commit before the process died?"""
    eng = mem.engine
    t = eng.table
    code = t.atom_index.get(pending["atom_id"])
    if code is None:
        return False
    return any(int(t.tx_from[r]) > int(pending["tx_before"]) for r in t.atom_rows.get(code, ()))


# ---------------------------------------------------------------------------- import


def import_file(
    mem: Memory,
    file: str | Path,
    *,
    format: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    atomic: bool = False,
    resume: bool = True,
    progress: ProgressFn | None = None,
    columnar: bool = True,
) -> ImportReport:
    """Import a JSONL or Parquet file into ``mem`` (see the module docstring for the row format).

    Parameters
    ----------
    mem
        An open, writable store.
    file
        ``.jsonl``/``.ndjson`` or ``.parquet``; other names are sniffed.
    format
        Force ``"jsonl"`` or ``"parquet"``.
    batch_rows
        Rows per transaction and per embedding call.
    atomic
        All-or-nothing: one transaction; any bad row raises ``ImportFailedError`` and nothing is written.
    resume
        Continue an interrupted import of the same (unchanged) file; ``False`` starts over.
    progress
        ``progress(done, total)`` in bytes (JSONL) or rows (Parquet).
    columnar
        Commit each batch through :meth:`aether.Memory.add_columns` (the default); ``False`` builds one
        operation per row (the earlier path, kept as the benchmark's baseline). Both store the same.

    Returns
    -------
    ImportReport
        Rows imported and the bad rows (line numbers and reasons).
    """
    mem.check_writable()
    path = Path(file)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInputError("batch_rows must be a positive int")
    fmt = _detect_format(path, format)
    t0 = time.perf_counter()
    report = ImportReport(file=str(path), format=fmt, atomic=atomic)
    total = path.stat().st_size if fmt == "jsonl" else _parquet_rows(path)
    if atomic:
        _import_atomic(mem, path, fmt, batch_rows, report, total, progress)
        report.seconds = time.perf_counter() - t0
        return report
    ck = _Checkpoint(mem.engine.path, path, fmt)
    if resume:
        ck.load()
    else:
        ck.reset()
    doc = ck.doc
    pend = doc.get("pending")
    if pend is not None:
        if _landed(mem, pend):
            doc.update(offset=pend["offset"], line=pend["line"], imported=pend["imported"], bad=pend["bad"])
        doc["pending"] = None
    report.resumed_rows = int(doc["line"])
    if report.resumed_rows:
        report.atom_ids = None  # the earlier run's ids are not known
    bad: list[list[Any]] = list(doc["bad"])
    imported = start_imported = int(doc["imported"])
    if progress is not None:
        progress(int(doc["offset"]), total)
    chunks = (
        _jsonl_chunks(path, int(doc["offset"]), int(doc["line"]) + 1, batch_rows)
        if fmt == "jsonl"
        else _parquet_chunks(path, int(doc["offset"]), batch_rows)
    )
    for chunk in chunks:
        batch, lines, errs = _prepare(mem, chunk, columnar=columnar)
        bad.extend([ln, msg] for ln, msg in sorted(chunk.parse_errors + errs))
        eng = mem.engine
        if len(lines):
            last_id = batch.atom_ids[-1] if isinstance(batch, Columns) else batch[-1].atom_id
            doc["pending"] = {
                "tx_before": eng.snapshot.last_tx, "atom_id": last_id,
                "offset": chunk.end, "line": chunk.last_line, "imported": imported + len(lines), "bad": bad,
            }
            ck.save()
            ids, cerrs = _commit(mem, batch, lines)
            for ln, msg in cerrs:
                bad.append([ln, msg])
            imported += len(ids)
            _note_ids(report, ids)
        doc.update(offset=chunk.end, line=chunk.last_line, imported=imported, bad=bad, pending=None)
        ck.save()
        if progress is not None:
            progress(chunk.end, total)
    ck.reset()  # done: a later import of the same file is a new import, not a resumption
    report.imported = imported - start_imported
    report.bad = [BadRow(int(b[0]), str(b[1])) for b in bad]
    report.seconds = time.perf_counter() - t0
    return report


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:
        raise InvalidInputError(f"{path}: not a readable Parquet file ({exc})") from None


def _note_ids(report: ImportReport, ids: list[str]) -> None:
    if report.atom_ids is not None:
        report.atom_ids.extend(ids)
        if len(report.atom_ids) > ATOM_IDS_CAP:
            report.atom_ids = None


def _prepare(
    mem: Memory, chunk: _Chunk, *, columnar: bool = True
) -> tuple[Columns | list[PutOp], list[int], list[tuple[int, str]]]:
    """A chunk as ``add_columns`` columns (or, where that cannot be exact, per-row operations), the
    line numbers of its rows, and ``(line, error)`` of the rows that are bad."""
    try:
        if not columnar:
            raise ingest_columns.Fallback
        if chunk.batch is not None:
            cols, errs = ingest_columns.from_arrow(mem, chunk.batch, chunk.first_row)
        else:
            assert chunk.items is not None and chunk.lines is not None
            cols, errs = ingest_columns.from_items(mem, chunk.items, chunk.lines)
        return cols, cols.lines, errs
    except ingest_columns.Fallback:
        pass
    if chunk.batch is not None:  # row by row, as before the columnar path
        rows = list(_read_batch(chunk.batch, chunk.first_row))
    else:
        assert chunk.items is not None and chunk.lines is not None
        rows = [_Row(ln, it, 0) for ln, it in zip(chunk.lines, chunk.items, strict=True)]
    ops: list[PutOp] = []
    lines: list[int] = []
    errors: list[tuple[int, str]] = []
    for row in rows:
        try:
            ops.append(to_op(mem, row.item))
            lines.append(row.line)
        except InvalidInputError as exc:
            errors.append((row.line, str(exc)))
    return ops, lines, errors


def _commit(
    mem: Memory, ops: Columns | list[PutOp], lines: list[int]
) -> tuple[list[str], list[tuple[int, str]]]:
    """Commit ``ops`` as one transaction; if the engine rejects it, split to find the bad rows.

    ``ops`` is a column batch (one ``add_columns`` call) or per-row operations. Returns the atom
    ids written and ``(line, error)`` for the rows the engine rejected.
    """
    if isinstance(ops, Columns):
        try:
            mem.add_columns(**ops.kwargs)
            return ops.atom_ids, []
        except InvalidInputError:
            pass  # some row is rejected (at validation or at commit): find which, row by row
        row_ops: list[PutOp] = []
        row_lines: list[int] = []
        errs: list[tuple[int, str]] = []
        for i, ln in enumerate(ops.lines):
            try:
                row_ops.append(ops.item(i))
                row_lines.append(ln)
            except InvalidInputError as exc:
                errs.append((ln, str(exc)))
        ids, more = _commit(mem, row_ops, row_lines) if row_ops else ([], [])
        return ids, sorted(errs + more)
    eng = mem.engine
    try:
        batch: list[Op] = list(ops)
        eng.commit(batch)
        return [op.atom_id for op in ops], []
    except InvalidInputError as exc:
        if len(ops) == 1:
            return [], [(lines[0], str(exc))]
    mid = len(ops) // 2
    a, ea = _commit(mem, ops[:mid], lines[:mid])
    b, eb = _commit(mem, ops[mid:], lines[mid:])
    return a + b, ea + eb


def _import_atomic(
    mem: Memory, path: Path, fmt: str, batch_rows: int, report: ImportReport, total: int,
    progress: ProgressFn | None,
) -> None:
    rows = _read_jsonl(path, 0, 1) if fmt == "jsonl" else _read_parquet(path, 0, batch_rows)
    ops: list[PutOp] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    for row in rows:
        if not row.ok:
            bad.append(BadRow(row.line, str(row.item)))
            continue
        try:
            ops.append(to_op(mem, row.item))
            lines.append(row.line)
        except InvalidInputError as exc:
            bad.append(BadRow(row.line, str(exc)))
        if progress is not None and len(ops) % batch_rows == 0:
            progress(row.end // 2, total)  # parsing is the first half of the work
    if bad:
        report.bad = bad
        shown = "; ".join(f"line {b.line}: {b.error}" for b in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ImportFailedError(f"{path}: {len(bad)} bad rows, nothing imported: {shown}{more}", bad)
    eng = mem.engine
    for s in range(0, len(ops), batch_rows):  # embed in batches (outside any lock), then one commit
        chunk: list[Op] = list(ops[s : s + batch_rows])
        eng.embed_missing(chunk)
        if progress is not None:
            progress(total // 2 + (total - total // 2) * min(s + batch_rows, len(ops)) // max(len(ops), 1), total)
    if ops:
        try:
            whole: list[Op] = list(ops)
            eng.commit(whole)
        except InvalidInputError as exc:
            # Find which row the engine rejected, for the report; still nothing is written.
            raise ImportFailedError(f"{path}: the import was rejected, nothing imported: {exc}", bad) from None
    report.imported = len(ops)
    _note_ids(report, [op.atom_id for op in ops])
    if progress is not None:
        progress(total, total)


__all__ = ["BadRow", "ImportFailedError", "ImportReport", "import_file", "to_op"]
