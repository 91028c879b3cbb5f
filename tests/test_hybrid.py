"""Hybrid search: both halves under the same filters as dense search, fused by RRF or weights."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.retrieval import minmax

from .conftest import DIM, FakeClock
from .test_keyword import VOCAB, as_triples, assert_same, bm25_of, build_history, random_filter, visible_versions

pytest.importorskip("tantivy")


def dense_of(mem: aether.Memory, query: str, versions: list[aether.MemoryAtom]) -> dict[int, float]:
    """Cosine per version_id, from re-embedding the version's content (not the engine's vectors)."""
    emb = mem.embedder
    q = emb.embed([query])[0]
    if not versions:
        return {}
    vecs = emb.embed([v.content.inline for v in versions])
    return {v.version_id: float(s) for v, s in zip(versions, vecs @ q, strict=True)}  # type: ignore[misc]


def best_first(score: dict[int, float], versions: list[aether.MemoryAtom], dedupe: bool) -> list[tuple[str, int]]:
    by_vid = {v.version_id: v.atom_id for v in versions}
    out, seen = [], set()
    for vid in sorted(score, key=lambda x: (-score[x], x)):
        aid = by_vid[vid]
        if dedupe and aid in seen:
            continue
        seen.add(aid)
        out.append((aid, vid))
    return out


def ref_rrf(lists: list[list[tuple[str, int]]], k: int, dedupe: bool, c: int = 60) -> list[tuple[str, int, float]]:
    acc: dict[object, list] = {}
    for lst in lists:
        for rank, (aid, vid) in enumerate(lst, 1):
            g = aid if dedupe else vid
            cur = acc.setdefault(g, [0.0, rank, aid, vid])
            cur[0] += 1 / (c + rank)
            if rank < cur[1]:
                cur[1:] = [rank, aid, vid]
    order = sorted(acc.values(), key=lambda x: (-x[0], x[3]))
    return [(aid, vid, s) for s, _, aid, vid in order[:k]]


@pytest.mark.parametrize("seed", range(5))
def test_dense_keyword_and_hybrid_obey_the_same_filters(tmp_path: Path, embedder: aether.HashingEmbedder,
                                                          seed: int) -> None:
    rng = random.Random(100 + seed)
    with aether.open(tmp_path / "s", embedder=embedder, clock=FakeClock()) as mem:
        txs = build_history(mem, rng, 40)
        for _ in range(15):
            f = random_filter(rng, txs)
            q = " ".join(rng.sample(VOCAB, rng.randint(1, 3)))
            k = rng.randint(1, 6)
            dedupe = "valid_during" in f
            vis = visible_versions(mem, f)
            dense = dense_of(mem, q, vis)
            allowed = {v.version_id for v in vis}
            bm = {vid: s for vid, s in bm25_of(mem, q).items() if vid in allowed}
            d_list, k_list = best_first(dense, vis, dedupe), best_first(bm, vis, dedupe)

            got_dense = mem.search(q, k=k, mode="dense", **f)
            assert [(h.atom_id, h.atom.version_id) for h in got_dense] == d_list[:k]
            got_rrf = as_triples(mem.search(q, k=k, mode="hybrid", **f))
            assert_same(got_rrf, ref_rrf([d_list, k_list], k, dedupe))
            assert {v for _, v, _ in got_rrf} <= allowed

            w = rng.choice([0.0, 0.3, 0.5, 1.0])
            vids = sorted({v for _, v in d_list} | {v for _, v in k_list})  # both halves' candidates
            nd = dict(zip(vids, minmax(np.asarray([dense[v] for v in vids])), strict=True))
            nk = dict(zip(vids, minmax(np.asarray([bm.get(v, 0.0) for v in vids])), strict=True))
            fused = {v: w * nd[v] + (1 - w) * nk[v] for v in vids}
            by_vid = {v.version_id: v.atom_id for v in vis}
            want_w = [(a, v, fused[v]) for a, v in best_first(fused, vis, dedupe)[:k]]
            got_w = as_triples(mem.search(q, k=k, mode="hybrid", fusion="weighted", dense_weight=w, **f))
            assert [s for *_, s in got_w] == pytest.approx([s for *_, s in want_w], abs=1e-5)
            assert all(by_vid.get(v) == a for a, v, _ in got_w)


def test_explain_shows_both_halves(memory_mem: aether.Memory) -> None:
    memory_mem.add_many(["the osprey dives for fish", "fish markets open early", "a quiet morning"])
    plan = memory_mem.explain("osprey fish", k=2, mode="hybrid")
    assert plan.mode == "hybrid" and plan.fusion is not None and plan.keyword is not None
    assert plan.fusion.method == "rrf" and plan.fusion.rrf_k == 60
    assert plan.keyword.terms == ["osprey", "fish"]
    assert len(plan.fusion.dense_hits) == 2 and len(plan.fusion.keyword_hits) == 2
    assert plan.fusion.keyword_hits[0].rank == 1 and plan.fusion.keyword_hits[0].score > 0
    hits = memory_mem.search("osprey fish", k=2, mode="hybrid")
    assert hits[0].atom.content.inline == "the osprey dives for fish"
    wplan = memory_mem.explain("osprey", k=1, mode="hybrid", fusion="weighted", dense_weight=0.2, rrf_k=10)
    assert wplan.fusion is not None and wplan.fusion.method == "weighted" and wplan.fusion.dense_weight == 0.2


def test_hybrid_with_a_vector_query_returns_the_dense_ranking(memory_mem: aether.Memory) -> None:
    memory_mem.add_many(["red", "green", "blue"])
    q = memory_mem.embedder.embed(["green"])[0]
    dense = memory_mem.search(q, k=3, mode="dense")
    hybrid = memory_mem.search(q, k=3, mode="hybrid")
    assert [(h.atom_id, h.score) for h in hybrid] == [(h.atom_id, h.score) for h in dense]
    assert memory_mem.explain(q, k=3, mode="hybrid").notes


def test_hybrid_finds_what_each_half_finds_alone(memory_mem: aether.Memory) -> None:
    """A name only BM25 matches and a paraphrase only the vectors match both make the fused top-2."""
    vec = np.zeros(DIM, np.float32)
    vec[0] = 1.0
    other = np.zeros(DIM, np.float32)
    other[1] = 1.0
    memory_mem.add("Zorblax ordered the blue widget", vector=other)
    memory_mem.add("something semantically close", vector=vec)
    memory_mem.add_many([f"unrelated filler {i}" for i in range(10)], vectors=np.tile(other, (10, 1)) + 0.01)
    memory_mem._engine._qcache["zorblax"] = vec  # the query's embedding points at the second atom
    hits = memory_mem.search("zorblax", k=2, mode="hybrid")
    assert {h.atom.content.inline for h in hits} == {"Zorblax ordered the blue widget", "something semantically close"}
