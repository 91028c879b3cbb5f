"""The async twin of the client (``aether.connect_async``) against a live server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

import aether
from aether.errors import AtomNotFoundError, NaiveDatetimeError, ReadOnlyError

from ._server_util import LiveServer, clean_exit

DIM = 64


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("async") / "root").start()
    try:
        yield srv
    finally:
        assert clean_exit(srv.stop())
    assert aether.verify(srv.root / "am").ok


@pytest.mark.asyncio
async def test_async_client_matches_the_api(live: LiveServer) -> None:
    from datetime import datetime

    async with aether.connect_async(live.url, namespace="am") as mem:
        a = await mem.add("Alice lives in Paris", valid_from="2023-01-01T00:00:00Z", tags={"user": "alice"})
        assert isinstance(a, aether.MemoryAtom)
        before = await mem.last_commit()
        await mem.correct(a.atom_id, "Alice lives in Lyon", valid_from="2024-06-01T00:00:00Z")
        vecs = np.random.default_rng(1).standard_normal((16, DIM)).astype(np.float32)
        ids = await mem.add_columns([f"v{i}" for i in range(16)], vectors=vecs)
        # Many requests in flight at once on one connection pool.
        results = await asyncio.gather(*(mem.search(vecs[i], k=1) for i in range(16)))
        assert [r[0].atom_id for r in results] == ids
        old = await mem.get(a.atom_id, as_of=before)
        assert old is not None and old.content.inline == "Alice lives in Paris"
        assert await mem.get("missing") is None and await mem.history("missing") == []
        assert len(await mem.history(a.atom_id)) >= 2
        view = await mem.view(as_of=before)
        assert [h.atom.content.inline for h in await view.search("alice", k=3)] == ["Alice lives in Paris"]
        with pytest.raises(ReadOnlyError):
            await view.add("no")
        with pytest.raises(NaiveDatetimeError):
            await mem.search("x", valid_at=datetime(2024, 1, 1))
        with pytest.raises(AtomNotFoundError):
            await mem.delete("missing")
        plan = await mem.explain("alice", k=2)
        assert isinstance(plan, aether.SearchPlan)
        assert (await mem.stats()).atoms_current == 17
        out = await mem.compact(timeout=60)
        assert out.rows_after == out.rows_before


def test_unreachable_server_is_a_remote_error() -> None:
    from ._server_util import free_port

    with aether.connect(f"http://127.0.0.1:{free_port()}", timeout=2) as mem, pytest.raises(aether.errors.RemoteError):
        mem.stats()


def test_a_reply_that_is_not_the_aether_api_is_a_remote_error() -> None:
    # Review finding: a URL that answers 200 with something else (a proxy page, another service) made the
    # client raise raw pydantic / KeyError / TypeError instead of an AetherError.
    import httpx

    from aether.client import RemoteMemory

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/search"):
            return httpx.Response(200, json={"unexpected": True})
        return httpx.Response(200, text="<html>welcome to the proxy</html>")

    http = httpx.Client(base_url="http://proxy.invalid", transport=httpx.MockTransport(handler))
    mem = RemoteMemory("http://proxy.invalid", namespace="n", _http=http)
    for call in (lambda: mem.get("a"), lambda: mem.history("a"), lambda: mem.search("q"), lambda: mem.stats(),
                 lambda: mem.add("x"), lambda: mem.last_commit):
        with pytest.raises(aether.errors.RemoteError, match="not an aether server reply"):
            call()

    async def via_async() -> None:
        from aether.client import AsyncRemoteMemory

        ahttp = httpx.AsyncClient(base_url="http://proxy.invalid", transport=httpx.MockTransport(handler))
        amem = AsyncRemoteMemory("http://proxy.invalid", namespace="n", _http=ahttp)
        with pytest.raises(aether.errors.RemoteError, match="not an aether server reply"):
            await amem.search("q")
        await ahttp.aclose()

    asyncio.run(via_async())
