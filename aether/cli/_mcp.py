"""``aether mcp STORE``: serve a store to MCP clients (desktop assistants, IDE agents) over stdio or HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError

_TRANSPORTS = ("stdio", "streamable-http")


def cmd_mcp(
    path: Annotated[Path, typer.Argument(help="Store directory (created if new).", show_default=False,
                                         metavar="STORE")],
    transport: Annotated[
        str, typer.Option("--transport", metavar="NAME", help="stdio (a client spawns this command) or "
                                                              "streamable-http (serve http://HOST:PORT/mcp).")
    ] = "stdio",
    host: Annotated[
        str, typer.Option("--host", help="Loopback interface for streamable-http (it has no API keys).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port for streamable-http.")] = 8000,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="NAME", help="Model for a new store: a name from models/ (default "
                                                     "all-MiniLM-L6-v2) or hashing / hashing:DIM.",
                     show_default=False),
    ] = None,
    allow_erase: Annotated[
        bool, typer.Option("--allow-erase", help="Offer the erase tool (permanent GDPR erasure).")
    ] = False,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Master key file of an encrypted store (or AETHER_KEY).")
    ] = None,
) -> None:
    """Run an MCP memory server on the store at STORE: tools remember, recall, correct, forget, history.

    With --transport stdio (the default) an MCP client launches this command and talks over its
    stdin/stdout; logs go to stderr. With streamable-http it serves http://HOST:PORT/mcp until stopped.
    """
    import aether

    from ..embed import embedder_for
    from ..integrations.mcp import build_server

    if transport not in _TRANSPORTS:
        raise ConfigError(f"unknown transport {transport!r}; use stdio or streamable-http")
    if transport == "streamable-http":
        from ..server._run import is_loopback

        if not is_loopback(host):
            # This endpoint has no API keys: anyone who reached it could write (and, with --allow-erase,
            # erase). `aether serve` offers the same tools per namespace behind its API keys.
            raise ConfigError(
                f"refusing to serve MCP on {host}: this endpoint has no API keys, so it binds loopback only. "
                "To serve MCP beyond this machine use `aether serve ROOT --host ...` with API keys "
                "(/v1/namespaces/<ns>/mcp)"
            )
    kwargs: dict[str, Any] = {}
    if model is not None:
        kwargs["embedder"] = embedder_for(model)
    if key_file is not None:
        kwargs["key_file"] = key_file
    with aether.open(path, **kwargs) as mem:
        server = build_server(mem, allow_erase=allow_erase)
        if transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add the ``mcp`` command to the ``aether`` app."""
    app.command("mcp")(cmd_mcp)
