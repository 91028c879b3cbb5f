"""Encryption overhead: ingest rate, checkpoint, reopen and search latency, encrypted vs plain, same run.

Workload: ``--n`` atoms of random unit ``--dim``-d vectors (pre-embedded, so no model runs), with a
text of about 100 bytes, a tag and a subject (``--subjects`` distinct), written with ``add_many``
in batches of ``--batch`` (each batch is one durable transaction: WAL append + fsync); then a
checkpoint (rows sealed into a Parquet segment), a reopen (segments decrypted into memory) and
``--queries`` single-vector searches (k=10) and ``get`` calls. Both stores live in the same
temporary directory and run alternately, so the machine is in the same state for both.

Example::

    .venv/bin/python benchmarks/bench_security.py --n 20000 --batch 1000

Writes ``benchmarks/results/security_<n>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aether
from aether.security.keys import generate_key


def _items(n: int, subjects: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [
        {
            "content": f"memory {i}: the user mentioned item {rng.integers(1 << 30)}, likes tea",
            "subject": f"user-{i % subjects}",
            "tags": {"kind": "note", "n": i % 7},
        }
        for i in range(n)
    ]


def run_one(
    root: Path, key: bytes | None, vecs: np.ndarray, items: list[dict[str, Any]], args: Any
) -> dict[str, Any]:
    emb = aether.HashingEmbedder(dim=args.dim)
    out: dict[str, Any] = {"encrypted": key is not None}
    mem = aether.open(root, embedder=emb, key=key, checkpoint_bytes=1 << 40)
    t0 = time.perf_counter()
    ids: list[str] = []
    for s in range(0, len(items), args.batch):
        ids += mem.add_many(items[s : s + args.batch], vectors=vecs[s : s + args.batch])
    out["ingest_s"] = time.perf_counter() - t0
    out["ingest_atoms_per_s"] = len(items) / out["ingest_s"]
    t0 = time.perf_counter()
    mem.checkpoint()
    out["checkpoint_s"] = time.perf_counter() - t0
    mem.close()
    t0 = time.perf_counter()
    mem = aether.open(root, embedder=emb, key=key)
    out["reopen_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    qs = vecs[rng.integers(0, len(vecs), args.queries)] + 0.05 * rng.standard_normal((args.queries, args.dim))
    qs = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)
    mem.search(qs[0], k=10)  # warm
    lat = []
    for q in qs:
        t0 = time.perf_counter()
        mem.search(q, k=10)
        lat.append(time.perf_counter() - t0)
    out["search_p50_ms"] = 1e3 * statistics.median(lat)
    out["search_p99_ms"] = 1e3 * float(np.percentile(lat, 99))
    pick = [ids[i] for i in rng.integers(0, len(ids), args.queries)]
    t0 = time.perf_counter()
    for a in pick:
        mem.get(a)
    out["get_us"] = 1e6 * (time.perf_counter() - t0) / len(pick)
    mem.close()
    out["disk_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--subjects", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--rounds", type=int, default=2, help="alternate plain/encrypted this many times; best kept"
    )
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = _items(args.n, args.subjects, rng)
    key = generate_key()
    results: dict[str, list[dict[str, Any]]] = {"plain": [], "encrypted": []}
    tmp = Path(tempfile.mkdtemp(prefix="aether-bench-sec-"))
    try:
        for r in range(args.rounds):
            for name, k in (("plain", None), ("encrypted", key)):
                root = tmp / f"{name}-{r}"
                results[name].append(run_one(root, k, vecs, items, args))
                shutil.rmtree(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def best(name: str, field: str, higher: bool) -> float:
        vals = [x[field] for x in results[name]]
        return max(vals) if higher else min(vals)

    fields = [
        ("ingest_atoms_per_s", True),
        ("checkpoint_s", False),
        ("reopen_s", False),
        ("search_p50_ms", False),
        ("search_p99_ms", False),
        ("get_us", False),
        ("disk_bytes", False),
    ]
    summary = {}
    print(f"n={args.n} dim={args.dim} batch={args.batch} subjects={args.subjects} cpus={os.cpu_count()}")
    print(f"{'metric':<22}{'plain':>14}{'encrypted':>14}{'enc/plain':>11}")
    for f, higher in fields:
        p, e = best("plain", f, higher), best("encrypted", f, higher)
        summary[f] = {"plain": p, "encrypted": e, "ratio": e / p if p else None}
        print(f"{f:<22}{p:>14.3f}{e:>14.3f}{e / p if p else float('nan'):>11.3f}")
    out = Path(__file__).parent / "results" / f"security_{args.n}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"args": vars(args), "summary": summary, "runs": results, "platform": platform.platform()},
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
