"""Read-after-write keyword search: the newest rows are served from the in-memory tail, with no
tantivy commit on the search path, and the results equal those of the committed index."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aether
from aether import keyword as kw
from aether.keyword import index as kw_index
from aether.keyword import tail as bm25

from .conftest import FakeClock
from .test_keyword import VOCAB, _day, random_filter

pytest.importorskip("tantivy")


@pytest.fixture
def no_background(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold the background committer back, so that the tail stays until flush()."""
    monkeypatch.setattr(kw_index, "COMMIT_DELAY_S", 3600.0)


def _doc(rng: random.Random, i: int) -> str:
    return " ".join(rng.choices([*VOCAB, "the", "of", "running", "runs"], k=rng.randint(1, 30))) + f" w{i % 7}"


def triples(hits: list[aether.Hit]) -> list[tuple[str, int | None, float]]:
    return [(h.atom_id, h.atom.version_id, h.score) for h in hits]


def same(a: list[tuple[str, int | None, float]], b: list[tuple[str, int | None, float]]) -> None:
    assert [x[:2] for x in a] == [x[:2] for x in b]
    assert np.allclose([x[2] for x in a], [x[2] for x in b], rtol=2e-6, atol=1e-7)


def test_fieldnorm_table_and_bm25_match_tantivy(memory_mem: aether.Memory) -> None:
    assert bm25.FIELDNORMS[:25] == list(range(25)) and bm25.FIELDNORMS[41] == 42
    assert bm25.FIELDNORMS[255] == 2_013_265_944
    assert [bm25.fieldnorm(n) for n in (40, 41, 42, 43, 100)] == [40, 40, 42, 42, 96]
    rng = random.Random(3)
    texts = [_doc(rng, i) * rng.randint(1, 4) for i in range(200)]
    memory_mem.add_many(texts)  # one bulk write: committed straight into tantivy
    idx = kw.get_index(memory_mem._engine)
    idx.flush()
    from collections import Counter

    toks = [idx._an.analyze(t) for t in texts]
    total = sum(len(x) for x in toks)
    q = "alpha running golf w3"
    terms = idx.analyze(q)
    st = bm25.Stats(len(texts), total, {t: sum(1 for x in toks if t in x) for t in terms})
    want = bm25.scores_of(terms, [(Counter(x), len(x)) for x in toks], st)
    got = idx.scores_for(memory_mem._engine, q, np.arange(len(texts)))
    assert np.allclose(got, want, rtol=2e-6)
    assert idx._total_tokens(idx._searcher, memory_mem._engine) == total


@pytest.mark.parametrize("seed", range(4))
def test_tail_results_equal_the_committed_index(tmp_path: Path, embedder: aether.HashingEmbedder,
                                                no_background: None, seed: int) -> None:
    rng = random.Random(40 + seed)
    with aether.open(tmp_path / "s", embedder=embedder, clock=FakeClock()) as mem:
        # committed base: one bulk write, then a search commits it
        mem.add_many([{"content": _doc(rng, i), "valid_from": _day(rng.randint(0, 50)),
                       "tags": {"team": rng.choice("ab")}} for i in range(300)])
        mem.search("alpha", mode="keyword")
        idx = kw.get_index(mem._engine)
        txs = []
        # small writes: each goes to the tail (rare words change idf a lot: the re-scoring must follow)
        for i in range(25):
            if i % 5 == 0:
                mem.add_many([{"content": f"zulu zulu {rng.choice(VOCAB)}", "tags": {"team": "a"}},
                              {"content": f"zulu alpha {i}", "tags": {"team": "a"}}])
            else:
                mem.add(_doc(rng, 1000 + i) + " zulu" * (i % 3), valid_from=_day(rng.randint(0, 50)),
                        tags={"team": rng.choice("ab")})
            assert mem.last_commit is not None
            txs.append(mem.last_commit)
        assert len(idx._tail) > 0
        commits = idx.stats["commits"]
        queries = [" ".join(rng.sample([*VOCAB, "zulu", "running", "w3"], rng.randint(1, 4))) for _ in range(10)]
        filters: list[dict[str, Any]] = [{}] + [random_filter(rng, txs) for _ in range(5)]
        before: dict[Any, Any] = {}
        for q in queries:
            for j, f in enumerate(filters):
                for k in (1, 5, 20):
                    before[q, j, k] = (triples(mem.search(q, k=k, mode="keyword", **f)),
                                       triples(mem.search(q, k=k, **f)))
        assert idx.stats["commits"] == commits  # no search paid a commit
        assert idx.stats["tail_searches"] > 0
        idx.flush()
        assert len(idx._tail) == 0 and idx.stats["commits"] == commits + 1
        for (q, j, k), (kw_hits, default_hits) in before.items():
            same(kw_hits, triples(mem.search(q, k=k, mode="keyword", **filters[j])))
            same(default_hits, triples(mem.search(q, k=k, **filters[j])))


def test_background_commit_empties_the_tail(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        mem.add_many([f"base document {i}" for i in range(50)])
        mem.search("base", mode="keyword")
        idx = kw.get_index(mem._engine)
        c0 = idx.stats["commits"]
        mem.add("a fresh pelican sighting")
        hits = mem.search("pelican", mode="keyword")  # served at once, from the tail
        assert [h.atom.content.inline for h in hits] == ["a fresh pelican sighting"]
        deadline = time.monotonic() + 10
        while len(idx._tail) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(idx._tail) == 0 and idx.stats["commits"] > c0
        assert [h.atom.content.inline for h in mem.search("pelican", mode="keyword")] == ["a fresh pelican sighting"]
    with aether.open(tmp_path / "s", embedder=embedder) as mem:  # committed for good: nothing to catch up
        idx = kw.get_index(mem._engine)
        assert idx.stats["rebuilds"] == 0
        assert len(mem.search("pelican", mode="keyword")) == 1


def test_close_commits_the_tail(tmp_path: Path, embedder: aether.HashingEmbedder, no_background: None) -> None:
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        mem.add("osprey one")
        assert mem.search("osprey", mode="keyword")
        mem.add("osprey two")
        assert len(kw.get_index(mem._engine)._tail) >= 1
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        idx = kw.get_index(mem._engine)
        assert len(mem.search("osprey", mode="keyword")) == 2 and idx.stats["indexed"] == 0  # nothing to catch up


def test_read_after_write_is_fast(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    """A keyword search right after a write does not wait for an fsync (a commit takes 20-150 ms)."""
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        mem.add_many([f"filler text number {i} about things" for i in range(2000)])
        mem.search("filler", mode="keyword")
        ts = []
        for i in range(30):
            mem.add(f"fresh note {i} mentions quokka")
            t0 = time.perf_counter()
            hits = mem.search("quokka", k=5, mode="keyword")
            ts.append(time.perf_counter() - t0)
            assert hits and hits[0].atom.content.inline.endswith("quokka")
        assert float(np.median(ts)) < 0.015  # generous for a shared CI machine; a commit costs more
