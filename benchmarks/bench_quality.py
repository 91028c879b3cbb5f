"""Retrieval quality and latency: dense (exact and through aether), keyword (BM25) and hybrid.

Reports nDCG@10 and recall@100 on SciFact, Cranfield and CISI (BEIR layout, in
``../shared/data/ir/``, or ``$AETHER_IR_DATA``) for:

- ``dense-exact``: brute-force cosine over the document embeddings in numpy (the reference);
- ``dense``: ``mem.search(mode="dense")``, aether's normal dense path (the bucketed planner; on
  these small collections every partition is below the recipe's HNSW threshold, so this is exact);
- ``dense-ann``: the same dense search with the ANN path forced: a second (in-memory) store whose
  recipe is the default one with the flat tier removed and ``exact_rows=0``, so every partition
  is an HNSW32 index (the default tier: efConstruction 80, efSearch 64) searched through the
  planner's efSearch policy; ``explain()`` is checked to show strategy ``hnsw`` for every partition.
  nDCG@10 comes from ``k=10`` searches (efSearch 64, the policy's floor), recall@100 from ``k=100``;
  ``recall@10_vs_exact`` is the overlap with the exact top 10. ``--ann-ef 32 128`` adds one
  ``dense-ann-ef<x>`` column per value (the tier's efSearch replaced: how nDCG@10 moves with efSearch);
- ``keyword``: ``mode="keyword"``, BM25 from the tantivy index;
- ``hybrid-rrf``: ``mode="hybrid"`` with reciprocal rank fusion (k=60, 100 candidates a side);
- ``hybrid-w<x>``: ``mode="hybrid", fusion="weighted", dense_weight=x``;
- ``hybrid-adaptive``: ``fusion="adaptive"`` (per-query weight; ``benchmarks/fusion_study.py`` chose its
  constants leave-one-collection-out and reports the held-out figures);
- ``default``: ``mem.search`` with no mode (adaptive hybrid when tantivy is installed);
- ``default-k10``: the same with ``k=10`` (nDCG@10 only): fusion then takes 30 candidates a side
  (``aether.retrieval.hybrid.candidate_depth``), not 100;

and the single-query latency of each mode (median and p95 over the queries; query embeddings
are precomputed, so the figures are search time, not model time). Embeddings come from
all-MiniLM-L6-v2 and are cached under ``/tmp/aether-ir-embeddings`` (``.npy``, ``$AETHER_EMB_CACHE``),
so reruns take seconds. ``--scale 100000`` instead measures latency and read-after-write at that many
synthetic atoms.

Run::

    .venv/bin/python benchmarks/bench_quality.py [--collections scifact cranfield cisi]
    .venv/bin/python benchmarks/bench_quality.py --dense-only --ann-ef 32 128   # exact vs ANN only, ~30 s

Writes ``benchmarks/results/bench_quality.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _ir_data import COLLECTIONS, RESULTS, Collection, embeddings, load

import aether

K_EVAL = 100


def ndcg_at_10(ranked: list[str], rel: dict[str, int]) -> float:
    """nDCG@10 with linear gains (as pytrec_eval / BEIR compute it)."""
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_100(ranked: list[str], rel: dict[str, int]) -> float:
    return len(set(ranked[:100]) & set(rel)) / len(rel)


def evaluate(col: Collection, runs: list[list[str]]) -> dict[str, float]:
    nd = [ndcg_at_10(r, col.qrels[q]) for q, r in zip(col.query_ids, runs, strict=True)]
    rc = [recall_at_100(r, col.qrels[q]) for q, r in zip(col.query_ids, runs, strict=True)]
    return {"ndcg@10": float(np.mean(nd)), "recall@100": float(np.mean(rc))}


def latency(fn: Any, queries: list[str], n: int) -> dict[str, float]:
    qs = queries[:n]
    fn(qs[0])  # warm up (first keyword search attaches and commits the index)
    ts, cpu = [], []
    for q in qs:
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(q)
        ts.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    ts.sort()
    # cpu_p50_ms: the searching thread's CPU time, steadier than wall time on a shared machine
    # (every search runs in the calling thread, so it is the whole of its work).
    return {"p50_ms": statistics.median(ts), "p95_ms": ts[min(len(ts) - 1, int(0.95 * len(ts)))],
            "cpu_p50_ms": statistics.median(cpu)}


def forced_ann_recipe(ef: int | None = None) -> Any:
    """The default recipe with only its HNSW tier and no exact-scan shortcut: every sealed partition
    is searched through FAISS HNSW (with the planner's efSearch policy), however small."""
    from aether.index import load_recipe

    base = load_recipe()
    hnsw = next(t for t in base.tiers if t.kind == "hnsw")
    search = dict(hnsw.search) if ef is None else {**hnsw.search, "efSearch": ef}
    tier = {"name": hnsw.name, "max_rows": None, "factory": hnsw.factory, "build": hnsw.build, "search": search}
    return base.with_overrides(tail_rows=1, background=False, tiers=[tier], planner={"exact_rows": 0})


def run_ann(col: Collection, dvec: np.ndarray, qn: np.ndarray, exact_top: np.ndarray, lat_n: int,
            ef: int | None) -> dict[str, Any]:
    """Dense search with the HNSW path forced (see the module docstring), on an in-memory store."""
    from aether.index import find_index, use_recipe

    mem = aether.open(None, embedder=aether.PrecomputedEmbedder(dvec.shape[1]))
    try:
        idx = use_recipe(mem._engine, forced_ann_recipe(ef))
        t0 = time.perf_counter()
        mem.add_many([{"content": d, "atom_id": i} for d, i in zip(col.docs, col.doc_ids, strict=True)],
                     vectors=dvec)
        idx.seal()
        build_s = time.perf_counter() - t0
        assert find_index(mem._engine) is idx and idx.state.covered == mem._engine.snapshot.n
        plan = mem.explain(qn[0], k=10)
        strategies = sorted({b.strategy for b in plan.buckets})
        if strategies != ["hnsw"]:
            raise AssertionError(f"the ANN path was not taken: plan strategies {strategies}")
        qs = [q.astype(np.float32) for q in qn]
        top10 = [mem.search(q, k=10) for q in qs]
        top100 = mem.search_many(np.stack(qs), k=K_EVAL)
        ids10 = [[h.atom.atom_id for h in hits] for hits in top10]
        m = {
            "ndcg@10": evaluate(col, ids10)["ndcg@10"],
            "recall@100": evaluate(col, [[h.atom.atom_id for h in hits] for hits in top100])["recall@100"],
            "recall@10_vs_exact": float(np.mean([
                len(set(got) & {col.doc_ids[j] for j in ref[:10]}) / 10 for got, ref in zip(ids10, exact_top,
                                                                                           strict=True)
            ])),
            "efSearch": [b.params.get("efSearch") for b in plan.buckets],
            "partitions": len(plan.buckets),
            "hnsw_build_s": build_s,
        }
        m.update(latency(lambda q: mem.search(q, k=10), qs, lat_n))  # type: ignore[arg-type]
        return m
    finally:
        mem.close()


def run_collection(name: str, embedder: Any, weights: list[float], lat_n: int, *, ann_ef: list[int] | None = None,
                   dense_only: bool = False) -> dict[str, Any]:
    col = load(name)
    t0 = time.perf_counter()
    dvec = embeddings(col, embedder, "docs")
    qvec = embeddings(col, embedder, "queries")
    t_embed = time.perf_counter() - t0
    out: dict[str, Any] = {"docs": len(col.docs), "queries": len(col.queries), "embed_or_cache_s": t_embed}
    modes: dict[str, Any] = {}

    # Reference: exact cosine in numpy.
    dn = dvec / np.linalg.norm(dvec, axis=1, keepdims=True)
    qn = qvec / np.linalg.norm(qvec, axis=1, keepdims=True)
    sims = qn @ dn.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :K_EVAL]
    modes["dense-exact"] = evaluate(col, [[col.doc_ids[j] for j in row] for row in top])
    modes["dense-ann"] = run_ann(col, dvec, qn, top, lat_n, None)
    for ef in ann_ef or []:
        modes[f"dense-ann-ef{ef}"] = run_ann(col, dvec, qn, top, lat_n, ef)
    if dense_only:
        out["modes"] = modes
        return out

    tmp = Path(tempfile.mkdtemp(prefix="aether-bench-quality-"))
    try:
        mem = aether.open(tmp / "store", embedder=embedder)
        t0 = time.perf_counter()
        mem.add_many([{"content": d, "atom_id": i} for d, i in zip(col.docs, col.doc_ids, strict=True)],
                     vectors=dvec)
        out["ingest_s"] = time.perf_counter() - t0
        # Seed the query-embedding cache so no mode pays for the model at query time.
        eng = mem._engine
        for text, v in zip(col.queries, qn, strict=True):
            eng._qcache[text] = v.astype(np.float32)

        t0 = time.perf_counter()
        mem.search(col.queries[0], k=1, mode="keyword")
        out["keyword_build_s"] = time.perf_counter() - t0

        configs: list[tuple[str, dict[str, Any]]] = [
            ("dense", {"mode": "dense"}),
            ("keyword", {"mode": "keyword"}),
            ("hybrid-rrf", {"mode": "hybrid"}),
            ("hybrid-adaptive", {"mode": "hybrid", "fusion": "adaptive"}),
            ("default", {}),
        ] + [(f"hybrid-w{w:g}", {"mode": "hybrid", "fusion": "weighted", "dense_weight": w}) for w in weights]
        for label, opts in configs:
            t0 = time.perf_counter()
            res = mem.search_many(col.queries, k=K_EVAL, **opts)
            batch_s = time.perf_counter() - t0
            modes[label] = evaluate(col, [[h.atom.atom_id for h in hits] for hits in res])
            modes[label]["batch_ms_per_query_k100"] = batch_s / len(col.queries) * 1000
            modes[label].update(latency(lambda q, o=opts: mem.search(q, k=10, **o), col.queries, lat_n))
        # The default as a top-10 search (fusion takes fewer candidates for a smaller k: candidate_depth).
        res = mem.search_many(col.queries, k=10)
        modes["default-k10"] = {"ndcg@10": evaluate(col, [[h.atom.atom_id for h in hits] for hits in res])["ndcg@10"],
                                "recall@100": float("nan")}

        # Durability costs: reopen (load the persisted index, nothing to catch up) against a
        # full rebuild from the rows (what an encrypted store does on open).
        mem.close()
        t0 = time.perf_counter()
        mem = aether.open(tmp / "store", embedder=embedder)
        mem.search(col.queries[0], k=1, mode="keyword")
        out["reopen_first_keyword_search_s"] = time.perf_counter() - t0
        from aether.keyword import get_index

        idx = get_index(mem._engine)
        t0 = time.perf_counter()
        with mem._engine._wlock:
            idx.on_reset(mem._engine)
        out["keyword_rebuild_s"] = time.perf_counter() - t0
        # Incremental maintenance: 20 single adds, each followed by a keyword search (so each
        # pays a tantivy commit), against 20 adds then one search (one commit).
        v = dvec[0]
        t0 = time.perf_counter()
        for i in range(20):
            mem.add(f"incremental note {i} about {col.queries[i % len(col.queries)]}", vector=v)
            mem.search("incremental note", k=1, mode="keyword")
        out["add_then_keyword_search_ms"] = (time.perf_counter() - t0) / 20 * 1000
        t0 = time.perf_counter()
        for i in range(20):
            mem.add(f"second batch note {i}", vector=v)
        mem.search("second batch note", k=1, mode="keyword")
        out["add_x20_then_one_search_ms_per_add"] = (time.perf_counter() - t0) / 20 * 1000
        mem.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["modes"] = modes
    return out


def latency_at_scale(n: int, n_queries: int, seed: int = 0) -> dict[str, Any]:
    """Search latency at ``n`` atoms (synthetic Zipf-distributed texts, HashingEmbedder dim 384):
    dense, keyword, hybrid RRF and the default (adaptive hybrid) p50 / p95, and read-after-write:
    one ``add`` then at once a keyword (and a default) search, whose first answer must hold the
    new atom (served from the keyword index's in-memory tail; no tantivy commit on that path)."""
    from aether.keyword import get_index

    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(20_000)]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()

    def text(m: int) -> str:
        return " ".join(vocab[j] for j in rng.choice(len(vocab), size=m, p=p))

    docs = [text(int(rng.integers(8, 40))) for _ in range(n)]
    queries = [text(int(rng.integers(2, 6))) for _ in range(n_queries)]
    mem = aether.open(None, embedder=aether.HashingEmbedder(dim=384))
    out: dict[str, Any] = {"atoms": n}
    try:
        t0 = time.perf_counter()
        for i in range(0, n, 20_000):
            mem.add_many(docs[i : i + 20_000])
        out["ingest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mem.search(queries[0], k=10, mode="keyword")
        out["keyword_build_s"] = time.perf_counter() - t0
        from aether.index import find_index

        idx = find_index(mem._engine)
        if idx is not None:
            idx.wait()  # the dense tail sealed into its runs: steady-state dense latency
        mem.search_many(queries, k=10, mode="dense")  # query embeddings cached, as in the quality runs
        for label, opts in (("dense", {"mode": "dense"}), ("keyword", {"mode": "keyword"}),
                            ("hybrid-rrf", {"mode": "hybrid"}), ("default", {})):
            out[label] = latency(lambda q, o=opts: mem.search(q, k=10, **o), queries, n_queries)
        kwi = get_index(mem._engine)
        commits = kwi.stats["commits"]
        for label, opts in (("read_after_write_keyword", {"mode": "keyword"}), ("read_after_write_default", {})):
            ts = []
            for i in range(n_queries):
                word = f"fresh{label[-3:]}{i}"
                mem.add(f"{text(10)} {word}")
                t0 = time.perf_counter()
                hits = mem.search(word, k=10, **opts)  # type: ignore[arg-type]
                ts.append((time.perf_counter() - t0) * 1000)
                if not hits or word not in hits[0].atom.content.inline:
                    raise AssertionError(f"read-after-write missed the new atom ({label})")
            ts.sort()
            out[label] = {"p50_ms": statistics.median(ts), "p95_ms": ts[min(len(ts) - 1, int(0.95 * len(ts)))]}
        out["tail_searches"] = kwi.stats["tail_searches"]
        out["background_commits"] = kwi.stats["commits"] - commits
        out["hybrid_over_dense_p50"] = out["default"]["p50_ms"] / out["dense"]["p50_ms"]
        out["hybrid_over_dense_cpu_p50"] = out["default"]["cpu_p50_ms"] / out["dense"]["cpu_p50_ms"]
    finally:
        mem.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collections", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS))
    ap.add_argument("--weights", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--ann-ef", nargs="*", type=int, default=[],
                    help="extra dense-ann columns with the HNSW tier's efSearch set to each value")
    ap.add_argument("--dense-only", action="store_true",
                    help="only dense-exact and dense-ann (no aether store with keyword/hybrid; fast)")
    ap.add_argument("--scale", type=int, default=0,
                    help="only the latency run at this many synthetic atoms (e.g. 100000): dense, keyword, "
                         "hybrid and read-after-write p50/p95")
    args = ap.parse_args()
    if args.scale:
        r = latency_at_scale(args.scale, args.latency_queries)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"bench_quality_scale_{args.scale}.json").write_text(json.dumps(r, indent=1))
        for key, v in r.items():
            print(f"{key:28s} {v}")
        return
    embedder = aether.SentenceTransformerEmbedder()
    report: dict[str, Any] = {"model": embedder.identity, "collections": {}}
    for name in args.collections:
        print(f"== {name}", flush=True)
        report["collections"][name] = r = run_collection(name, embedder, args.weights, args.latency_queries,
                                                            ann_ef=args.ann_ef, dense_only=args.dense_only)
        if not args.dense_only:
            print(f"   {r['docs']} docs, {r['queries']} queries; ingest {r['ingest_s']:.1f}s, "
                  f"keyword build {r['keyword_build_s']:.2f}s, rebuild {r['keyword_rebuild_s']:.2f}s, "
                  f"reopen+first search {r['reopen_first_keyword_search_s']:.2f}s", flush=True)
        for label, m in r["modes"].items():
            lat = f"  p50 {m['p50_ms']:.2f} ms  p95 {m['p95_ms']:.2f} ms" if "p50_ms" in m else ""
            if "recall@10_vs_exact" in m:
                lat += f"  R@10 vs exact {m['recall@10_vs_exact']:.4f}  efSearch {m['efSearch']}"
            print(f"   {label:16s} nDCG@10 {m['ndcg@10']:.3f}  R@100 {m['recall@100']:.3f}{lat}", flush=True)
    for name, r in report["collections"].items():
        ex = r["modes"]["dense-exact"]["ndcg@10"]
        for label, m in r["modes"].items():
            if label.startswith("dense-ann"):
                d = m["ndcg@10"] - ex
                m["ndcg@10_minus_exact"] = d
                verdict = "met" if abs(d) <= 0.005 else "MISSED"
                print(f"   {name} {label}: nDCG@10 {m['ndcg@10']:.4f} vs exact {ex:.4f} ({d:+.4f}; "
                      f"target |d| <= 0.005: {verdict})", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_name = "bench_quality_dense.json" if args.dense_only else "bench_quality.json"
    (RESULTS / out_name).write_text(json.dumps(report, indent=1))
    print("\n| collection | mode | nDCG@10 | recall@100 | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    for name, r in report["collections"].items():
        for label, m in r["modes"].items():
            p50 = f"{m['p50_ms']:.2f}" if "p50_ms" in m else "-"
            p95 = f"{m['p95_ms']:.2f}" if "p95_ms" in m else "-"
            print(f"| {name} | {label} | {m['ndcg@10']:.3f} | {m['recall@100']:.3f} | {p50} | {p95} |")


if __name__ == "__main__":
    main()
