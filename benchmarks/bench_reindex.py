"""Re-index and bulk-import throughput, against the raw model's own speed in the same run.

Workload:

* a store of ``--n`` short sentences (pre-embedded with the hashing embedder, written in a
  few checkpointed segments) is re-indexed to ``--model`` (default all-MiniLM-L6-v2) with the
  local engine (in-process) and with the Ray engine (``ray.init(num_cpus=--cpus)``; Ray's
  start-up is not timed, its actors' model loading is);
* the raw model speed: ``embedder.embed`` over the same texts in the same batch size, timed
  before and after the re-indexes (the mean is the reference: the machine may be shared);
* import: ``--import-rows`` pre-embedded rows (``--import-dim``-d vectors, text, a tag, a
  valid_from) written to a Parquet file, imported with ``aether.ingest.import_file``.

Target: re-index atoms/s >= 90% of the raw model's sentences/s.

Example::

    .venv/bin/python benchmarks/bench_reindex.py --n 2000 --import-rows 50000

Writes ``benchmarks/results/reindex_<n>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aether
from aether.embed import embedder_for
from aether.ingest import import_file
from aether.maintenance.reindex import reindex

SUBJECTS = ["the meeting", "Alice", "the deploy", "our budget", "the cat", "Bob's flight", "the report"]
VERBS = ["moved to", "was approved for", "failed on", "is planned for", "got delayed until", "was discussed on"]
OBJECTS = ["Monday", "the next sprint", "March", "the offsite", "the release", "Friday afternoon"]


def sentences(n: int) -> list[str]:
    return [
        f"{SUBJECTS[i % 7]} {VERBS[(i // 7) % 6]} {OBJECTS[(i // 42) % 6]} (note {i})" for i in range(n)
    ]


def build_store(path: Path, texts: list[str], segments: int = 4) -> None:
    with aether.open(path, embedder=aether.HashingEmbedder(dim=64)) as mem:
        per = -(-len(texts) // segments)
        for s in range(0, len(texts), per):
            mem.add_many(texts[s : s + per])
            mem.checkpoint()


def raw_speed(embedder: Any, texts: list[str], batch: int) -> float:
    t = time.perf_counter()
    for s in range(0, len(texts), batch):
        embedder.embed(texts[s : s + batch])
    return len(texts) / (time.perf_counter() - t)


def bench_import(root: Path, rows: int, dim: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(rows, dim)).astype(np.float32)
    table = pa.table({
        "content": sentences(rows),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim),
        "valid_from": pa.array(np.full(rows, 1_704_067_200_000_000), pa.timestamp("us", tz="UTC")),
        "tags": [json.dumps({"src": "bench", "shard": i % 8}) for i in range(rows)],
    })
    f = root / "import.parquet"
    pq.write_table(table, f, row_group_size=65536)
    with aether.open(root / "imported", embedder=aether.PrecomputedEmbedder(dim, "bench")) as mem:
        rep = import_file(mem, f, batch_rows=4096)
        return {
            "rows": rows, "dim": dim, "imported": rep.imported, "bad": len(rep.bad),
            "seconds": round(rep.seconds, 2), "rows_per_s": round(rep.rows_per_s, 1),
            "file_mb": round(f.stat().st_size / 2**20, 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=2000, help="atoms to re-index")
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="target model (models/ name or hashing:DIM)")
    ap.add_argument("--batch", type=int, default=256, help="texts per embedding call")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs for the local Ray")
    ap.add_argument("--actors", type=int, default=None, help="Ray embedding actors (default: one per CPU)")
    ap.add_argument("--import-rows", type=int, default=50_000)
    ap.add_argument("--import-dim", type=int, default=384)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    texts = sentences(args.n)
    embedder = embedder_for(args.model)
    embedder.embed(texts[:8])  # load the model outside the timings
    root = Path(tempfile.mkdtemp(prefix="bench_reindex_"))
    result: dict[str, Any] = {
        "n": args.n, "model": embedder.identity, "batch": args.batch, "cpus": os.cpu_count(),
        "machine": platform.platform(), "python": platform.python_version(), "engines": {},
    }
    try:
        raws = [raw_speed(embedder, texts, args.batch)]
        print(f"raw model: {raws[0]:,.1f} sentences/s", flush=True)
        for engine in [e for e in args.engines.split(",") if e]:
            store = root / engine
            build_store(store, texts)
            ray_init = 0.0
            if engine == "ray":
                import ray

                t = time.perf_counter()
                ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
                ray_init = time.perf_counter() - t
            with aether.open(store) as mem:
                res = reindex(mem._engine, embedder, batch_engine=engine, batch_size=args.batch,
                              workers=args.actors if engine == "ray" else None)
            entry = {"atoms": res.rows, "seconds": round(res.seconds, 2), "atoms_per_s": round(res.rows_per_s, 1),
                     "parts": res.parts}
            if engine == "ray":
                entry["ray_init_s"] = round(ray_init, 1)
            result["engines"][engine] = entry
            print(f"{engine}: {res.rows_per_s:,.1f} atoms/s ({res.rows} in {res.seconds:.1f}s)", flush=True)
            raws.append(raw_speed(embedder, texts, args.batch))
            print(f"raw model: {raws[-1]:,.1f} sentences/s", flush=True)
        raw = float(np.mean(raws))
        result["raw_sentences_per_s"] = [round(r, 1) for r in raws]
        result["raw_mean"] = round(raw, 1)
        for engine, entry in result["engines"].items():
            entry["vs_raw"] = round(entry["atoms_per_s"] / raw, 3)
            print(f"{engine}: {entry['vs_raw']:.0%} of the raw model's speed (target >= 90%)")
        if args.import_rows:
            result["import"] = bench_import(root, args.import_rows, args.import_dim)
            print(f"import (pre-embedded Parquet, {args.import_dim}-d): {result['import']['rows_per_s']:,.0f} rows/s "
                  f"({args.import_rows} rows in {result['import']['seconds']}s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"reindex_{args.n}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
