"""Core figures: durable ingest rate (default model and pre-embedded) and search latency at 10k atoms.

Run: .venv/bin/python benchmarks/bench_core.py [--n-model 1000] [--n-vec 10000]
The raw model's own throughput is measured in the same run, as the baseline for the model ingest rate.

Storage-path modes (issue 3 targets: durable pre-embedded ingest >= 50k atoms/s, open of a 1M store <= 3 s):

    .venv/bin/python benchmarks/bench_core.py --ingest-only [--n-ingest 100000] [--batch 10000] [--pause-index]
    .venv/bin/python benchmarks/bench_core.py --open-only --n-open 1000000 [--store DIR]

Write-path modes (issue 16: corrections >= 50k/s, Parquet import with vectors >= 100k rows/s), each next
to its baseline in the same run:

    .venv/bin/python benchmarks/bench_core.py --write-only [--n-correct 50000] [--n-import 200000] [--batch 10000]

``--write-only`` times ``correct_many`` / ``retract_many`` (per-batch planner) against the same calls planned
per row (``bulkplan.BULK_MIN_OPS`` raised), the planners alone on the same store state, and ``aether
import`` of a Parquet file with a vector column on the columnar path against the row-wise path
(``import_file(columnar=False)``), alternated in fresh stores; medians reported.

``--ingest-only`` times ``add_many(items, vectors=...)`` and ``add_columns(..., vectors=...)`` (the same rows
as columns) in batches (one fsynced transaction each), alternated in fresh stores with
``PrecomputedEmbedder(384)``, checkpoints included. ``--open-only`` builds a store of
``--n-open`` atoms (index builds disabled: this measures the storage path) unless ``--store`` already
holds one, then times ``aether.open`` in a fresh subprocess and reports its RSS.
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


def _vec_items(s: int, e: int) -> list[dict[str, object]]:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        {"content": f"memory {i} about topic {i % 97}", "tags": {"topic": i % 10},
         "valid_from": t0 + timedelta(minutes=i)}
        for i in range(s, e)
    ]


def _columns(s: int, e: int) -> dict[str, object]:
    """The rows of :func:`_vec_items` as columns (for ``add_columns``)."""
    base = np.datetime64("2024-01-01T00:00:00", "us")
    return {
        "content": [f"memory {i} about topic {i % 97}" for i in range(s, e)],
        "tags": [{"topic": i % 10} for i in range(s, e)],
        "valid_from": base + np.arange(s, e).astype("timedelta64[m]"),
    }


def ingest_only(n: int, batch: int, pause_index: bool, rounds: int = 2) -> dict[str, float]:
    """Durable pre-embedded ingest rate of ``add_many`` (one dict per row) and ``add_columns``
    (the same rows as columns), alternated ``rounds`` times in fresh stores; medians reported.
    Inputs are built before the clock starts."""
    from aether.index import find_index

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, 384)).astype(np.float32)
    items = _vec_items(0, n)
    cols = [_columns(i, min(n, i + batch)) for i in range(10, n, batch)]
    rates: dict[str, list[float]] = {"add_many": [], "add_columns": []}
    for _ in range(rounds):
        for mode in rates:
            tmp = Path(tempfile.mkdtemp(prefix="aether-bench-"))
            try:
                with aether.open(tmp / "s", embedder=aether.PrecomputedEmbedder(384, "bench")) as mem:
                    idx = find_index(mem._engine)
                    if pause_index and idx is not None:
                        idx.pause()
                    mem.add_many(items[:10], vectors=vecs[:10])  # first write: lazy imports, WAL file creation
                    t = time.perf_counter()
                    for b, i in enumerate(range(10, n, batch)):
                        if mode == "add_many":
                            mem.add_many(items[i : i + batch], vectors=vecs[i : i + batch])
                        else:
                            mem.add_columns(vectors=vecs[i : i + batch], **cols[b])
                    rates[mode].append((n - 10) / (time.perf_counter() - t))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    out = {f"ingest_vectors_{m}_atoms_per_s": float(np.median(r)) for m, r in rates.items()}
    out.update({f"ingest_vectors_{m}_run{k + 1}": v for m, r in rates.items() for k, v in enumerate(r)})
    return out


def _rate(rates: dict[str, list[float]], name: str, n: int, wall0: float, cpu0: float) -> None:
    """Record ``n`` items done since ``wall0`` / ``cpu0``: per wall second, and per CPU second of this
    process (steadier than wall time on a shared, loaded machine; it leaves out fsync waits)."""
    rates.setdefault(f"{name}_per_s", []).append(n / (time.perf_counter() - wall0))
    rates.setdefault(f"{name}_cpu_per_s", []).append(n / max(time.process_time() - cpu0, 1e-9))


def corrections(n: int, batch: int, rounds: int = 2) -> dict[str, float]:
    """Durable ``correct_many`` / ``retract_many`` of ``n`` distinct atoms in ``batch``-sized transactions,
    planned per batch and per row, alternated in fresh stores (each correction closes one version and
    writes two: the earlier part of the old one and the new one)."""
    from aether.engine import bulkplan, columns, txplan

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, 384)).astype(np.float32)
    new_vecs = rng.normal(size=(n, 384)).astype(np.float32)
    texts = [f"corrected memory {i}" for i in range(n)]
    ids = [f"atom-{i}" for i in range(n)]
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for planner in ("bulk", "per_row"):
            tmp = Path(tempfile.mkdtemp(prefix="aether-bench-"))
            old = bulkplan.BULK_MIN_OPS
            if planner == "per_row":
                bulkplan.BULK_MIN_OPS = 1 << 62
            try:
                with aether.open(tmp / "s", embedder=aether.PrecomputedEmbedder(384, "bench")) as mem:
                    for s in range(0, n, 50_000):
                        mem.add_columns(vectors=vecs[s : s + 50_000], atom_id=ids[s : s + 50_000],
                                        **_columns(s, min(n, s + 50_000)))
                    mem.checkpoint()
                    t, c = time.perf_counter(), time.process_time()
                    for s in range(0, n, batch):
                        mem.correct_many(ids[s : s + batch], texts[s : s + batch], vectors=new_vecs[s : s + batch])
                    _rate(rates, f"correct_many_{planner}", n, t, c)
                    t, c = time.perf_counter(), time.process_time()
                    for s in range(0, n, batch):
                        mem.retract_many(ids[s : s + batch])
                    _rate(rates, f"retract_many_{planner}", n, t, c)
                    if planner == "bulk":  # the planners alone, same store state, nothing written
                        eng = mem._engine
                        ops = columns.corrections(ids[:batch], texts[:batch], limit=1 << 20, dim=384,
                                                  vectors=new_vecs[:batch], valid_from="2030-01-01T00:00:00Z")
                        tx = eng.snapshot.last_tx + 1
                        t = time.perf_counter()
                        bulkplan.plan_bulk(eng, ops, tx)
                        rates.setdefault("plan_bulk_ops_per_s", []).append(batch / (time.perf_counter() - t))
                        t = time.perf_counter()
                        txplan.plan_rows(eng, ops, tx)
                        rates.setdefault("plan_per_row_ops_per_s", []).append(batch / (time.perf_counter() - t))
            finally:
                bulkplan.BULK_MIN_OPS = old
                shutil.rmtree(tmp, ignore_errors=True)
    out = {k: float(np.median(v)) for k, v in rates.items()}
    for what in ("correct_many", "retract_many"):
        out[f"{what}_speedup_x"] = out[f"{what}_bulk_per_s"] / out[f"{what}_per_row_per_s"]
        out[f"{what}_cpu_speedup_x"] = out[f"{what}_bulk_cpu_per_s"] / out[f"{what}_per_row_cpu_per_s"]
    out["plan_speedup_x"] = out["plan_bulk_ops_per_s"] / out["plan_per_row_ops_per_s"]
    return out


def import_parquet(n: int, batch: int, rounds: int = 2) -> dict[str, float]:
    """``import_file`` of an ``n``-row Parquet file with a 384-d vector column (content, id, tz-aware
    valid_from, a tag map): the columnar path against the row-wise one, alternated in fresh stores."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aether import ingest

    tmp = Path(tempfile.mkdtemp(prefix="aether-bench-"))
    rates: dict[str, list[float]] = {}
    try:
        rng = np.random.default_rng(0)
        f = tmp / "in.parquet"
        for s in range(0, n, 100_000):  # written in parts: the input need not fit in memory twice
            e = min(n, s + 100_000)
            part = pa.table({
                "content": [f"memory {i} about topic {i % 97}" for i in range(s, e)],
                "atom_id": [f"atom-{i}" for i in range(s, e)],
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(rng.normal(size=((e - s) * 384,)).astype(np.float32)), 384),
                "valid_from": pa.array(1_704_067_200_000_000 + np.arange(s, e) * 60_000_000,
                                       pa.timestamp("us", tz="UTC")),
                "tags": pa.array([[("topic", str(i % 10))] for i in range(s, e)], pa.map_(pa.string(), pa.string())),
            })
            if s == 0:
                writer = pq.ParquetWriter(f, part.schema)
            writer.write_table(part, row_group_size=65_536)
        writer.close()
        for _ in range(rounds):
            for key, columnar in (("columnar", True), ("row_wise", False)):
                store = tmp / f"s-{key}"
                with aether.open(store, embedder=aether.PrecomputedEmbedder(384, "bench")) as mem:
                    t, c = time.perf_counter(), time.process_time()
                    rep = ingest.import_file(mem, f, batch_rows=batch, columnar=columnar)
                    _rate(rates, f"import_parquet_{key}_rows", n, t, c)
                    assert rep.imported == n and not rep.bad
                shutil.rmtree(store, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {k: float(np.median(v)) for k, v in rates.items()}
    col, row = out["import_parquet_columnar_rows_per_s"], out["import_parquet_row_wise_rows_per_s"]
    out["import_parquet_speedup_x"] = col / row
    col, row = out["import_parquet_columnar_rows_cpu_per_s"], out["import_parquet_row_wise_rows_cpu_per_s"]
    out["import_parquet_cpu_speedup_x"] = col / row
    return out


_OPEN_CHILD = """
import sys, time, resource
import aether
from aether.index import bucketed
bucketed.BucketedIndex._schedule = lambda self, engine: None  # storage path only: no background index build
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024
r0 = rss()
t = time.perf_counter()
mem = aether.open(sys.argv[1], embedder=aether.PrecomputedEmbedder(384, 'bench'))
dt = time.perf_counter() - t
n = mem._engine.table.n
t = time.perf_counter()
mem.get(mem._engine.table.atom_ids[n // 2])
g = time.perf_counter() - t
mem._engine.table.vectors  # every vector resident (plain stores load them in the background after open)
v = time.perf_counter() - t + dt + g
print(f'{dt} {rss() - r0} {rss()} {g} {n} {v}')
mem.close()
"""


def open_only(n: int, store: Path | None) -> dict[str, float]:
    """Time ``aether.open`` of an ``n``-atom store (built here unless ``store`` exists)."""
    import subprocess
    import sys

    from aether.index import bucketed

    tmp = None
    if store is None:
        tmp = Path(tempfile.mkdtemp(prefix="aether-bench-"))
        store = tmp / "s"
    res: dict[str, float] = {}
    try:
        if not store.exists():
            sched = bucketed.BucketedIndex._schedule
            bucketed.BucketedIndex._schedule = lambda self, engine: None  # type: ignore[method-assign]
            try:
                rng = np.random.default_rng(0)
                t = time.perf_counter()
                with aether.open(store, embedder=aether.PrecomputedEmbedder(384, "bench")) as mem:
                    for s in range(0, n, 50_000):
                        e = min(n, s + 50_000)
                        mem.add_columns(vectors=rng.normal(size=(e - s, 384)).astype(np.float32),
                                        **_columns(s, e))
                res["build_atoms_per_s"] = n / (time.perf_counter() - t)
            finally:
                bucketed.BucketedIndex._schedule = sched  # type: ignore[method-assign]
        for run in range(2):  # the first run may read from disk, the second from the page cache
            out = subprocess.run([sys.executable, "-c", _OPEN_CHILD, str(store)], capture_output=True, text=True,
                                 check=True).stdout.split()
            res[f"open_s_run{run + 1}"] = float(out[0])
            res["open_rss_delta_mb"] = float(out[1])
            res["open_rss_mb"] = float(out[2])
            res["first_get_s"] = float(out[3])
            res["atoms"] = float(out[4])
            res[f"vectors_resident_s_run{run + 1}"] = float(out[5])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-model", type=int, default=1000)
    ap.add_argument("--n-vec", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ingest-only", action="store_true", help="only the durable pre-embedded ingest rate")
    ap.add_argument("--n-ingest", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--pause-index", action="store_true", help="no index sealing during ingest (storage path)")
    ap.add_argument("--open-only", action="store_true", help="only the open time of a large store")
    ap.add_argument("--n-open", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=None, help="store for --open-only (built if missing, kept)")
    ap.add_argument("--write-only", action="store_true", help="only bulk corrections and the Parquet import")
    ap.add_argument("--n-correct", type=int, default=50_000)
    ap.add_argument("--n-import", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.write_only:
        out = corrections(args.n_correct, args.batch, args.rounds)
        out.update(import_parquet(args.n_import, args.batch, args.rounds))
        for k, v in out.items():
            print(f"{k:45s} {v:10.2f}")
        return
    if args.ingest_only or args.open_only:
        out = ingest_only(args.n_ingest, args.batch, args.pause_index) if args.ingest_only else {}
        if args.open_only:
            out.update(open_only(args.n_open, args.store))
        for k, v in out.items():
            print(f"{k:45s} {v:10.2f}")
        return
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
