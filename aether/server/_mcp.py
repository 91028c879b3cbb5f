"""MCP per namespace: ``/v1/namespaces/{ns}/mcp`` is the streamable-HTTP endpoint of
:func:`aether.integrations.mcp.build_server` over that namespace's store (``pip install 'aether[mcp]'``).

The MCP tools write (remember, correct, forget), so the endpoint needs a key with the ``write`` scope
on the namespace; ``erase`` is not offered. Each namespace's MCP server is built on first use and its
session manager runs in the app's lifespan task group until shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from fastapi import Request

from .. import errors as E
from ._names import NAME_RE
from ._state import Server, _error_response, _rid


class McpMount:
    """An ASGI app (a class, so Starlette's ``Route`` passes it every method) that routes to per-namespace MCP."""

    def __init__(self, server: Server, authenticate: Callable[[Request], Any]) -> None:
        self.server = server
        self.authenticate = authenticate
        self.apps: dict[str, Any] = {}
        self.task_group: anyio.abc.TaskGroup | None = None
        self._lock: anyio.Lock | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        ns = (scope.get("path_params") or {}).get("ns", "")
        try:
            if NAME_RE.fullmatch(ns) is None:
                raise E.InvalidInputError(f"invalid namespace name {ns!r}")
            p = self.authenticate(request)
            if not p.allows("write", ns):
                raise E.PermissionDeniedError(f"key {p.key_id!r} does not grant scope 'write' on {ns!r} (MCP writes)")
            app = await self._app(ns)
        except E.AetherError as exc:
            await _error_response(exc, _rid(request))(scope, receive, send)
            return
        inner = dict(scope, path="/mcp", raw_path=b"/mcp", root_path="")
        await app(inner, receive, send)

    async def _app(self, ns: str) -> Any:
        app = self.apps.get(ns)
        if app is not None:
            return app
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            app = self.apps.get(ns)
            if app is not None:
                return app
            if self.task_group is None:
                raise E.StoreClosedError("the server is not running")
            try:
                from mcp.server.transport_security import TransportSecuritySettings

                from ..integrations.mcp import build_server
            except ImportError:
                raise E.MissingDependencyError("MCP needs the mcp package: pip install 'aether[mcp]'") from None
            srv = self.server
            mem = await anyio.to_thread.run_sync(lambda: srv.namespaces.get(ns, create=srv.auto_create))
            mcp_server = build_server(mem, name=f"aether:{ns}")
            # With API keys the endpoint is authenticated, so the MCP SDK's Host-header (DNS rebinding)
            # check is off; without keys the server is loopback-only and keeps it.
            security = None if not srv.keys.enabled else TransportSecuritySettings(
                enable_dns_rebinding_protection=False)
            app = mcp_server.streamable_http_app(streamable_http_path="/mcp", transport_security=security)
            manager = mcp_server.session_manager
            started = anyio.Event()

            async def run() -> None:
                async with manager.run():
                    started.set()
                    await anyio.sleep_forever()

            self.task_group.start_soon(run)
            await started.wait()
            self.apps[ns] = app
            return app
