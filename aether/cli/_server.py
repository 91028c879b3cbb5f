"""Server commands: ``aether serve ROOT`` and ``aether keys add|list|revoke ROOT``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ._app import console

RootArg = Annotated[
    Path, typer.Argument(help="Directory of the namespaces (ROOT/<namespace>/ is a store).", show_default=False)
]
KeysOpt = Annotated[
    Path | None, typer.Option("--keys", metavar="FILE", help="API keys file (default ROOT/api-keys.json).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]

keys_app = typer.Typer(help="API keys of an aether server: add, list, revoke.", no_args_is_help=True)


def _keys_file(root: Path, keys: Path | None) -> Any:
    from ..server._auth import DEFAULT_KEYS_NAME, KeysFile

    return KeysFile(keys if keys is not None else root / DEFAULT_KEYS_NAME)


def cmd_serve(
    root: RootArg,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (beyond loopback needs API keys).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8765,
    keys: KeysOpt = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", metavar="STORE_KEY", help="Master key: namespaces are encrypted.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="NAME",
                     help="Model of namespaces created through the server (hashing:DIM or a models/ name)."),
    ] = None,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Largest request body.")] = 256.0,
    max_namespaces: Annotated[
        int, typer.Option("--max-namespaces", min=1, help="Most namespaces under ROOT (creating more is a 409).")
    ] = 1000,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")] = "info",
    no_access_log: Annotated[bool, typer.Option("--no-access-log", help="Do not log each request.")] = False,
) -> None:
    """Serve the namespaces under ROOT over HTTP (REST, OpenAPI at /docs) until SIGTERM or Ctrl-C.

    API keys come from ROOT/api-keys.json (`aether keys add`) or AETHER_API_KEY; without any key the
    server only binds loopback. Access logs are JSON lines on stderr.
    """
    from ..server import serve

    serve(root, host=host, port=port, keys_file=keys, key_file=key_file, model=model,
          max_body_bytes=int(max_body_mb * 1024 * 1024), max_namespaces=max_namespaces, log_level=log_level,
          access_log=not no_access_log)


def cmd_keys_add(
    root: RootArg,
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.", show_default=False)],
    scope: Annotated[str, typer.Option("--scope", help="read, write (includes read) or admin (everything).")] = "read",
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", metavar="NS", help="Namespace the key may use (repeatable; default all).",
                     show_default=False),
    ] = None,
    keys: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. It is printed once: only its hash is stored."""
    key, entry = _keys_file(root, keys).add(name=name, scope=scope, namespaces=namespace)
    if as_json:
        typer.echo(json.dumps({"key": key, **{k: v for k, v in entry.items() if k != "hash"}}))
        return
    ns = ", ".join(entry["namespaces"]) if entry["namespaces"] else "all namespaces"
    console.print(f"Created key {entry['id']} ({entry['name']}, {entry['scope']}, {ns}). "
                  "Store it now; it is not shown again:", highlight=False)
    typer.echo(key)


def cmd_keys_list(root: RootArg, keys: KeysOpt = None, as_json: JsonOpt = False) -> None:
    """List the keys (ids, names, scopes, namespaces; never the keys or their hashes)."""
    entries = [{k: v for k, v in e.items() if k != "hash"} for e in _keys_file(root, keys).load()]
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    table = Table(title="API keys", title_justify="left")
    for col in ("id", "name", "scope", "namespaces", "created", "revoked"):
        table.add_column(col)
    for e in entries:
        table.add_row(e["id"], e["name"], e["scope"], ", ".join(e.get("namespaces") or ["*"]),
                      str(e.get("created", "")), str(e.get("revoked") or ""))
    console.print(table if entries else "no keys")


def cmd_keys_revoke(
    root: RootArg,
    key_id: Annotated[str, typer.Argument(help="The key's id (from `aether keys list`).", show_default=False)],
    keys: KeysOpt = None,
) -> None:
    """Revoke a key; a running server rejects it within a second."""
    entry = _keys_file(root, keys).revoke(key_id)
    console.print(f"Revoked key {entry['id']} ({entry['name']})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``keys`` to the ``aether`` app."""
    app.command("serve")(cmd_serve)
    keys_app.command("add")(cmd_keys_add)
    keys_app.command("list")(cmd_keys_list)
    keys_app.command("revoke")(cmd_keys_revoke)
    app.add_typer(keys_app, name="keys")
