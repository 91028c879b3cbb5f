"""Core figures: durable ingest rate (default model and pre-embedded) and search latency at 10k atoms.

Run: .venv/bin/python benchmarks/bench_core.py [--n-model 1000] [--n-vec 10000]
The raw model's own throughput is measured in the same run, as the baseline for the model ingest rate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

import aether

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ir" / "scifact" / "corpus.jsonl"


def sentences(n: int) -> list[str]:
    """Short real sentences: first sentence of SciFact abstracts (falls back to synthetic text)."""
    out: list[str] = []
    if DATA.exists():
        with DATA.open() as fh:
            for line in fh:
                doc = json.loads(line)
                out.append((doc.get("title") or doc["text"][:120]).strip())
                if len(out) == n:
                    break
    while len(out) < n:
        out.append(f"synthetic memory number {len(out)} about topic {len(out) % 17}")
    return out


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-model", type=int, default=1000)
    ap.add_argument("--n-vec", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aether-bench-"))
    res: dict[str, float] = {}
    try:
        texts = sentences(args.n_model)
        emb = aether.SentenceTransformerEmbedder()
        emb.embed(texts[:32])  # load + warm up
        t = time.perf_counter()
        emb.embed(texts)
        res["raw_model_sentences_per_s"] = len(texts) / (time.perf_counter() - t)

        with aether.open(tmp / "model", embedder=emb) as mem:
            t = time.perf_counter()
            for i in range(0, len(texts), 100):
                mem.add_many(texts[i : i + 100])
            res["ingest_model_add_many100_atoms_per_s"] = len(texts) / (time.perf_counter() - t)
            t = time.perf_counter()
            for s in texts[:100]:
                mem.add(s)
            res["ingest_model_single_add_atoms_per_s"] = 100 / (time.perf_counter() - t)

        rng = np.random.default_rng(0)
        n = args.n_vec
        centers = rng.normal(size=(64, 384)).astype(np.float32)
        vecs = centers[rng.integers(0, 64, n)] + 0.3 * rng.normal(size=(n, 384)).astype(np.float32)
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        items = [
            {"content": f"memory {i}", "tags": {"topic": i % 10}, "valid_from": t0 + timedelta(hours=i)}
            for i in range(n)
        ]
        with aether.open(tmp / "vec", embedder=aether.PrecomputedEmbedder(384, "bench")) as mem:
            t = time.perf_counter()
            for i in range(0, n, 1000):
                mem.add_many(items[i : i + 1000], vectors=vecs[i : i + 1000])
            res["ingest_vectors_add_many1000_atoms_per_s"] = n / (time.perf_counter() - t)
            t = time.perf_counter()
            for i in range(200):
                mem.add(f"single {i}", vector=vecs[i])
            res["ingest_vectors_single_add_atoms_per_s"] = 200 / (time.perf_counter() - t)
            qs = centers[rng.integers(0, 64, args.queries)] + 0.3 * rng.normal(size=(args.queries, 384))
            lat: list[float] = []
            for q in qs:
                t = time.perf_counter()
                mem.search(q, k=10)
                lat.append(time.perf_counter() - t)
            res["search_vector_10k_p50_ms"] = pct(lat, 50)
            res["search_vector_10k_p99_ms"] = pct(lat, 99)
            lat = []
            mid = t0 + timedelta(hours=n // 2)
            for q in qs:
                t = time.perf_counter()
                mem.search(q, k=10, valid_during=(t0, mid), tags={"topic": 3})
                lat.append(time.perf_counter() - t)
            res["search_vector_10k_filtered_p50_ms"] = pct(lat, 50)
        with aether.open(tmp / "model") as mem:
            mem.search("warm up the model", k=10)
            lat = []
            for s in texts[: min(100, len(texts))]:
                t = time.perf_counter()
                mem.search(s + " ?", k=10)  # distinct text: the query cache does not help
                lat.append(time.perf_counter() - t)
            res["search_text_incl_embedding_p50_ms"] = pct(lat, 50)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for k, v in res.items():
        print(f"{k:45s} {v:10.1f}")


if __name__ == "__main__":
    main()
