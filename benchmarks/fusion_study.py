"""Choosing the hybrid fusion by leave-one-collection-out (LOCO) over SciFact, Cranfield and CISI.

For every query the candidates of both halves (dense top-``depth`` by exact cosine, BM25
top-``depth`` from aether's tantivy index) are collected once, each candidate scored by both
halves, exactly as ``mode="hybrid"`` does; then every fusion family is evaluated on them in numpy:

- ``rrf``: reciprocal rank fusion (k=60), no parameter;
- ``convex``: ``w * minmax(cosine) + (1 - w) * minmax(bm25)`` over the union (``fusion="weighted"``);
- ``adaptive``: the same with the per-query weight of :func:`aether.retrieval.fusion.adaptive_weight`
  (base weight and evidence share, ``fusion="adaptive"``).

A family's parameters are chosen on two collections (best mean nDCG@10) and reported on the third;
the table shows each collection's held-out figure and the parameters its fold chose. The chosen
constants are ``aether.retrieval.fusion.ADAPTIVE_BASE`` / ``ADAPTIVE_EVIDENCE``.

Run (embeddings cached by ``_ir_data.py`` under ``/tmp``; about a minute)::

    .venv/bin/python benchmarks/fusion_study.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _ir_data import COLLECTIONS, RESULTS, embeddings, load

import aether
from aether.retrieval.fusion import adaptive_weight, minmax

DEPTH = 100


def ndcg10(ranked: list[int], gains: dict[int, int], ideal: list[int]) -> float:
    dcg = sum(gains.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:10]))
    return dcg / idcg if idcg > 0 else 0.0


def collect(name: str, embedder: Any) -> list[dict[str, Any]]:
    """Per query: the union of both halves' candidates with both scores, each half's own list."""
    from aether.keyword import get_index

    col = load(name)
    dvec = embeddings(col, embedder, "docs")
    qvec = embeddings(col, embedder, "queries")
    dn = dvec / np.linalg.norm(dvec, axis=1, keepdims=True)
    qn = qvec / np.linalg.norm(qvec, axis=1, keepdims=True)
    mem = aether.open(None, embedder=aether.PrecomputedEmbedder(dvec.shape[1]))
    try:
        mem.add_many([{"content": d, "atom_id": i} for d, i in zip(col.docs, col.doc_ids, strict=True)],
                     vectors=dvec)
        eng = mem._engine
        idx = get_index(eng)
        snap = eng.snapshot
        mask = np.ones(snap.n, bool)
        pos = {d: i for i, d in enumerate(col.doc_ids)}  # rows are in insertion order
        out = []
        for qid, text, qv in zip(col.query_ids, col.queries, qn, strict=True):
            sims = dn @ qv
            dtop = np.argsort(-sims, kind="stable")[:DEPTH]
            kres, _ = idx.search(eng, snap, text, mask, DEPTH, dedupe=True)
            ktop = np.asarray([r for r, _ in kres], np.int64)
            union = np.asarray(sorted(set(dtop.tolist()) | set(ktop.tolist())), np.int64)
            rel = col.qrels[qid]
            out.append({
                "union": union, "dense": sims[union], "bm25": idx.scores_for(eng, text, union),
                "dtop": dtop, "dscores": sims[dtop], "ktop": ktop, "kscores": np.asarray([s for _, s in kres]),
                "gains": {pos[d]: g for d, g in rel.items() if d in pos},
                "ideal": sorted(rel.values(), reverse=True),
            })
        return out
    finally:
        mem.close()


def by_score(q: dict[str, Any], fused: np.ndarray) -> list[int]:
    u = q["union"]
    return [int(x) for x in u[np.lexsort((u, -fused))]]


def rrf_rank(q: dict[str, Any], k: int = 60) -> list[int]:
    acc: dict[int, float] = {}
    for lst in (q["dtop"], q["ktop"]):
        for r, d in enumerate(lst.tolist(), 1):
            acc[d] = acc.get(d, 0.0) + 1.0 / (k + r)
    return sorted(acc, key=lambda d: (-acc[d], d))


def convex(q: dict[str, Any], w: float) -> list[int]:
    return by_score(q, w * minmax(q["dense"]) + (1 - w) * minmax(q["bm25"]))


def adaptive(q: dict[str, Any], base: float, share: float) -> list[int]:
    return convex(q, adaptive_weight(q["dscores"], q["kscores"], base=base, share=share))


FAMILIES: dict[str, tuple[dict[str, list[float]], Any]] = {
    "rrf": ({}, lambda q, p: rrf_rank(q)),
    "convex": ({"w": [0.3, 0.4, 0.5, 0.6, 0.7]}, lambda q, p: convex(q, p["w"])),
    "adaptive": ({"base": [0.4, 0.5, 0.6, 0.7], "share": [0.25, 0.5, 0.75, 1.0]},
                 lambda q, p: adaptive(q, p["base"], p["share"])),
}


def mean_ndcg(data: list[dict[str, Any]], fn: Any, p: dict[str, float]) -> float:
    return float(np.mean([ndcg10(fn(q, p), q["gains"], q["ideal"]) for q in data]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collections", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS))
    args = ap.parse_args()
    cols = args.collections
    embedder = aether.SentenceTransformerEmbedder()
    data = {c: collect(c, embedder) for c in cols}
    report: dict[str, Any] = {"single": {}, "families": {}}
    for c in cols:
        report["single"][c] = {
            "dense": float(np.mean([ndcg10(q["dtop"].tolist(), q["gains"], q["ideal"]) for q in data[c]])),
            "keyword": float(np.mean([ndcg10(q["ktop"].tolist() or q["dtop"].tolist(), q["gains"], q["ideal"])
                                      for q in data[c]])),
        }
    for fam, (grid, fn) in FAMILIES.items():
        keys = list(grid)
        combos = [dict(zip(keys, v, strict=True)) for v in itertools.product(*[grid[k] for k in keys])]
        table = [(p, {c: mean_ndcg(data[c], fn, p) for c in cols}) for p in combos]
        loco = {}
        for held in cols:
            train = [c for c in cols if c != held]
            p, scores = max(table, key=lambda t: np.mean([t[1][c] for c in train]))
            loco[held] = {"ndcg@10": scores[held], "chosen": p}
        fitted_p, fitted = max(table, key=lambda t: np.mean(list(t[1].values())))
        report["families"][fam] = {"loco": loco, "fitted": {"params": fitted_p, "ndcg@10": fitted}}
    print("\n| collection | dense | keyword | " + " | ".join(f"{f} (held out)" for f in FAMILIES) + " |")
    print("|---|---|---|" + "---|" * len(FAMILIES))
    for c in cols:
        s = report["single"][c]
        cells = [f"{report['families'][f]['loco'][c]['ndcg@10']:.3f} {report['families'][f]['loco'][c]['chosen']}"
                 for f in FAMILIES]
        print(f"| {c} | {s['dense']:.3f} | {s['keyword']:.3f} | " + " | ".join(cells) + " |")
    best_single = np.mean([max(report["single"][c].values()) for c in cols])
    print(f"\nmean of the better single half: {best_single:.3f}")
    for f in FAMILIES:
        m = np.mean([report["families"][f]["loco"][c]["ndcg@10"] for c in cols])
        print(f"{f}: held-out mean {m:.3f} ({m - best_single:+.3f}); fitted on all "
              f"{report['families'][f]['fitted']['params']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fusion_study.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
