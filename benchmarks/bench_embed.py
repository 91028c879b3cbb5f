"""The embedding path: sentence-transformers on torch against ONNX Runtime, same weights, same run.

    .venv/bin/python benchmarks/bench_embed.py                 # latency, throughput, SciFact nDCG@10
    .venv/bin/python benchmarks/bench_embed.py --no-quality    # speed only (a minute)
    .venv/bin/python benchmarks/bench_embed.py --backends torch onnx-int8

Backends: ``torch``, ``onnx`` (same vectors as torch) and ``onnx-int8`` (8-bit weights, its own model
identity); the first one named is the baseline of the ratio columns.

Single-query latency is measured interleaved (each query goes to every backend in a rotating order)
so that load from other processes hits both alike; throughput alternates backends per round. The
quality check embeds SciFact's corpus with each backend and scores exact dense search.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _ir_data import DATA, RESULTS, load

from aether.embed import SentenceTransformerEmbedder


def ndcg_at_10(ranked: list[str], rel: dict[str, int]) -> float:
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=200, help="single queries per backend")
    ap.add_argument("--docs", type=int, default=512, help="documents per throughput round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    args = ap.parse_args()

    col = load("scifact")
    backends = {b: SentenceTransformerEmbedder(backend=b) for b in args.backends}
    for name, emb in backends.items():
        t0 = time.perf_counter()
        emb.embed_queries(["warm up"])
        print(f"{name}: loaded in {time.perf_counter() - t0:.1f} s (backend in use: {emb.backend})", flush=True)

    queries = (col.queries * (1 + args.queries // len(col.queries)))[: args.queries]
    lat: dict[str, list[float]] = {n: [] for n in backends}
    names = list(backends)
    for i, q in enumerate(queries):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            backends[name].embed_queries([q])
            lat[name].append((time.perf_counter() - t0) * 1000)
    result: dict[str, dict[str, float]] = {}
    for name in names:
        xs = sorted(lat[name])
        result[name] = {"query_p50_ms": statistics.median(xs), "query_p99_ms": xs[int(0.99 * (len(xs) - 1))]}

    docs = col.docs[: args.docs]
    for bs in args.batch:
        rates: dict[str, list[float]] = {n: [] for n in backends}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                emb = backends[name]
                emb.batch_size = bs
                t0 = time.perf_counter()
                emb.embed(docs)
                rates[name].append(len(docs) / (time.perf_counter() - t0))
        for name in names:
            result[name][f"docs_per_s_batch{bs}"] = statistics.median(rates[name])

    if not args.no_quality:
        for name in names:
            emb = backends[name]
            emb.batch_size = 64
            t0 = time.perf_counter()
            dvec = emb.embed(col.docs)
            qvec = emb.embed_queries(col.queries)
            top = np.argsort(-(qvec @ dvec.T), axis=1)[:, :10]
            nd = [
                ndcg_at_10([col.doc_ids[j] for j in row], col.qrels[qid])
                for qid, row in zip(col.query_ids, top, strict=True)
            ]
            result[name]["scifact_ndcg@10"] = float(np.mean(nd))
            result[name]["scifact_embed_s"] = time.perf_counter() - t0
            print(f"{name}: SciFact nDCG@10 {result[name]['scifact_ndcg@10']:.4f}", flush=True)

    print(f"\nembedding backends (all-MiniLM-L6-v2, {os.cpu_count()} cores, data {DATA})")
    keys = sorted({k for r in result.values() for k in r})
    base = names[0]
    ratios = [f"{n}/{base}" for n in names[1:]]
    print(f"{'metric':<24}" + "".join(f"{n:>12}" for n in names) + "".join(f"{r:>18}" for r in ratios))
    for k in keys:
        vals = [result[n].get(k, float("nan")) for n in names]
        print(f"{k:<24}" + "".join(f"{v:>12.3f}" for v in vals) + "".join(f"{v / vals[0]:>18.3f}" for v in vals[1:]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_embed.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
