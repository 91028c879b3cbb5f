"""The typer application and the error boundary: user mistakes print one line, never a traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from ..errors import AetherError, InvalidInputError

app = typer.Typer(
    name="aether",
    help="aether: a bitemporal semantic memory engine for LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped


def main() -> None:
    """Entry point: run the app, turning aether errors into a message and an exit code."""
    try:
        app()
    except AetherError as exc:
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(2 if isinstance(exc, InvalidInputError) else 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
