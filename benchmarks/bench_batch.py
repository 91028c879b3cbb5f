"""Batch search (``mem.search_many``) against the same queries searched one at a time.

A synthetic store of ``--n`` clustered ``--dim``-d unit vectors (30k x 384 by default) with valid
intervals over two years and 10% of the atoms corrected (so the unfiltered query still needs a
bitmap selector and per-atom deduplication). The index recipe is the default one with a small
HNSW threshold (``--partition-rows``; flat below ``--flat-rows``), so that the HNSW path is
exercised without a 100 s build. For valid-time selectivities 1%, 10% and 100% (and a point-in-time
query), ``--queries`` queries share one filter; each round times them one by one and then as one
batch, at the engine level (``plan_and_search``: row ids) and through the API (``Memory.search`` /
``search_many``: ``Hit`` objects); rounds alternate so a busy machine slows both alike, and the
median over ``--rounds`` is reported.

Run::

    .venv/bin/python benchmarks/bench_batch.py [--n 30000] [--queries 100]

The store is in memory: a reopened store would attach its manifest's (default) recipe, not this
one. Writes ``benchmarks/results/batch_<n>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aether  # noqa: E402
from aether.engine.search import Filters, plan_and_search  # noqa: E402
from aether.index import find_index, load_recipe, use_recipe  # noqa: E402

T0 = datetime(2023, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)
DAY_US = 86_400 * 1_000_000
SPAN_DAYS = 730


def clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.normal(size=(256, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, 256, n)] + rng.normal(scale=0.9 / math.sqrt(dim), size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recipe(args: argparse.Namespace) -> Any:
    base = load_recipe()
    hnsw = next(t for t in base.tiers if t.kind == "hnsw")
    tiers = [
        {"name": "flat", "max_rows": args.flat_rows, "factory": "Flat"},
        {"name": hnsw.name, "max_rows": None, "factory": hnsw.factory,
         "build": {"efConstruction": args.ef_construction}, "search": hnsw.search},
    ]
    return base.with_overrides(partition_rows=args.partition_rows, tail_rows=10**9, background=False, tiers=tiers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--partition-rows", type=int, default=12_000)
    ap.add_argument("--flat-rows", type=int, default=2_000)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads per batch (sets AETHER_SEARCH_THREADS; default: the planner's policy)")
    ap.add_argument("--profile", action="store_true", help="cProfile the engine-level batches after measuring")
    args = ap.parse_args()
    if args.threads is not None:
        os.environ["AETHER_SEARCH_THREADS"] = str(args.threads)
    rng = np.random.default_rng(args.seed)
    n, dim, k = args.n, args.dim, args.k
    x = clustered(n, dim, rng)
    vf = rng.uniform(0, SPAN_DAYS, n)
    dur = np.exp(rng.uniform(np.log(1 / 1440), np.log(3), n))
    report: dict[str, Any] = {"n": n, "dim": dim, "k": k, "queries": args.queries, "rounds": args.rounds,
                              "faiss_omp_threads": faiss.omp_get_max_threads(),
                              "search_threads_env": os.environ.get("AETHER_SEARCH_THREADS"), "sets": {}}
    mem = aether.open(None, embedder=aether.PrecomputedEmbedder(dim))
    idx = use_recipe(mem._engine, recipe(args))
    t = time.perf_counter()
    items = [{"content": f"atom {i}", "atom_id": f"a{i}", "valid_from": T0 + timedelta(days=float(vf[i])),
              "valid_to": T0 + timedelta(days=float(vf[i] + dur[i]))} for i in range(n)]
    for s in range(0, n, 10_000):
        mem.add_many(items[s : s + 10_000], vectors=x[s : s + 10_000])
    corr = rng.choice(n, n // 10, replace=False)
    mem.add_many([{**items[i], "content": f"atom {i} v2"} for i in corr], vectors=clustered(len(corr), dim, rng))
    idx.seal()
    report["build_s"] = time.perf_counter() - t
    ix = find_index(mem._engine)
    assert ix is not None
    report["partitions"] = [(p.label, p.m, p.tier.name) for p in ix.state.partitions]
    print(f"# bench_batch n={n} (+{len(corr)} corrections) dim={dim}: built in {report['build_s']:.1f}s, "
          f"partitions {report['partitions']}, FAISS OpenMP threads {report['faiss_omp_threads']}, "
          f"AETHER_SEARCH_THREADS={report['search_threads_env']}", flush=True)
    eng = mem._engine
    snap = eng.snapshot
    q = x[rng.integers(0, n, args.queries)] + rng.normal(scale=0.6 / math.sqrt(dim), size=(args.queries, dim))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    sets: list[tuple[str, Filters, dict[str, Any]]] = []
    for frac in (0.01, 0.1, 1.0):
        if frac >= 1.0:
            f = Filters(as_of=snap.last_tx, valid_at=None, valid_during=(-(2**62), 2**63 - 1), tags=None)
            api: dict[str, Any] = {"valid_during": (None, None)}
        else:
            a = T0_US + int(300 * DAY_US)
            b = a + int(frac * SPAN_DAYS * DAY_US)
            f = Filters(as_of=snap.last_tx, valid_at=None, valid_during=(a, b), tags=None)
            api = {"valid_during": (T0 + timedelta(days=300), T0 + timedelta(days=300 + frac * SPAN_DAYS))}
        sets.append((f"valid-time {frac:g}", f, api))
    at = T0 + timedelta(days=400)
    sets.append(("valid_at (point)", Filters(as_of=snap.last_tx, valid_at=T0_US + 400 * DAY_US, valid_during=None,
                                             tags=None), {"valid_at": at}))
    for name, f, api in sets:
        _, plan, sel = plan_and_search(eng, snap, q[:1], k, f)
        strategies = sorted({b.strategy for b in plan})
        es: list[float] = []
        eb: list[float] = []
        as_: list[float] = []
        ab: list[float] = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            singles = [plan_and_search(eng, snap, v[None], k, f)[0][0] for v in q]
            es.append((time.perf_counter() - t) * 1000 / len(q))
            t = time.perf_counter()
            batch = plan_and_search(eng, snap, q, k, f)[0]
            eb.append((time.perf_counter() - t) * 1000 / len(q))
            t = time.perf_counter()
            for v in q:
                mem.search(v, k=k, **api)
            as_.append((time.perf_counter() - t) * 1000 / len(q))
            t = time.perf_counter()
            mem.search_many(q, k=k, **api)
            ab.append((time.perf_counter() - t) * 1000 / len(q))
        same = float(np.mean([[r for r, _ in a] == [r for r, _ in b] for a, b in zip(singles, batch, strict=True)]))
        row = {"selected": sel, "strategies": strategies,
               "engine_single_ms_per_q": statistics.median(es), "engine_batch_ms_per_q": statistics.median(eb),
               "api_single_ms_per_q": statistics.median(as_), "api_batch_ms_per_q": statistics.median(ab),
               "batch_equals_single": same}
        row["engine_ratio"] = row["engine_batch_ms_per_q"] / row["engine_single_ms_per_q"]
        row["api_ratio"] = row["api_batch_ms_per_q"] / row["api_single_ms_per_q"]
        report["sets"][name] = row
        print(f"  {name:18s} sel={sel:6d} {','.join(strategies):22s} engine single "
              f"{row['engine_single_ms_per_q']:.3f} batch {row['engine_batch_ms_per_q']:.3f} ms/q "
              f"(x{row['engine_ratio']:.2f}) | API single {row['api_single_ms_per_q']:.3f} batch "
              f"{row['api_batch_ms_per_q']:.3f} ms/q (x{row['api_ratio']:.2f}) | same results {same:.2f}",
              flush=True)
    if args.profile:
        import cProfile
        import pstats

        for name, f, _ in sets:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(5):
                plan_and_search(eng, snap, q, k, f)
            pr.disable()
            print(f"== profile: batch, {name}")
            pstats.Stats(pr).sort_stats("tottime").print_stats(12)
    mem.close()
    out = ROOT / "benchmarks" / "results" / f"batch_{n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
