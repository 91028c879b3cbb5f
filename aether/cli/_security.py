"""Security commands: ``keygen``, ``rotate-key``, ``verify``, ``erase``.

Keys come from ``--key-file`` or the environment (``AETHER_KEY`` as base64, or ``AETHER_KEY_FILE``);
never from a command-line argument, which other users could read in the process list.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InvalidInputError
from ._app import console
from ._core import KeyFileOpt, open_store


def cmd_keygen(
    file: Annotated[
        Path | None, typer.Argument(help="Key file to create (mode 0600). Omit to print the key.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")] = False,
) -> None:
    """Generate a 32-byte master key: written to FILE with mode 0600, or printed as base64 for AETHER_KEY."""
    from ..security.keys import encode_key, generate_key, write_key_file

    if file is None:
        typer.echo(encode_key(generate_key()))
        return
    write_key_file(file, overwrite=force)
    console.print(
        f"wrote a new master key to {file} (mode 0600); keep a copy: without it the store is unreadable"
    )


def cmd_rotate_key(
    path: Annotated[Path, typer.Argument(help="Store directory.")],
    old_key_file: Annotated[
        Path | None,
        typer.Option("--old-key-file", help="Current key (default: $AETHER_KEY / $AETHER_KEY_FILE)."),
    ] = None,
    new_key_file: Annotated[
        Path | None, typer.Option("--new-key-file", help="New key (default: $AETHER_NEW_KEY, base64).")
    ] = None,
) -> None:
    """Re-wrap the store's data keys under a new master key (no data file is rewritten)."""
    from ..security.keys import parse_key, read_key_file, resolve_key
    from ..security.rotate import rotate_key

    old = read_key_file(old_key_file) if old_key_file is not None else resolve_key()
    if old is None:
        raise InvalidInputError("give --old-key-file or set AETHER_KEY")
    if new_key_file is not None:
        new = read_key_file(new_key_file)
    elif os.environ.get("AETHER_NEW_KEY"):
        new = parse_key(os.environ["AETHER_NEW_KEY"], what="AETHER_NEW_KEY")
    else:
        raise InvalidInputError("give --new-key-file or set AETHER_NEW_KEY")
    n = rotate_key(path, old, new)
    console.print(f"re-wrapped {n} data keys under the new master key; the old key no longer opens {path}")


def cmd_verify(
    path: Annotated[Path, typer.Argument(help="Store directory.")],
    key_file: KeyFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check checksums, ciphertexts, the hash-chained log and the manifest; exit 1 on any problem.

    Exit 3 when a writer kept changing the store during every check (nothing could be confirmed).
    """
    from ..security.verify import verify

    report = verify(path, key_file=key_file)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "path": report.path,
                    "ok": report.ok,
                    "busy": report.busy,
                    "attempts": report.attempts,
                    "encrypted": report.encrypted,
                    "authenticated": report.authenticated,
                    "checked": report.checked,
                    "log_head": report.log_head,
                    "problems": [p.__dict__ for p in report.problems],
                    "warnings": [p.__dict__ for p in report.warnings],
                },
                indent=2,
            )
        )
    else:
        for p in report.problems:
            typer.echo(f"PROBLEM {p}")
        for p in report.warnings:
            typer.echo(f"warning {p}")
        counts = ", ".join(f"{k}={v}" for k, v in sorted(report.checked.items()))
        head = report.log_head
        status = "OK" if report.ok else "BUSY" if report.busy else "FAILED"
        typer.echo(
            f"{status}: {len(report.problems)} problem(s), {len(report.warnings)} warning(s) [{counts}]"
            + (f"; log head seq {head['seq']} {head['hash']}" if head else "")
        )
    if report.busy:
        typer.echo("the store changed during every check (a writer is active): run verify again", err=True)
        sys.exit(3)
    if not report.ok:
        sys.exit(1)


def cmd_erase(
    path: Annotated[Path, typer.Argument(help="Store directory.")],
    subject: Annotated[
        str | None, typer.Option("--subject", help="Erase every version of this subject.")
    ] = None,
    atom_id: Annotated[
        str | None, typer.Option("--atom-id", help="Erase every version of this atom.")
    ] = None,
    compact: Annotated[
        bool, typer.Option("--compact", help="Compact afterwards (purge the rows from disk).")
    ] = False,
    key_file: KeyFileOpt = None,
) -> None:
    """Erase a subject (its data key is destroyed) or an atom, for all valid and transaction time."""
    if (subject is None) == (atom_id is None):
        raise InvalidInputError("give exactly one of --subject or --atom-id")
    with open_store(path, key_file=key_file) as mem:
        res = mem.erase(subject=subject, atom_id=atom_id)
        console.print(f"erased {res.versions} version(s); destroyed {res.keys_destroyed} data key(s)")
        if compact:
            c = mem.compact()
            console.print(f"compacted: {c.purged} row(s) purged, {c.files_removed} file(s) removed")


def register(app: typer.Typer) -> None:
    """Add the security commands to the ``aether`` app."""
    app.command("keygen")(cmd_keygen)
    app.command("rotate-key")(cmd_rotate_key)
    app.command("verify")(cmd_verify)
    app.command("erase")(cmd_erase)
