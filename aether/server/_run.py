"""Run the server with uvicorn: the loopback rule, JSON logs, graceful shutdown."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from ._auth import DEFAULT_KEYS_NAME, KeysFile


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_keys(keys_file: Path, api_key: str | None) -> bool:
    if api_key:
        return True
    return any(k.get("revoked") is None for k in KeysFile(keys_file).load())


class _JsonLines(logging.Formatter):
    """Access-log records are JSON already; other records become one JSON line too."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        msg = record.getMessage()
        if record.name == "aether.server.access":
            return msg
        doc: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name, "message": msg}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(level: str = "info", *, access_log: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    for name in ("aether.server", "aether.server.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
        lg.setLevel(level.upper())
    if not access_log:
        logging.getLogger("aether.server.access").setLevel(logging.WARNING)


def _stack() -> str:
    """Which event loop and HTTP parser uvicorn picks (``auto``): uvloop and httptools when installed."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = ("httptools" if importlib.util.find_spec("httptools")
            else "h11 (pure Python: pip install 'uvicorn[standard]')")
    return f"{loop} loop, {http} parser"


def serve(
    root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    keys_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    model: str | None = None,
    log_level: str = "info",
    access_log: bool = True,
    graceful_seconds: float = 30.0,
    **app_kwargs: Any,
) -> None:
    """Serve the stores under ``root`` until SIGTERM or SIGINT.

    On the signal uvicorn stops accepting connections, lets in-flight requests finish (up to
    ``graceful_seconds``), then the app waits for a running admin job and checkpoints and closes
    every store. Writes are acknowledged only after their transaction is durable (fsynced).

    Raises
    ------
    ConfigError
        ``host`` is not a loopback address and no API key is configured (a keys file with a live
        key, or ``AETHER_API_KEY``).
    """
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("aether serve needs uvicorn: pip install 'aether[server]'") from None
    from ._app import create_app

    root = Path(root)
    kf = Path(keys_file) if keys_file is not None else root / DEFAULT_KEYS_NAME
    env_key = os.environ.get("AETHER_API_KEY")
    if not is_loopback(host) and not _has_keys(kf, env_key):
        raise ConfigError(
            f"refusing to listen on {host} without API keys: anyone who can reach it could read and erase "
            f"every namespace. Create a key (`aether keys add {root} --name NAME --scope admin`) or set "
            "AETHER_API_KEY, or bind 127.0.0.1"
        )
    configure_logging(log_level, access_log=access_log)
    # Started without keys (loopback only): also refuse requests addressed to another host (DNS rebinding).
    app_kwargs.setdefault("local_host_only", not _has_keys(kf, env_key))
    app = create_app(root, keys_file=kf, model=model, key_file=key_file, **app_kwargs)
    logging.getLogger("aether.server").info(
        "serving %s on http://%s:%d (%s; %s)", root, host, port,
        "API keys required" if app.state.server.keys.enabled else "no API keys: loopback only", _stack(),
    )
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
        timeout_graceful_shutdown=int(graceful_seconds), server_header=False,
    )
