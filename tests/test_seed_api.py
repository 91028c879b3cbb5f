"""The seed's store API over the engine: field mapping, time travel, queries, errors, durability, async."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aether
from aether import (
    BitemporalMemoryStore,
    InvalidInputError,
    MemoryAtom,
    MemoryModality,
    MemoryQuery,
    StatePersistenceManager,
)

NOW = datetime.now(UTC)


def _store(path: Path | None = None) -> BitemporalMemoryStore:
    emb = aether.HashingEmbedder(dim=32)
    return BitemporalMemoryStore(path, embedder=emb) if path else BitemporalMemoryStore(embedder=emb)


def _atom(text: str, *, tags: dict | None = None, meta: dict | None = None, **fields: object) -> MemoryAtom:
    a = MemoryAtom()
    a.set_content(text, meta or {})
    a.tags = tags or {}
    for k, v in fields.items():
        setattr(a, k, v)
    return a


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_store_maps_every_field_onto_the_engine() -> None:
    s = _store()
    a = _atom(
        "Alice lives in Paris",
        tags={"user": "alice", "n": 3},
        meta={"source": "chat"},
        metadata={"extra": [1, 2]},
        quality_score=0.7,
        modality=MemoryModality.STRUCTURED,
    )
    a.set_valid_time(NOW - timedelta(days=2))
    a.expiration_time = NOW + timedelta(days=2)
    res = run(s.store_memory(a))
    assert res.success and res.atom_id == a.atom_id and res.version_id is not None
    assert a.transaction_time == res.storage_timestamp  # written back, as the seed does
    got = s.memory.get(a.atom_id)
    assert got is not None
    assert got.content.inline == "Alice lives in Paris"
    assert got.content.metadata == {"source": "chat"}
    assert got.tags == {"user": "alice", "n": 3}
    assert got.metadata == {"extra": [1, 2]}
    assert got.quality_score == 0.7 and got.modality is MemoryModality.STRUCTURED
    assert got.valid_from == a.valid_from and got.valid_to == a.expiration_time
    assert a.atom_id in s.memory_atoms and len(s.memory_atoms) == 1
    assert list(s.memory_atoms) == [a.atom_id]
    assert s.memory_atoms[a.atom_id].content.inline == "Alice lives in Paris"
    assert "nope" not in s.memory_atoms


def test_storing_again_writes_a_new_version() -> None:
    s = _store()
    a = _atom("v1")
    run(s.store_memory(a))
    a.set_content("v2")
    run(s.store_memory(a))
    assert [v.content.inline for v in s.memory.history(a.atom_id)][-1] == "v2"
    assert run(s.retrieve_memory(a.atom_id)).content.inline == "v2"
    first_tx = s.memory.history(a.atom_id)[0].tx_from
    old = run(s.retrieve_memory(a.atom_id, as_of=first_tx))
    assert old is not None and old.content.inline == "v1"


@pytest.mark.parametrize(
    ("atom", "needle"),
    [
        (_atom(" "), "Missing content"),
        (_atom("x", quality_score=1.5), "Invalid quality_score"),
        (_atom("x", tags={"bad": [1, 2]}), "tag"),
    ],
)
def test_invalid_atoms_are_reported_not_raised(atom: MemoryAtom, needle: str) -> None:
    s = _store()
    res = run(s.store_memory(atom))
    assert not res.success and needle in (res.error or "")
    assert len(s.memory_atoms) == 0


def test_retrieve_follows_valid_time_and_counts_accesses() -> None:
    s = _store()
    a = _atom("fact")
    a.set_valid_time(NOW - timedelta(hours=1))
    a.expiration_time = NOW + timedelta(hours=1)
    run(s.store_memory(a))
    assert run(s.retrieve_memory(a.atom_id, NOW - timedelta(hours=2))) is None
    assert run(s.retrieve_memory(a.atom_id, NOW + timedelta(hours=2))) is None
    r1 = run(s.retrieve_memory(a.atom_id, NOW))
    r2 = run(s.retrieve_memory(a.atom_id))
    assert r1 is not None and r2 is not None and r2.access_count == 2 and r2.last_accessed is not None
    assert run(s.retrieve_memory("unknown")) is None
    with pytest.raises(aether.NaiveDatetimeError):
        run(s.retrieve_memory(a.atom_id, datetime(2024, 1, 1)))  # naive on purpose


def test_retrieve_without_time_finds_a_future_or_retracted_atom() -> None:
    s = _store()
    future = _atom("scheduled")
    future.set_valid_time(NOW + timedelta(days=1))
    run(s.store_memory(future))
    assert run(s.retrieve_memory(future.atom_id)) is not None
    assert run(s.retrieve_memory(future.atom_id, NOW)) is None


def test_tag_query_matches_tags_then_content_metadata_then_metadata() -> None:
    s = _store()
    a = _atom("a", tags={"kind": "x"})
    b = _atom("b", meta={"kind": "x"})
    c = _atom("c", metadata={"kind": "x"})
    d = _atom("d", tags={"kind": "y"}, meta={"kind": "x"})  # the tag says y, content metadata x: matches
    e = _atom("e", tags={"kind": "y"})
    f = _atom("f", tags={"kind": "x", "lang": "en"}, meta={"n": 1})
    for atom in (a, b, c, d, e, f):
        assert run(s.store_memory(atom)).success
    ids = {r.atom_id for r in run(s.query_memories(MemoryQuery(tags={"kind": "x"}, limit=50)))}
    assert ids == {a.atom_id, b.atom_id, c.atom_id, d.atom_id, f.atom_id}
    both = run(s.query_memories(MemoryQuery(tags={"kind": "x", "n": 1})))
    assert [r.atom_id for r in both] == [f.atom_id]
    assert run(s.query_memories(MemoryQuery(tags={"kind": "x", "n": True}))) == []  # JSON types differ
    assert run(s.query_memories(MemoryQuery(tags={"kind": "z"}))) == []
    assert len(run(s.query_memories(MemoryQuery(limit=100)))) == 6


def test_time_filters_and_as_of() -> None:
    s = _store()
    old = _atom("old")
    old.set_valid_time(NOW - timedelta(days=10))
    old.expiration_time = NOW - timedelta(days=5)
    cur = _atom("current")
    cur.set_valid_time(NOW - timedelta(days=1))
    run(s.store_memory(old))
    res = run(s.store_memory(cur))
    ids = lambda q: {r.atom_id for r in run(s.query_memories(q))}  # noqa: E731
    assert ids(MemoryQuery()) == {old.atom_id, cur.atom_id}  # no time filter, as in the seed
    assert ids(MemoryQuery(query_time=NOW)) == {cur.atom_id}
    assert ids(MemoryQuery(query_time=NOW - timedelta(days=7))) == {old.atom_id}
    assert ids(MemoryQuery(time_range=(NOW - timedelta(days=6), NOW - timedelta(days=2)))) == {old.atom_id}
    assert ids(MemoryQuery(time_range=(NOW - timedelta(days=6), None))) == {old.atom_id, cur.atom_id}
    assert ids(MemoryQuery(as_of=res.storage_timestamp - timedelta(microseconds=1))) == {old.atom_id}


def test_content_query_and_sorting() -> None:
    s = _store()
    texts = ["the cat sat on the mat", "stock markets fell sharply", "a cat and a dog", "rain in spain"]
    atoms = [_atom(t, quality_score=q, tags={"all": 1}) for t, q in zip(texts, [0.2, 0.9, 0.5, 0.1], strict=True)]
    for a in atoms:
        run(s.store_memory(a))
    top = run(s.query_memories(MemoryQuery(content_query="the cat sat on the mat", limit=2)))
    assert len(top) == 2 and top[0].content.inline == "the cat sat on the mat"
    # The same ranking as the engine's exact search over the same filter.
    ref = s.memory.search("the cat sat on the mat", k=2, valid_during=(None, None))
    assert [r.atom_id for r in top] == [h.atom_id for h in ref]
    by_quality = run(s.query_memories(MemoryQuery(tags={"all": 1}, limit=10)))
    assert [r.quality_score for r in by_quality] == [0.9, 0.5, 0.2, 0.1]
    by_time = run(s.query_memories(MemoryQuery(sort_by="timestamp", limit=3)))
    assert [r.atom_id for r in by_time] == [a.atom_id for a in atoms[::-1][:3]]
    for _ in range(3):
        run(s.retrieve_memory(atoms[3].atom_id))
    run(s.retrieve_memory(atoms[0].atom_id))
    by_access = run(s.query_memories(MemoryQuery(sort_by="access_count", limit=2)))
    assert [r.atom_id for r in by_access] == [atoms[3].atom_id, atoms[0].atom_id]
    assert by_access[0].access_count == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sort_by": "random"},
        {"limit": 0},
        {"limit": True},
        {"query_time": datetime(2024, 1, 1)},  # naive on purpose
        {"time_range": (NOW, NOW - timedelta(days=1))},
        {"content_query": "  "},
        {"tags": {"": 1}},
    ],
)
def test_bad_queries_raise_typed_errors(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        MemoryQuery(**kwargs)


def test_durable_store_reopens_and_shares_its_directory(tmp_path: Path) -> None:
    s = _store(tmp_path)
    a = _atom("durable fact", tags={"k": "v"}, meta={"m": 1})
    assert run(s.store_memory(a)).success
    mgr = StatePersistenceManager(s)  # the state chains live in the same store directory
    st = aether.ConsciousnessState(agent_id="agent")
    mgr.persist(st)
    s.close()
    again = BitemporalMemoryStore(tmp_path)  # the embedder comes back from the store's recorded identity
    got = run(again.retrieve_memory(a.atom_id))
    assert got is not None and got.content.metadata == {"m": 1}
    assert [r.atom_id for r in run(again.query_memories(MemoryQuery(tags={"m": 1})))] == [a.atom_id]
    assert StatePersistenceManager(tmp_path).restore("agent") == st
    again.close()
    cfg = BitemporalMemoryStore({"path": tmp_path, "embedder": aether.HashingEmbedder(dim=32)})
    assert a.atom_id in cfg.memory_atoms
    cfg.close()
    with pytest.raises(InvalidInputError):
        BitemporalMemoryStore({"path": tmp_path, "bogus": 1})
    with pytest.raises(InvalidInputError):
        BitemporalMemoryStore(42)


def test_wrapping_a_memory_does_not_close_it() -> None:
    mem = aether.open(embedder=aether.HashingEmbedder(dim=16))
    s = BitemporalMemoryStore(mem)
    run(s.store_memory(_atom("x")))
    s.close()
    assert mem.stats().atoms_current == 1
    mem.close()


def test_failures_after_close_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    s = _store()
    a = _atom("x")
    run(s.store_memory(a))
    s.close()
    assert not run(s.store_memory(_atom("y"))).success
    assert run(s.retrieve_memory(a.atom_id)) is None
    assert run(s.query_memories(MemoryQuery())) == []
    assert "StoreClosedError" in caplog.text


class _SlowEmbedder:
    """A hashing embedder that takes a while, to see whether the event loop keeps running."""

    def __init__(self) -> None:
        self._inner = aether.HashingEmbedder(dim=16)
        self.identity = self._inner.identity
        self.dim = 16
        self.threads: set[int] = set()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.threads.add(threading.get_ident())
        time.sleep(0.3)
        return self._inner.embed(texts)


def test_async_methods_do_not_block_the_event_loop() -> None:
    emb = _SlowEmbedder()
    s = BitemporalMemoryStore(embedder=emb)

    async def main() -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        res = await s.store_memory(_atom("slow to embed"))
        done.set()
        await task
        assert res.success
        return ticks

    assert asyncio.run(main()) >= 3
    assert threading.get_ident() not in emb.threads  # the embedding ran in a worker thread


def test_default_store_uses_the_real_model_for_semantic_queries() -> None:
    """The one test here with the real model (shared with the seed tests' default store)."""
    s = BitemporalMemoryStore()
    assert s.memory.embedder.identity.startswith("sentence-transformers:all-MiniLM-L6-v2")
    for text in ("Alice lives in Paris", "The invoice is due on Friday", "Bob plays the cello"):
        run(s.store_memory(_atom(text)))
    top = run(s.query_memories(MemoryQuery(content_query="Which city is Alice's home?", limit=1)))
    assert [r.content.inline for r in top] == ["Alice lives in Paris"]


def test_concurrent_async_stores_and_queries() -> None:
    s = _store()

    async def main() -> list[bool]:
        atoms = [_atom(f"memory {i}", tags={"batch": "g"}) for i in range(20)]
        results = await asyncio.gather(*(s.store_memory(a) for a in atoms))
        found = await asyncio.gather(*(s.retrieve_memory(a.atom_id) for a in atoms))
        assert all(f is not None for f in found)
        return [r.success for r in results]

    assert all(asyncio.run(main()))
    assert len(run(s.query_memories(MemoryQuery(tags={"batch": "g"}, limit=100)))) == 20


def test_modality_given_as_a_string() -> None:
    s = _store()
    a = _atom("caption of a photo")
    a.modality = "image"  # type: ignore[assignment]  # the seed's enum or its value
    assert run(s.store_memory(a)).success
    assert s.memory_atoms[a.atom_id].modality is MemoryModality.IMAGE
