"""The demo runner: ingest the shipped team data set in three transactions, then ask questions at
different valid times and as-of transaction times."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..embed import Embedder
from ..errors import ConfigError, StoreError

#: The data set shipped in this package.
DATASET = "team.json"
_MANIFEST = "MANIFEST.json"  # the file that marks a directory as an aether store


@dataclass(frozen=True)
class Answer:
    """The top search hit for one question at one (valid_at, as_of) point."""

    question_id: str
    question: str
    valid_at: datetime
    as_of_label: str
    as_of: datetime | None
    content: str | None
    atom_id: str | None
    score: float | None
    expect: str | None = None
    expect_not: str | None = None


@dataclass
class DemoResult:
    """What :func:`run_demo` did: the store path, the commit time of each phase, and the answers."""

    path: Path
    phases: dict[str, datetime] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    versions_written: int = 0
    seconds: float = 0.0

    def answers_for(self, question_id: str) -> list[Answer]:
        """The answers to one question, in the order they were asked."""
        return [a for a in self.answers if a.question_id == question_id]


def load_dataset(name: str = DATASET) -> dict[str, Any]:
    """The demo data set (phases of operations and questions), read with importlib.resources."""
    try:
        text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"demo data set {name!r} is missing from this installation") from None
    data: dict[str, Any] = json.loads(text)
    return data


def _day(text: str) -> datetime:
    d = date.fromisoformat(text)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _opt_day(text: str | None) -> datetime | None:
    return None if text is None else _day(text)


def _fmt(dt: datetime | None, none: str = "open") -> str:
    if dt is None:
        return none
    if dt.hour == dt.minute == dt.second == dt.microsecond == 0:
        return dt.date().isoformat()
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _history_table(versions: list[Any], phases: dict[str, datetime], *, title: str) -> Table:
    """Versions with their transaction times shown as the phase that wrote / superseded them."""

    def phase_of(tx: datetime | None) -> str:
        if tx is None:
            return "-"
        # a phase's recorded time is its LAST commit, so a tx belongs to the first phase ending at or after it
        return next((label for label, end in phases.items() if tx <= end), _fmt(tx))

    table = Table(title=title, title_justify="left")
    for col in ("content", "valid from", "valid to", "recorded in", "superseded in"):
        table.add_column(col)
    for a in versions:
        table.add_row(Text(a.content.inline), _fmt(a.valid_from), _fmt(a.valid_to), phase_of(a.tx_from),
                      phase_of(a.tx_to), style=None if a.tx_to is None else "dim")
    return table


def _prepare(path: Path, reset: bool) -> None:
    if not path.exists():
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    if not reset:
        raise StoreError(f"{path} already exists; pass --reset to rebuild the demo store there")
    # Never delete something that is not an aether store (think `aether demo ~ --reset`).
    # (a directory holding only a LOCK file is a store whose creation was interrupted)
    if not (path.is_dir() and ((path / _MANIFEST).is_file() or {p.name for p in path.iterdir()} <= {"LOCK"})):
        raise StoreError(f"refusing to delete {path}: it is not an aether store")
    shutil.rmtree(path)


def _item(op: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "content": op["content"], "atom_id": op["atom_id"], "valid_from": _day(op["valid_from"]),
    }
    if op.get("valid_to"):
        item["valid_to"] = _day(op["valid_to"])
    if op.get("tags"):
        item["tags"] = op["tags"]
    return item


def _apply_phase(mem: Any, ops: list[dict[str, Any]]) -> int:
    """Apply one phase; consecutive adds go in one add_many transaction. Returns versions written."""
    written = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal written
        if batch:
            written += len(mem.add_many(batch))
            batch.clear()

    for op in ops:
        kind = op["op"]
        if kind == "add":
            batch.append(_item(op))
            continue
        flush()
        if kind == "correct":
            mem.correct(op["atom_id"], op["content"], valid_from=_day(op["valid_from"]),
                        valid_to=_opt_day(op.get("valid_to")))
            written += 1
        elif kind == "retract":
            mem.retract(op["atom_id"], at=_day(op["at"]))
        elif kind == "delete":
            mem.delete(op["atom_id"])
        else:
            raise ConfigError(f"demo data set: unknown op {kind!r}")
    flush()
    return written


def run_demo(
    path: str | os.PathLike[str] = "demo-store",
    *,
    reset: bool = False,
    embedder: Embedder | None = None,
    console: Console | None = None,
    dataset: str = DATASET,
) -> DemoResult:
    """Build the demo store at ``path`` and print answers that change with valid and transaction time.

    Parameters
    ----------
    path
        Store directory; it must not exist (or be empty) unless ``reset`` is set.
    reset
        Delete an existing aether store at ``path`` first (anything else there is refused).
    embedder
        Default: the store's default model, all-MiniLM-L6-v2 (offline). Tests pass a HashingEmbedder.
    console
        Where to print (default: a new rich console on stdout).

    Returns
    -------
    DemoResult
        The commit time of each phase and every answer, for tests and for callers that print differently.
    """
    import aether

    out = console or Console()
    data = load_dataset(dataset)
    root = Path(path)
    _prepare(root, reset)
    started = time.perf_counter()
    result = DemoResult(path=root)

    out.print(Panel(Text(data["description"]), title=f"aether demo: {data['name']}", expand=False))
    phases = Table(title="ingest: each phase is recorded at its own transaction time", title_justify="left")
    for col in ("phase", "what", "ops", "recorded at (tx time)"):
        phases.add_column(col)
    with aether.open(root, embedder=embedder) as mem:
        with out.status("loading the model and ingesting..."):
            for phase in data["phases"]:
                result.versions_written += _apply_phase(mem, phase["ops"])
                tx = mem.last_commit
                assert tx is not None
                result.phases[phase["label"]] = tx
                phases.add_row(phase["label"], phase["title"], str(len(phase["ops"])), _fmt(tx))
        out.print(phases)
        for phase in data["phases"][1:]:
            for op in phase["ops"]:
                if op.get("note"):
                    out.print(f"  [dim]{phase['label']}:[/] {op['op']} {op['atom_id']}: {op['note']}",
                              highlight=False)
        out.print()
        for q in data["questions"]:
            table = Table(title=f"[bold]{q['ask']}[/]  [dim]({q['shows']})[/]", title_justify="left")
            for col in ("valid at", "as of (transaction time)", "answer", "score"):
                table.add_column(col)
            for point in q["at"]:
                valid_at = _day(point["valid_at"])
                label = point["as_of"]
                as_of = None if label == "latest" else result.phases[label]
                hits = mem.search(q["ask"], 1, valid_at=valid_at, as_of=as_of)
                top = hits[0] if hits else None
                result.answers.append(Answer(
                    question_id=q["id"], question=q["ask"], valid_at=valid_at, as_of_label=label, as_of=as_of,
                    content=top.atom.content.inline if top else None,
                    atom_id=top.atom.atom_id if top else None,
                    score=top.score if top else None, expect=point.get("expect"),
                    expect_not=point.get("expect_not"),
                ))
                when = "now (latest)" if as_of is None else f"after '{label}' ({_fmt(as_of)})"
                table.add_row(_fmt(valid_at), when, Text(top.atom.content.inline if top else "(nothing)"),
                              f"{top.score:.2f}" if top else "")
            out.print(table)
        for atom_id in data.get("history", []):
            title = f"every version of {atom_id!r} (aether history)"
            out.print(_history_table(mem.history(atom_id), result.phases, title=title))
    result.seconds = time.perf_counter() - started
    out.print(
        f"\n{result.versions_written} versions in {len(data['phases'])} phases, "
        f"{len(result.answers)} questions answered in {result.seconds:.1f} s. "
        f"The store is at [bold]{root}[/]; "
        f"try: [cyan]aether search {root} \"who leads the data team?\" --valid-at 2023-06-01[/]",
        highlight=False,
    )
    return result
