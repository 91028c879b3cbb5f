"""Adaptive score fusion (the default search), its per-query weight, and explain's per-hit halves."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import aether
from aether import retrieval as kw
from aether.keyword import index as kw_index
from aether.keyword import tail as bm25
from aether.retrieval import fusion as fu
from aether.retrieval import hybrid

from .conftest import FakeClock
from .test_hybrid import best_first, dense_of
from .test_keyword import VOCAB, as_triples, bm25_of, build_history, random_filter, visible_versions

pytest.importorskip("tantivy")


def test_evidence_is_scale_free_and_zero_for_flat_lists() -> None:
    assert fu.evidence([]) == 0.0 and fu.evidence([3.0]) == 0.0 and fu.evidence([2.0, 2.0, 2.0]) == 0.0
    peaked = [10.0, 1.0, 1.1, 0.9, 1.0]
    assert fu.evidence(peaked) == pytest.approx(fu.evidence([x * 7 + 3 for x in peaked]))
    assert fu.evidence(peaked) > fu.evidence([10.0, 9.5, 9.0, 8.5, 8.0])


def test_adaptive_weight_follows_the_evidence() -> None:
    flat, peaked = [0.5, 0.49, 0.48, 0.47], [0.9, 0.3, 0.29, 0.28]
    assert fu.adaptive_weight(peaked, []) == 1.0  # no keyword match: the dense half alone
    assert fu.adaptive_weight([], peaked) == 0.0
    assert fu.adaptive_weight([1.0, 1.0], [2.0, 2.0], base=0.6) == 0.6  # no evidence either side
    w_dense_sharp = fu.adaptive_weight(peaked, flat)
    w_kw_sharp = fu.adaptive_weight(flat, peaked)
    assert 0 <= w_kw_sharp < w_dense_sharp <= 1
    # share=0: the constant base; share=1: the pure evidence ratio
    assert fu.adaptive_weight(peaked, flat, base=0.3, share=0.0) == pytest.approx(0.3)
    ed, ek = fu.evidence(peaked), fu.evidence(flat)
    assert fu.adaptive_weight(peaked, flat, share=1.0) == pytest.approx(ed / (ed + ek))


def test_default_search_is_adaptive_hybrid_and_dense_without_tantivy(
    memory_mem: aether.Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_mem.add_many(["the osprey dives for fish", "fish markets open early", "a quiet morning"])
    plan = memory_mem.explain("osprey fish", k=2)
    assert plan.mode == "hybrid" and plan.fusion is not None and plan.fusion.method == "adaptive"
    assert plan.fusion.dense_weight == fu.ADAPTIVE_BASE and plan.fusion.effective_dense_weight is not None
    assert memory_mem.explain("osprey fish", k=2, mode="hybrid").fusion.method == "rrf"  # type: ignore[union-attr]
    assert memory_mem.explain("osprey", k=1, fusion="weighted").fusion.method == "weighted"  # type: ignore[union-attr]
    monkeypatch.setattr(kw_index, "available", lambda: False)
    plain = memory_mem.explain("osprey fish", k=2)
    assert plain.mode == "dense" and plain.fusion is None
    got = [(h.atom_id, h.score) for h in memory_mem.search("osprey fish", k=2)]
    assert got == [(h.atom_id, h.score) for h in memory_mem.search("osprey fish", k=2, mode="dense")]


def test_default_with_a_vector_query_is_the_dense_search(memory_mem: aether.Memory) -> None:
    memory_mem.add_many(["red", "green", "blue"])
    q = memory_mem.embedder.embed(["green"])[0]
    assert [(h.atom_id, h.score) for h in memory_mem.search(q, k=3)] == \
        [(h.atom_id, h.score) for h in memory_mem.search(q, k=3, mode="dense")]


def visible_bm25(mem: aether.Memory, query: str, vis: list[aether.MemoryAtom]) -> dict[int, float]:
    """BM25 per visible version with the visible rows' own document frequencies and count (the
    store's average length), from the versions' text re-analysed here."""
    idx = kw_index.get_index(mem._engine)
    terms = idx.analyze(query)
    docs = {v.version_id: Counter(idx._an.analyze(v.content.inline)) for v in vis}
    df = {t: sum(1 for tf in docs.values() if tf.get(t)) for t in terms}
    searcher, _ = idx._view(mem._engine)
    avgdl = idx._total_tokens(searcher, mem._engine) / searcher.num_docs
    st = bm25.Stats(len(vis), avgdl * len(vis), df)
    out = {}
    for vid, tf in docs.items():
        s = float(np.float32(bm25.score(terms, tf, sum(tf.values()), st)))
        if any(tf.get(t) for t in terms):
            out[vid] = s
    return out


@pytest.mark.parametrize("seed", range(4))
def test_adaptive_fusion_equals_brute_force_under_filters(tmp_path: Path, embedder: aether.HashingEmbedder,
                                                         seed: int) -> None:
    """Union of both halves' candidates, each scored by both, min-max scaled, weighted by the evidence
    of each half's own list: recomputed here from history() and re-embedding, not the engine's state."""
    rng = random.Random(300 + seed)
    with aether.open(tmp_path / "s", embedder=embedder, clock=FakeClock()) as mem:
        txs = build_history(mem, rng, 40)
        for _ in range(12):
            f = random_filter(rng, txs)
            q = " ".join(rng.sample(VOCAB, rng.randint(1, 3)))
            k = rng.randint(1, 6)
            dedupe = "valid_during" in f
            vis = visible_versions(mem, f)
            allowed = {v.version_id for v in vis}
            dense = dense_of(mem, q, vis)
            bm = {vid: s for vid, s in bm25_of(mem, q).items() if vid in allowed}
            d_list, k_list = best_first(dense, vis, dedupe), best_first(bm, vis, dedupe)
            got = as_triples(mem.search(q, k=k, **f))  # the default: adaptive hybrid
            assert {v for _, v, _ in got} <= allowed
            d_sc, k_sc = [dense[v] for _, v in d_list], [bm[v] for _, v in k_list]
            pad = min(kw.DEFAULT_DEPTH, len(vis))
            w = fu.adaptive_weight(d_sc, k_sc, pad_to=pad) if k_sc else 1.0
            vids = sorted({v for _, v in d_list} | {v for _, v in k_list})
            if not vids:
                assert got == []
                continue
            sig = bm
            depth = hybrid.candidate_depth(k, len(vis))
            assert len(d_list) <= depth and len(k_list) <= depth  # nothing cut: the lists here are whole
            if k_sc and not dedupe and len(vis) < mem._engine.snapshot.n and (len(k_list) < depth or len(vis) <= depth):
                # A filter, and its keyword ranking ended early: BM25 over the visible rows alone.
                sig = visible_bm25(mem, q, vis)
                own = sorted((sig[v] for _, v in k_list), reverse=True)
                top = max(bm.get(v, 0.0) for v in vids)
                kept = min(1.0, max(sig.get(v, 0.0) for v in vids) / top)
                w = 1.0 - (1.0 - fu.adaptive_weight(d_sc, own, pad_to=pad)) * kept
            nd = dict(zip(vids, kw.minmax(np.asarray([dense[v] for v in vids])), strict=True))
            nk = dict(zip(vids, kw.minmax(np.asarray([sig.get(v, 0.0) for v in vids])), strict=True))
            fused = {v: w * nd[v] + (1 - w) * nk[v] for v in vids}
            want = [fused[v] for _, v in best_first(fused, vis, dedupe)[:k]]
            assert [s for *_, s in got] == pytest.approx(want, abs=1e-5)
            assert all(0.0 <= s <= 1.0 + 1e-9 for *_, s in got)


@pytest.mark.parametrize("fusion", ["rrf", "weighted", "adaptive"])
def test_explain_shows_each_halfs_rank_and_score_for_every_hit(memory_mem: aether.Memory, fusion: str) -> None:
    rng = random.Random(7)
    memory_mem.add_many([" ".join(rng.choices(VOCAB, k=rng.randint(2, 6))) + f" n{i}" for i in range(130)])
    q = "alpha delta golf"
    plan = memory_mem.explain(q, k=8, mode="hybrid", fusion=fusion)
    hits = memory_mem.search(q, k=8, mode="hybrid", fusion=fusion)
    fp = plan.fusion
    assert fp is not None and len(fp.hits) == len(hits) == 8
    qv = memory_mem.embedder.embed([q])[0]
    bm = bm25_of(memory_mem, q)
    d_rank = {h.version_id: h.rank for h in fp.dense_hits}
    k_rank = {h.version_id: h.rank for h in fp.keyword_hits}
    for i, (fh, h) in enumerate(zip(fp.hits, hits, strict=True)):
        assert fh.rank == i + 1 and fh.atom_id == h.atom_id and fh.version_id == h.atom.version_id
        assert fh.score == pytest.approx(h.score)
        cos = float(memory_mem.embedder.embed([h.atom.content.inline])[0] @ qv)
        assert fh.dense_score == pytest.approx(cos, abs=1e-5)
        assert fh.keyword_score == pytest.approx(bm.get(fh.version_id, 0.0), rel=1e-5)
        # ranks within each half's top-depth list; the plans list the top k of each half
        if fh.version_id in d_rank:
            assert fh.dense_rank == d_rank[fh.version_id]
        if fh.version_id in k_rank:
            assert fh.keyword_rank == k_rank[fh.version_id]
        assert fh.dense_rank is None or 1 <= fh.dense_rank <= plan.fusion.depth <= kw.DEFAULT_DEPTH
        assert fh.keyword_rank is None or fh.keyword_score > 0  # type: ignore[operator]


def test_fusion_options_are_validated(memory_mem: aether.Memory) -> None:
    memory_mem.add("something")
    with pytest.raises(aether.InvalidInputError):
        memory_mem.search("something", fusion="max")
    with pytest.raises(aether.InvalidInputError):
        memory_mem.search("something", fusion="adaptive", dense_weight=1.5)


def test_candidate_depth_follows_k_and_takes_a_small_visible_set_whole() -> None:
    assert hybrid.candidate_depth(10, 10_000) == hybrid.MIN_DEPTH
    assert hybrid.candidate_depth(20, 10_000) == 60
    assert hybrid.candidate_depth(50, 10_000) == hybrid.DEFAULT_DEPTH
    assert hybrid.candidate_depth(500, 10_000) == 500
    assert hybrid.candidate_depth(10, 80) == 80  # every visible row
    assert hybrid.candidate_depth(10, 5) == hybrid.MIN_DEPTH


def test_explain_reports_the_depth_used(memory_mem: aether.Memory) -> None:
    rng = random.Random(3)
    memory_mem.add_many([" ".join(rng.choices(VOCAB, k=4)) + f" n{i}" for i in range(300)])
    fp = memory_mem.explain("alpha delta", k=5).fusion
    assert fp is not None and fp.depth == hybrid.MIN_DEPTH
    fp = memory_mem.explain("alpha delta", k=5, mode="hybrid", fusion="adaptive").fusion
    assert fp is not None and fp.depth == hybrid.MIN_DEPTH
