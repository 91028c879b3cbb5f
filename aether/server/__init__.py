"""``aether serve``: the HTTP server (``pip install 'aether[server]'``: FastAPI, uvicorn, prometheus-client).

>>> from aether.server import create_app      # an ASGI app, for uvicorn or to mount in another app
>>> app = create_app("./stores", model="hashing:64")  # doctest: +SKIP

One process owns the stores under ROOT; ``ROOT/<namespace>/`` is an ordinary store that
:func:`aether.open` can read once the server is stopped. See ``docs/server.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    from fastapi import FastAPI


def _require() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"the aether server needs {exc.name}: pip install 'aether[server]'"
        ) from None


def create_app(root: Any, **kwargs: Any) -> FastAPI:
    """The aether HTTP API over the stores under ``root``; see :func:`aether.server._app.create_app`."""
    _require()
    from ._app import create_app as _create

    return _create(root, **kwargs)


def serve(root: Any, **kwargs: Any) -> None:
    """Run the server with uvicorn until SIGTERM/SIGINT; see :func:`aether.server._run.serve`."""
    _require()
    from ._run import serve as _serve

    _serve(root, **kwargs)


__all__ = ["create_app", "serve"]
