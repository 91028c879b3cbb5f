"""Maintenance commands: ``reindex`` (switch models offline), ``import`` (bulk load JSONL / Parquet) and
``compact`` (rewrite the segments without erased rows; merge policy, retention).

``reindex`` and ``import`` are long-running: they show a rich progress bar with the rate and the time left, and both
resume where an interrupted run stopped (run the same command again).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ._app import console, err_console
from ._core import KeyFileOpt, open_store

StoreArg = Annotated[Path, typer.Argument(help="The store directory.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
MAX_BAD_SHOWN = 20


@contextmanager
def _bar(description: str, *, unit: str, enabled: bool) -> Any:
    """A rich progress bar on a terminal's stderr (none when piped); yields ``update(done, total)``."""
    if not enabled or not err_console.is_terminal:
        yield lambda done, total: None
        return
    rate: Any = (
        TransferSpeedColumn() if unit == "bytes" else TextColumn("[cyan]{task.fields[rate]:>10}", justify="right")
    )
    count: Any = TextColumn("") if unit == "bytes" else MofNCompleteColumn()
    cols = (
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), count, rate,
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )
    with Progress(*cols, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=None, rate="")

        def update(done: int, total: int) -> None:
            t = progress.tasks[0]
            speed = t.speed
            progress.update(task, completed=done, total=total, rate=f"{speed:,.0f} {unit}/s" if speed else "")

        yield update


# ---------------------------------------------------------------------------- reindex


def cmd_reindex(
    path: StoreArg,
    model: Annotated[
        str | None,
        typer.Option("--model", help="New model: a name from models/ (e.g. all-MiniLM-L6-v2) or hashing:DIM."),
    ] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="Index recipe from indexes/ to record.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="Batch engine: local or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address (with --engine ray); default: local Ray.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Local worker processes, or Ray embedding actors.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per embedding call.")] = 256,
    key_file: KeyFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-embed every version of the store at PATH with a new model, then swap it in atomically.

    The store stays usable meanwhile (other processes can read it). Interrupted, the same
    command resumes from the parts already done.
    """
    from ..embed import embedder_for

    if engine not in ("local", "ray"):
        from ..errors import ConfigError

        raise ConfigError(f"unknown engine {engine!r}; use local or ray")
    new = embedder_for(model) if model is not None else None
    with open_store(path, key_file=key_file) as mem, _bar(
        f"reindex → {(new or mem.embedder).identity}", unit="rows", enabled=not as_json
    ) as update:
        res = mem.reindex(
            embedder=new, recipe=recipe, engine=engine, address=address, workers=workers,
            batch_size=batch_size, progress=update,
        )
    doc = {
        "generation": res.generation, "model": res.model, "dim": res.dim, "rows": res.rows, "parts": res.parts,
        "resumed_parts": res.resumed_parts, "engine": res.engine, "seconds": round(res.seconds, 3),
        "rows_per_s": round(res.rows_per_s, 1),
    }
    if as_json:
        import json

        console.print_json(json.dumps(doc))
    else:
        resumed = f" ({res.resumed_parts} parts resumed)" if res.resumed_parts else ""
        console.print(
            f"Re-indexed {res.rows} versions with {res.model} in {res.seconds:.1f}s "
            f"({res.rows_per_s:,.0f}/s, {res.engine}){resumed}: generation {res.generation}",
            highlight=False,
        )


# ---------------------------------------------------------------------------- import


def cmd_import(
    path: StoreArg,
    file: Annotated[
        Path, typer.Argument(help="A JSONL file (one memory object per line) or a Parquet file.", show_default=False)
    ],
    atomic: Annotated[
        bool, typer.Option("--atomic", help="All or nothing: one transaction; any bad line fails the import.")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or parquet (default: from the file name).")
    ] = None,
    batch_rows: Annotated[int, typer.Option("--batch-rows", min=1, help="Rows per transaction.")] = 1024,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore the checkpoint of an earlier run of this file.")
    ] = False,
    key_file: KeyFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a JSONL or Parquet file into the store at PATH, streaming, in batches.

    Each row has the keys of Memory.add: content (required), tags, metadata, valid_from, valid_to,
    atom_id, subject, modality, quality_score, content_metadata, vector (pre-computed embeddings
    skip the model). Bad lines are skipped and reported with their line numbers (with --atomic,
    one bad line fails the import and nothing is written). An interrupted import resumes where
    it stopped when run again; the store must exist (`aether init`).
    """
    from ..ingest import import_file

    if not file.is_file():
        from ..errors import InvalidInputError

        raise InvalidInputError(f"{file}: no such file")
    with open_store(path, key_file=key_file) as mem:
        unit = "bytes" if (fmt or "") != "parquet" and file.suffix.lower() not in (".parquet", ".pq") else "rows"
        with _bar(f"import {file.name}", unit=unit, enabled=not as_json) as update:
            rep = import_file(
                mem, file, format=fmt, batch_rows=batch_rows, atomic=atomic, resume=not restart, progress=update
            )
        last = mem.last_commit
    if as_json:
        import json

        doc = rep.to_dict()
        if rep.atom_ids is not None:
            doc["atom_ids"] = rep.atom_ids
        doc["tx"] = last.isoformat() if last and rep.imported else None
        console.print_json(json.dumps(doc))
        return
    resumed = f", resumed after {rep.resumed_rows} rows" if rep.resumed_rows else ""
    console.print(
        f"Imported {rep.imported} memories from {file} into {path} in {rep.seconds:.1f}s "
        f"({rep.rows_per_s:,.0f}/s{resumed})",
        highlight=False,
    )
    if rep.bad:
        err_console.print(f"[yellow]skipped {len(rep.bad)} bad line(s):[/]", highlight=False)
        for b in rep.bad[:MAX_BAD_SHOWN]:
            err_console.print(f"  line {b.line}: {b.error}", highlight=False, markup=False)
        if len(rep.bad) > MAX_BAD_SHOWN:
            err_console.print(f"  ... and {len(rep.bad) - MAX_BAD_SHOWN} more (--json lists all)", highlight=False)


def cmd_compact(
    path: Annotated[Path, typer.Argument(help="Store directory.")],
    key_file: KeyFileOpt = None,
    merge_below: Annotated[
        int | None, typer.Option("--merge-below", min=1, help="Only rewrite segments under N rows (and merge them).")
    ] = None,
    retain_days: Annotated[
        float | None, typer.Option("--retain-days", min=0, help="Drop versions closed more than DAYS ago.")
    ] = None,
) -> None:
    """Rewrite the store's segments without erased rows and vectors (optionally: merge policy, retention)."""
    from datetime import timedelta

    with open_store(path, key_file=key_file) as mem:
        retain = timedelta(days=retain_days) if retain_days is not None else None
        c = mem.compact(merge_below=merge_below, retain=retain)
        console.print(
            f"compacted: {c.rows_before} -> {c.rows_after} rows, {c.files_removed} file(s) removed, "
            f"{c.bytes_before} -> {c.bytes_after} bytes"
        )


def register(app: typer.Typer) -> None:
    """Add the maintenance commands to the ``aether`` app."""
    app.command("reindex")(cmd_reindex)
    app.command("import")(cmd_import)
    app.command("compact")(cmd_compact)
