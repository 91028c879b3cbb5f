"""MCP per namespace on the live server: ``/v1/namespaces/{ns}/mcp`` (streamable HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mcp")

import anyio
import mcp

import aether
from aether.server._auth import KeysFile

from ._server_util import LiveServer, clean_exit


def test_mcp_tools_write_the_namespace_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with LiveServer(root) as srv:

        async def main() -> None:
            with anyio.fail_after(60):
                async with mcp.Client(f"{srv.url}/v1/namespaces/agents/mcp") as c:
                    names = {t.name for t in (await c.list_tools()).tools}
                    assert {"remember", "recall", "correct", "forget", "history"} <= names
                    assert "erase" not in names
                    res = await c.call_tool("remember", {"content": "Judy likes jazz", "tags": {"user": "judy"}})
                    assert not res.is_error, res.content
                    out: Any = await c.call_tool("recall", {"query": "Judy"})
                    assert not out.is_error and "Judy likes jazz" in str(out.structured_content)

        anyio.run(main)
        # The same namespace, through REST and the client.
        hits = aether.connect(srv.url, namespace="agents").search("Judy", k=3)
        assert [h.atom.content.inline for h in hits] == ["Judy likes jazz"]
        code = srv.stop()
    assert clean_exit(code)
    assert aether.verify(root / "agents").ok


def test_mcp_needs_a_write_key(tmp_path: Path) -> None:
    root = tmp_path / "root"
    kf = KeysFile(root / "api-keys.json")
    reader, _ = kf.add(name="r", scope="read")
    with LiveServer(root) as srv:
        url = f"{srv.url}/v1/namespaces/agents/mcp"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        r = httpx.post(url, json=body, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["type"] == "AuthenticationError"
        r = httpx.post(url, json=body, headers={"X-API-Key": reader}, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["type"] == "PermissionDeniedError"
        r = httpx.post(f"{srv.url}/v1/namespaces/BAD/mcp", json=body, headers={"X-API-Key": reader}, timeout=10)
        assert r.status_code == 422
