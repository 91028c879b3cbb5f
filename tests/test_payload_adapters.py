"""Payloads through the adapters: the HTTP server (base64 in JSON) and the MCP tools."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

import aether


def test_server_accepts_and_returns_payloads_as_base64(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from aether.server import create_app

    data = os.urandom(70_000)
    app = create_app(tmp_path, model="hashing:16", api_key="", keys_file=tmp_path / "k.json")
    with TestClient(app) as c:
        r = c.post("/v1/namespaces/n/atoms", json={"content": "a chart", "content_type": "image/png",
                                                   "payload_base64": base64.b64encode(data).decode()})
        assert r.status_code == 201, r.text
        atom = r.json()
        assert atom["content"]["content_type"] == "image/png" and atom["content"]["size_bytes"] == len(data)
        assert atom["content"]["payload_digest"] == hashlib.sha256(data).hexdigest()
        got = c.get(f"/v1/namespaces/n/payload/{atom['atom_id']}")
        assert got.status_code == 200, got.text
        body = got.json()
        assert base64.b64decode(body["payload_base64"]) == data and body["content_type"] == "image/png"
        s = c.post("/v1/namespaces/n/atoms", json={"content": {"status": "open", "n": 1}})
        assert s.status_code == 201 and s.json()["content"]["data"] == {"status": "open", "n": 1}
        text = c.post("/v1/namespaces/n/atoms", json={"content": "plain"}).json()
        bad = c.get(f"/v1/namespaces/n/payload/{text['atom_id']}")
        assert bad.status_code == 422 and bad.json()["error"]["type"] in ("NoPayloadError", "InvalidInputError")
        assert c.get("/v1/namespaces/n/payload/nope").status_code == 404
        for body_ in ({"content": "x", "payload_base64": "not base64!!"},
                      {"content": "x", "payload_base64": "AAAA", "content_type": "bad"}):
            r = c.post("/v1/namespaces/n/atoms", json=body_)
            assert r.status_code == 422, r.text
        assert c.get("/v1/namespaces/n/stats").json()["atoms_current"] == 3


def test_mcp_remember_and_payload_tools() -> None:
    pytest.importorskip("mcp")
    import anyio
    import mcp

    from aether.integrations.mcp import build_server

    data = b"\x89PNG" + os.urandom(2000)
    with aether.open(embedder=aether.HashingEmbedder(dim=32)) as mem:
        server = build_server(mem)

        async def body(c: Any) -> None:
            res = await c.call_tool("remember", {"content": "the whiteboard after the meeting",
                                                 "payload_base64": base64.b64encode(data).decode(),
                                                 "content_type": "image/png"})
            assert not res.is_error, res.content
            aid = res.structured_content["atom_id"]
            got = await c.call_tool("payload", {"atom_id": aid})
            assert not got.is_error, got.content
            out = got.structured_content
            assert base64.b64decode(out["payload_base64"]) == data and out["content_type"] == "image/png"
            h = await c.call_tool("history", {"atom_id": aid})
            assert h.structured_content["versions"][0]["payload_digest"] == hashlib.sha256(data).hexdigest()
            plain = await c.call_tool("remember", {"content": "no bytes"})
            bad = await c.call_tool("payload", {"atom_id": plain.structured_content["atom_id"]})
            assert bad.is_error and "NoPayloadError" in " ".join(getattr(b, "text", "") for b in bad.content)

        async def main() -> None:
            with anyio.fail_after(60):
                async with mcp.Client(server) as client:
                    await body(client)

        anyio.run(main)


def test_remote_client_payload_parity(tmp_path: Path) -> None:
    """``aether.connect`` and a local store give the same payload answers (a real server process)."""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from aether.errors import AtomNotFoundError, NoPayloadError, PayloadFileError

    from ._server_util import LiveServer, clean_exit

    srv = LiveServer(tmp_path / "root").start()
    try:
        data = os.urandom(30_000)
        f = tmp_path / "clip.mp4"
        f.write_bytes(data)
        local = aether.open(tmp_path / "local", embedder=aether.HashingEmbedder(dim=64))
        remote = aether.connect(srv.url, namespace="pay")
        for mem in (local, remote):
            with mem:
                a = mem.add("a short clip", payload=f)
                assert a.content_type == "video/mp4" and a.modality == aether.MemoryModality.VIDEO
                assert mem.payload(a.atom_id) == data
                t = mem.add("plain")
                with pytest.raises(NoPayloadError):
                    mem.payload(t.atom_id)
                with pytest.raises(AtomNotFoundError):
                    mem.payload("nope")
                with pytest.raises(PayloadFileError):
                    mem.add("x", payload=tmp_path / "missing.bin")
                s = mem.add({"kind": "ticket", "open": True})
                got = mem.get(s.atom_id)
                assert got is not None and got.data == {"kind": "ticket", "open": True}
    finally:
        assert clean_exit(srv.stop()), srv.log()[-3000:]
