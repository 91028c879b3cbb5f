"""Bulk import: stream a JSONL or Parquet file into a store in batches, resumably.

Each row is an object with the keys of :meth:`aether.Memory.add` (``content`` required;
``tags``, ``metadata``, ``valid_from``, ``valid_to``, ``atom_id``, ``subject``, ``modality``,
``quality_score``, ``content_metadata``, ``vector``). Rows are read in batches, embedded in
batches (rows with a ``vector`` skip the model) and committed one transaction per batch.
Each batch goes through the columnar path (:mod:`aether.ingest.columns`: a Parquet record
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

The modules: :mod:`.rows` (one row's values as a put operation), :mod:`.readers` (JSONL and
Parquet in resumable chunks), :mod:`.columns` (a chunk as ``add_columns`` columns),
:mod:`.resume` (the checkpoint file); this one runs the import.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ImportFailedError, InvalidInputError
from . import columns as ingest_columns
from .columns import Columns
from .readers import (
    Chunk,
    Row,
    detect_format,
    jsonl_chunks,
    parquet_chunks,
    parquet_rows,
    read_batch,
    read_jsonl,
    read_parquet,
)
from .resume import IMPORT_DIR as IMPORT_DIR  # (where resume checkpoints live)
from .resume import Checkpoint, landed
from .rows import to_op

if TYPE_CHECKING:
    from ..api import Memory
    from ..engine.txplan import Op, PutOp

#: Rows per transaction (and per embedding call).
DEFAULT_BATCH_ROWS = 1024
#: The report lists the imported atom ids up to this many rows.
ATOM_IDS_CAP = 10_000

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
    fmt = detect_format(path, format)
    t0 = time.perf_counter()
    report = ImportReport(file=str(path), format=fmt, atomic=atomic)
    total = path.stat().st_size if fmt == "jsonl" else parquet_rows(path)
    if atomic:
        _import_atomic(mem, path, fmt, batch_rows, report, total, progress)
        report.seconds = time.perf_counter() - t0
        return report
    ck = _checkpoint(mem, path, fmt, resume=resume)
    doc = ck.doc
    report.resumed_rows = int(doc["line"])
    if report.resumed_rows:
        report.atom_ids = None  # the earlier run's ids are not known
    bad: list[list[Any]] = list(doc["bad"])
    imported = start_imported = int(doc["imported"])
    if progress is not None:
        progress(int(doc["offset"]), total)
    chunks = (
        jsonl_chunks(path, int(doc["offset"]), int(doc["line"]) + 1, batch_rows)
        if fmt == "jsonl"
        else parquet_chunks(path, int(doc["offset"]), batch_rows)
    )
    for chunk in chunks:
        imported = _import_chunk(mem, chunk, ck, report, bad, imported, columnar=columnar)
        if progress is not None:
            progress(chunk.end, total)
    ck.reset()  # done: a later import of the same file is a new import, not a resumption
    report.imported = imported - start_imported
    report.bad = [BadRow(int(b[0]), str(b[1])) for b in bad]
    report.seconds = time.perf_counter() - t0
    return report


def _checkpoint(mem: Memory, path: Path, fmt: str, *, resume: bool) -> Checkpoint:
    """The file's checkpoint, loaded (``resume``) or cleared; a batch the last run was committing when it
    died counts as done if it landed, else it is imported again."""
    ck = Checkpoint(mem.engine.path, path, fmt)
    if resume:
        ck.load()
    else:
        ck.reset()
    doc = ck.doc
    pend = doc.get("pending")
    if pend is not None:
        if landed(mem, pend):
            doc.update(offset=pend["offset"], line=pend["line"], imported=pend["imported"], bad=pend["bad"])
        doc["pending"] = None
    return ck


def _import_chunk(
    mem: Memory, chunk: Chunk, ck: Checkpoint, report: ImportReport, bad: list[list[Any]], imported: int,
    *, columnar: bool,
) -> int:
    """Commit one chunk (its bad rows added to ``bad``), the checkpoint naming it while it commits and
    moved past it after; returns the rows imported so far."""
    doc = ck.doc
    batch, lines, errs = _prepare(mem, chunk, columnar=columnar)
    bad.extend([ln, msg] for ln, msg in sorted(chunk.parse_errors + errs))
    if len(lines):
        last_id = batch.atom_ids[-1] if isinstance(batch, Columns) else batch[-1].atom_id
        doc["pending"] = {
            "tx_before": mem.engine.snapshot.last_tx, "atom_id": last_id,
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
    return imported


def _note_ids(report: ImportReport, ids: list[str]) -> None:
    if report.atom_ids is not None:
        report.atom_ids.extend(ids)
        if len(report.atom_ids) > ATOM_IDS_CAP:
            report.atom_ids = None


def _prepare(
    mem: Memory, chunk: Chunk, *, columnar: bool = True
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
        rows = list(read_batch(chunk.batch, chunk.first_row))
    else:
        assert chunk.items is not None and chunk.lines is not None
        rows = [Row(ln, it, 0) for ln, it in zip(chunk.lines, chunk.items, strict=True)]
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
    rows = read_jsonl(path, 0, 1) if fmt == "jsonl" else read_parquet(path, 0, batch_rows)
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
