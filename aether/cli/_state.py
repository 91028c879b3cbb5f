"""``aether state``: agent state snapshot chains (``list``, ``show``, ``verify``).

Every command takes the store directory first; snapshots live under ``<store>/state/``.
``list`` reads only the plaintext snapshot headers, so it needs no key; ``show`` and ``verify``
decrypt. For an encrypted store they open it read-only with its key (``--key-file`` or
``$AETHER_KEY``, as every command) and use the store's codec; for a plain directory whose chains
were written with ``StatePersistenceManager(key=...)``, ``--key-file`` holds that key (base64,
64 hex characters, or 32 raw bytes).
Times are ISO-8601 with an offset (``Z`` for UTC), or a bare date meaning midnight UTC.
``verify`` exits with status 1 when the chain has a problem.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import (
    InvalidInputError,
    KeyRequiredError,
    SecurityError,
    StoreNotFoundError,
    TamperedError,
    WrongKeyError,
)
from ..state import StatePersistenceManager
from ._app import console
from ._core import parse_time

state_app = typer.Typer(
    name="state",
    help="Agent state snapshot chains: list, show, verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_HEX64 = re.compile(rb"\s*([0-9a-fA-F]{64})\s*")

PathArg = Annotated[Path, typer.Argument(help="Store directory.")]
AgentArg = Annotated[str, typer.Argument(help="Agent id.")]
KeyOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="Key file (base64 as from `aether keygen`, hex, or raw); default $AETHER_KEY."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _key(path: Path | None) -> bytes | None:
    """A key file: base64 text (the format of ``aether keygen``), 64 hex characters, or 32 raw bytes."""
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    m = _HEX64.fullmatch(raw)
    if m:
        return bytes.fromhex(m.group(1).decode())
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = raw
    if len(key) != 32:
        key = raw
    if len(key) != 32:
        raise InvalidInputError(f"key file {path} must hold a 32-byte key (base64, hex or raw)")
    return key


def _manager(
    path: Path, key_file: Path | None, stack: contextlib.ExitStack, *, need_key: bool = True
) -> StatePersistenceManager:
    """The manager for ``show`` / ``verify``: an encrypted store lends its codec, else ``--key-file`` is the key.

    With ``need_key=False`` an encrypted store opened without a key still gets a manager (it can
    check the chain's structure, not decrypt it).
    """
    if not path.is_dir():
        raise StoreNotFoundError(f"no store directory at {path}")
    if (path / "MANIFEST.json").exists():
        import aether

        try:
            # Read-only: no writer lock, so this works while an agent has the store open.
            mem = aether.open(path, create=False, read_only=True, key_file=key_file)
        except KeyRequiredError:
            if need_key or key_file is not None:
                raise
            return StatePersistenceManager(path)
        except (WrongKeyError, TamperedError):
            raise
        except SecurityError:
            pass  # a plain store given a key: the key is the state chains' own (StatePersistenceManager(key=))
        else:
            stack.callback(mem.close)
            if mem.stats().encrypted:
                return StatePersistenceManager(mem)
    return StatePersistenceManager(path, key=_key(key_file))


def _iso(d: datetime | None) -> str:
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z") if d is not None else "-"


def _emit(doc: Any) -> None:
    typer.echo(json.dumps(doc, ensure_ascii=False, indent=2, default=str))


@state_app.command("list")
def cmd_list(
    path: PathArg,
    agent: Annotated[str | None, typer.Argument(help="Show this agent's chain instead of all agents.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List agents with snapshots (or one agent's chain); reads headers only, no key needed."""
    if not path.is_dir():
        raise StoreNotFoundError(f"no store directory at {path}")
    mgr = StatePersistenceManager(path)
    if agent is not None:
        chain = mgr.list_states(agent)
        if as_json:
            _emit([i.to_dict() for i in chain])
            return
        table = Table(title=f"state chain of {agent}")
        for col in ("seq", "state id", "previous", "timestamp", "persisted", "encrypted", "bytes", "status"):
            table.add_column(col)
        for i in chain:
            table.add_row(str(i.seq), i.state_id, i.previous_state_id or "-", _iso(i.timestamp),
                          _iso(i.persisted_at), "yes" if i.encrypted else "no", str(i.size_bytes),
                          "ok" if i.ok else f"BROKEN: {i.problem}")
        console.print(table)
        return
    rows: list[dict[str, Any]] = []
    for a in mgr.list_agents():
        chain = mgr.list_states(a)
        head = chain[-1]
        rows.append({
            "agent_id": a,
            "snapshots": len(chain),
            "head_state_id": head.state_id,
            "last_persisted": head.persisted_at.isoformat() if head.persisted_at else None,
            "encrypted": head.encrypted,
            "broken": sum(1 for i in chain if not i.ok),
        })
    if as_json:
        _emit(rows)
        return
    table = Table(title=f"agents in {path}")
    for col in ("agent", "snapshots", "head state", "last persisted", "encrypted", "broken"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["agent_id"], str(r["snapshots"]), r["head_state_id"], r["last_persisted"] or "-",
                      "yes" if r["encrypted"] else "no", str(r["broken"]))
    console.print(table)


@state_app.command("show")
def cmd_show(
    path: PathArg,
    agent: AgentArg,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Persist time: the state held then.")] = None,
    key_file: KeyOpt = None,
) -> None:
    """Print the agent's latest state (or the one as of a time) as JSON, after checking it."""
    with contextlib.ExitStack() as stack:
        mgr = _manager(path, key_file, stack)
        state = mgr.restore(agent, as_of=None if as_of is None else parse_time(as_of, name="--as-of"), strict=True)
    if state is None:
        raise InvalidInputError(f"agent {agent!r} has no state" + (f" as of {as_of}" if as_of else ""))
    typer.echo(state.serialize())


@state_app.command("verify")
def cmd_verify(path: PathArg, agent: AgentArg, key_file: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Check every snapshot of the agent's chain and every link; exit status 1 on a problem."""
    with contextlib.ExitStack() as stack:
        report = _manager(path, key_file, stack, need_key=False).verify(agent)
    if report.length == 0:
        raise InvalidInputError(f"agent {agent!r} has no snapshots in {path}")
    if as_json:
        _emit({"agent_id": report.agent_id, "length": report.length, "ok": report.ok,
               "problems": report.problems, "head_state_id": report.head_state_id,
               "unchecked": report.unchecked})
    elif report.ok:
        note = f" ({report.unchecked} encrypted snapshots not decrypted: give --key-file)" if report.unchecked else ""
        console.print(f"[green]ok[/]: {report.length} snapshots of {agent!r} verify{note}", highlight=False)
    else:
        console.print(f"[bold red]FAILED[/]: chain of {agent!r} ({report.length} snapshots)", highlight=False)
        for p in report.problems:
            console.print(f"  - {p}", highlight=False, markup=False)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``state`` sub-app to the ``aether`` app."""
    app.add_typer(state_app, name="state")


__all__ = ["register", "state_app"]
