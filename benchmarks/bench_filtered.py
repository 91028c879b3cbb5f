"""Filtered (bitemporal) vector search: aether's planner against FAISS, LanceDB and Chroma.

Workload: ``--n`` atoms (100k default) of clustered synthetic ``--dim``-d unit vectors
(384 default), valid intervals starting uniformly over two years (lengths log-uniform,
1 minute to 3 days), ingested in 100 transactions, then 10% of the atoms superseded by
corrections (new vectors, same valid interval). Query sets:

- valid-time selectivity 0.1%, 1%, 10%, 50%, 100%: ``valid_during`` windows sized so
  that the given fraction of current versions is selected (as of the latest commit);
- as-of 1%, 10%, 50%: transaction times in the past (after 1/10/50 of the 100 ingest
  transactions), all valid time;
- as-of before the corrections (100%): the superseded versions are visible again.

For each system: recall@10 against exact numpy search over the same selected rows,
p50/p99 single-query latency, index build time, ingest rate. aether is measured at the
engine level (``plan_and_search``: row ids and scores, like FAISS) and through the public
API (``Memory.search``: ``Hit`` objects). Peers are optional (``pip install 'aether[bench]'``)
and skipped when missing.

Writes ``benchmarks/results/filtered_<n>.{md,json,png}``. Example::

    .venv/bin/python benchmarks/bench_filtered.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aether  # noqa: E402
from aether.engine.search import Filters, exact_search, plan_and_search  # noqa: E402
from aether.index import find_index  # noqa: E402

T0 = datetime(2023, 1, 1, tzinfo=UTC)
SPAN_US = int(730 * 86400 * 1e6)
T0_US = int(T0.timestamp() * 1_000_000)
HOUR_US = 3600 * 1_000_000
MINUTE_US = 60 * 1_000_000
VT_SELECTIVITIES = (0.001, 0.01, 0.1, 0.5, 1.0)
ASOF_SELECTIVITIES = (0.01, 0.1, 0.5)


# ---------------------------------------------------------------------------- data
def clustered(n: int, dim: int, rng: np.random.Generator, clusters: int = 256) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    assign = rng.integers(0, clusters, n)
    x = centers[assign] + rng.normal(scale=0.9 / math.sqrt(dim), size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), centers


def perturb(x: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    y = x + rng.normal(scale=scale / math.sqrt(x.shape[1]), size=x.shape).astype(np.float32)
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def dt(us: int) -> datetime:
    return T0 + timedelta(microseconds=int(us - T0_US))


# ---------------------------------------------------------------------------- query sets
def window_for(vf: np.ndarray, vt: np.ndarray, target: float, rng: np.random.Generator) -> int:
    """Window width (us) whose random placements select ``target`` of the rows on average."""
    if target >= 1.0:
        return -1
    lo, hi = 1, SPAN_US
    probes = (np.arange(32) * 0.618034) % 1.0  # the same placements as the queries (see filters_for)
    for _ in range(40):
        mid = (lo + hi) // 2
        starts = (T0_US + (SPAN_US - mid) * probes).astype(np.int64)
        sel = np.mean([np.mean((vf < a + mid) & (vt > a)) for a in starts])
        if sel < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


def pctl(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# ---------------------------------------------------------------------------- peers
class Peer:
    name = "peer"

    def build(self, x: np.ndarray, cols: dict[str, np.ndarray]) -> float:
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int, f: Filters, mask: np.ndarray) -> list[int]:
        raise NotImplementedError


class FaissFlat(Peer):
    name = "faiss flat+bitmap"

    def build(self, x: np.ndarray, cols: dict[str, np.ndarray]) -> float:
        t = time.perf_counter()
        self.index = faiss.IndexFlatIP(x.shape[1])
        self.index.add(x)
        return time.perf_counter() - t

    def search(self, q: np.ndarray, k: int, f: Filters, mask: np.ndarray) -> list[int]:
        bits = np.packbits(mask, bitorder="little")
        sp = faiss.SearchParameters()
        sp.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        _, ids = self.index.search(q[None], k, params=sp)
        return [int(i) for i in ids[0] if i >= 0]


class FaissHNSW(Peer):
    def __init__(self, ef: int) -> None:
        self.ef = ef
        self.name = f"faiss hnsw32+bitmap ef{ef}"
        self.index: Any = None

    def share(self, other: FaissHNSW) -> None:
        self.index = other.index
        self.build_s = other.build_s

    def build(self, x: np.ndarray, cols: dict[str, np.ndarray]) -> float:
        if self.index is not None:
            return self.build_s
        t = time.perf_counter()
        self.index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 80
        self.index.add(x)
        self.build_s = time.perf_counter() - t
        return self.build_s

    def search(self, q: np.ndarray, k: int, f: Filters, mask: np.ndarray) -> list[int]:
        bits = np.packbits(mask, bitorder="little")
        sp = faiss.SearchParametersHNSW()
        sp.efSearch = self.ef
        sp.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        _, ids = self.index.search(q[None], k, params=sp)
        return [int(i) for i in ids[0] if i >= 0]


def _where_sql(f: Filters) -> str:
    a, b = f.valid_during if f.valid_during else (-(2**62), 2**63 - 1)
    return f"vf < {b} AND vt > {a} AND txf <= {f.as_of} AND txto > {f.as_of}"


class Lance(Peer):
    def __init__(self, indexed: bool, tmp: Path) -> None:
        self.indexed = indexed
        self.tmp = tmp
        self.name = "lancedb IVF_HNSW_SQ prefilter" if indexed else "lancedb no index prefilter"

    def build(self, x: np.ndarray, cols: dict[str, np.ndarray]) -> float:
        import lancedb
        import pyarrow as pa

        t = time.perf_counter()
        db = lancedb.connect(str(self.tmp / ("lance_idx" if self.indexed else "lance_flat")))
        tbl = pa.table(
            {
                "id": np.arange(len(x), dtype=np.int64),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
                **{k: v for k, v in cols.items()},
            }
        )
        self.table = db.create_table("t", tbl, mode="overwrite")
        if self.indexed:
            self.table.create_index(metric="cosine", index_type="IVF_HNSW_SQ", vector_column_name="vector")
        return time.perf_counter() - t

    def search(self, q: np.ndarray, k: int, f: Filters, mask: np.ndarray) -> list[int]:
        r = (
            self.table.search(q, vector_column_name="vector")
            .metric("cosine")
            .where(_where_sql(f), prefilter=True)
            .limit(k)
            .select(["id", "_distance"])
            .to_arrow()
        )
        return [int(i) for i in r.column("id").to_pylist()]


class Chroma(Peer):
    name = "chroma hnsw+where"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def build(self, x: np.ndarray, cols: dict[str, np.ndarray]) -> float:
        import chromadb

        t = time.perf_counter()
        client = chromadb.PersistentClient(path=str(self.tmp / "chroma"))
        self.col = client.create_collection("aether_bench", metadata={"hnsw:space": "cosine"})
        step = 5000
        # Chroma stores ints as int64; our OPEN sentinel fits.
        for s in range(0, len(x), step):
            e = min(len(x), s + step)
            metas = [{k: int(cols[k][i]) for k in ("vf", "vt", "txf", "txto")} for i in range(s, e)]
            self.col.add(ids=[str(i) for i in range(s, e)], embeddings=x[s:e], metadatas=metas)  # type: ignore[arg-type]
        return time.perf_counter() - t

    def search(self, q: np.ndarray, k: int, f: Filters, mask: np.ndarray) -> list[int]:
        a, b = f.valid_during if f.valid_during else (-(2**62), 2**63 - 1)
        where = {"$and": [{"vf": {"$lt": b}}, {"vt": {"$gt": a}}, {"txf": {"$lte": f.as_of}},
                          {"txto": {"$gt": f.as_of}}]}
        r = self.col.query(query_embeddings=[q], n_results=k, where=where)  # type: ignore[arg-type]
        return [int(i) for i in r["ids"][0]]


# ---------------------------------------------------------------------------- right after a bulk add_many
def bulk_phase(args: argparse.Namespace, work: Path, x: np.ndarray, vf: np.ndarray, vt: np.ndarray,
               rng: np.random.Generator) -> dict[str, Any]:
    """Ingest every atom with one ``add_many`` (pre-embedded) and query at once, beside FAISS flat+bitmap.

    Reports the exact tail when ``add_many`` returns and how long until it is below ``tail_rows``
    (the index seals it into runs in the background, see ``aether/index/bucketed.py``: the time a
    bulk load takes to become ANN-searchable), then queries at once and again a minute after the
    load. Each query records the rows the tail scanned exactly and when it ran; the API figures go
    through ``Memory.search`` (``Hit`` objects), the engine ones through ``plan_and_search`` (row
    ids, like FAISS), interleaved query by query.
    """
    n, k = len(x), args.k
    store = work / "aether_bulk"
    if store.exists():
        shutil.rmtree(store)
    mem = aether.open(store, embedder=aether.PrecomputedEmbedder(x.shape[1]))
    items = [{"content": f"atom {i}", "atom_id": f"b{i}", "valid_from": dt(int(vf[i])), "valid_to": dt(int(vt[i]))}
             for i in range(n)]
    eng = mem._engine
    idx = find_index(eng)
    assert idx is not None
    t = time.perf_counter()
    mem.add_many(items, vectors=x)
    t_done = time.perf_counter()
    add_s = t_done - t
    tail_at_return = eng.snapshot.n - idx.state.covered
    while eng.snapshot.n - idx.state.covered >= idx.recipe.tail_rows and time.perf_counter() - t_done < 600:
        time.sleep(0.01)  # polled before any query: the time the bulk load takes to become ANN-searchable
    sealed_after = time.perf_counter() - t_done
    flat = FaissFlat()
    flat.build(x, {})  # rows are in the same order as x (one transaction, fresh ids)
    atom_of = eng.table.atom_code
    snap = eng.snapshot
    cur_vf, cur_vt = eng.table.valid_from[: snap.n], eng.table.valid_to[: snap.n]
    nq = args.queries
    queries = perturb(x[rng.integers(0, n, nq)], rng, 0.6)
    out: dict[str, Any] = {"n": n, "add_many_s": add_s, "tail_rows_at_return": tail_at_return,
                           "tail_sealed_after_s": sealed_after, "sets": []}
    print(f"bulk add_many of {n} pre-embedded atoms: {add_s:.2f}s; exact tail {tail_at_return} rows when it "
          f"returned, below tail_rows={idx.recipe.tail_rows} {sealed_after:.2f}s later", flush=True)
    sets = [(f"valid-time {s:g}", window_for(cur_vf, cur_vt, s, rng)) for s in (0.01, 1.0)]
    for phase in ("once the tail is sealed", "a minute later"):
        if phase != "once the tail is sealed":
            time.sleep(max(0.0, 60 - (time.perf_counter() - t_done)))
        for name, width in sets:
            lat: dict[str, list[float]] = {"engine": [], "api": [], "faiss": []}
            rec: dict[str, list[float]] = {"engine": [], "api": [], "faiss": []}
            tails: list[int] = []
            when: list[float] = []
            for i in range(nq):
                a = -(2**62) if width < 0 else int(T0_US + (SPAN_US - width) * ((i * 0.618034) % 1.0))
                b = 2**63 - 1 if width < 0 else a + width
                f = Filters(as_of=snap.last_tx, valid_at=None, valid_during=(a, b), tags=None)
                q = queries[i]
                mask = eng.mask(snap, as_of=f.as_of, valid_at=None, valid_during=f.valid_during, tags=None)
                when.append(time.perf_counter() - t_done)
                s0 = time.perf_counter()
                res, plan, _ = plan_and_search(eng, snap, q[None], k, f)
                lat["engine"].append((time.perf_counter() - s0) * 1000)
                got_e = [r for r, _ in res[0]]
                tails.append(sum(bp.selected for bp in plan if bp.bucket == "tail"))
                s0 = time.perf_counter()
                hits = mem.search(q, k=k, valid_during=(dt(a) if width >= 0 else None, dt(b) if width >= 0 else None),
                                  as_of=dt(snap.last_tx))
                lat["api"].append((time.perf_counter() - s0) * 1000)
                got_a = [int(eng.table.row_index(np.array([h.atom.version_id]))[0]) for h in hits]
                s0 = time.perf_counter()
                got_f = flat.search(q, k, f, mask)
                lat["faiss"].append((time.perf_counter() - s0) * 1000)
                ref, _, _ = exact_search(eng, snap, q[None], k, f)
                ref_atoms = {int(atom_of[r]) for r, _ in ref[0]}
                for key, got in (("engine", got_e), ("api", got_a), ("faiss", got_f)):
                    rec[key].append(len({int(atom_of[r]) for r in got} & ref_atoms) / max(1, len(ref_atoms)))
            row: dict[str, Any] = {"phase": phase, "set": name, "t_first_s": when[0], "t_last_s": when[-1],
                   "tail_rows_max": max(tails), "tail_rows_p50": statistics.median(tails)}
            for key in lat:
                row[f"{key}_p50_ms"] = statistics.median(lat[key])
                row[f"{key}_recall"] = float(np.mean(rec[key]))
            row["api_over_engine"] = row["api_p50_ms"] / row["engine_p50_ms"]
            row["engine_over_faiss"] = row["engine_p50_ms"] / row["faiss_p50_ms"]
            row["api_over_faiss"] = row["api_p50_ms"] / row["faiss_p50_ms"]
            out["sets"].append(row)
            print(f"  bulk {phase:26s} {name:16s} t={when[0]:5.1f}-{when[-1]:5.1f}s tail<={max(tails):6d} rows  "
                  f"engine {row['engine_p50_ms']:.3f}ms R{row['engine_recall']:.3f}  "
                  f"API {row['api_p50_ms']:.3f}ms R{row['api_recall']:.3f} (x{row['api_over_engine']:.2f} engine)  "
                  f"faiss flat {row['faiss_p50_ms']:.3f}ms  aether/faiss x{row['api_over_faiss']:.2f}", flush=True)
    out["partitions"] = [(p.label, p.m, p.tier.name) for p in idx.state.partitions]
    print(f"  bulk: partitions at the end {out['partitions']}", flush=True)
    mem.close()
    shutil.rmtree(store, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------- steady writes
def steady_phase(args: argparse.Namespace, work: Path, x: np.ndarray, vf: np.ndarray, vt: np.ndarray,
                 rng: np.random.Generator) -> dict[str, Any]:
    """Continuous writes (``--steady-rate`` atoms/s in commits every 50 ms, for ``--steady-s`` seconds)
    after a bulk load of half the atoms, with queries (all valid time) in between.

    At least one query runs between commits (a machine too busy for the rate writes less: the rate
    reached is reported). Records, per query, the rows the tail scanned exactly (the bound: ``tail_rows`` plus what
    arrives while one run builds) and its latency through ``Memory.search``; every tenth query is
    checked against exact search. The index's runs and tail are sampled once a second.
    """
    n, k = len(x), args.k
    store = work / "aether_steady"
    if store.exists():
        shutil.rmtree(store)
    mem = aether.open(store, embedder=aether.PrecomputedEmbedder(x.shape[1]))
    eng = mem._engine
    idx = find_index(eng)
    assert idx is not None
    half = n // 2
    mem.add_many([{"content": f"atom {i}", "valid_from": dt(int(vf[i])), "valid_to": dt(int(vt[i]))}
                  for i in range(half)], vectors=x[:half])
    rate, dur = args.steady_rate, args.steady_s
    step = max(1, int(rate * 0.05))
    queries = perturb(x[rng.integers(0, n, 200)], rng, 0.6)
    lat: list[float] = []
    tails: list[int] = []
    recs: list[float] = []
    samples: list[dict[str, Any]] = []
    pos = half
    t0 = time.perf_counter()
    next_commit = t0
    next_sample = t0
    qi = 0
    while time.perf_counter() - t0 < dur and pos < n:
        now = time.perf_counter()
        if now >= next_commit:
            e = min(n, pos + step)
            mem.add_many([{"content": f"atom {i}", "valid_from": dt(int(vf[i])), "valid_to": dt(int(vt[i]))}
                          for i in range(pos, e)], vectors=x[pos:e])
            pos = e
            next_commit = max(next_commit + 0.05, time.perf_counter() - 0.05)  # behind: drop the backlog
        if now >= next_sample:
            st = idx.state
            samples.append({"t_s": now - t0, "rows": eng.snapshot.n, "tail": eng.snapshot.n - st.covered,
                            "runs": [(p.m, p.tier.name) for p in st.run_parts], "base_rows": st.base_covered})
            next_sample += 1.0
        q = queries[qi % len(queries)]
        s0 = time.perf_counter()
        hits = mem.search(q, k=k, valid_during=(None, None), mode="dense")
        lat.append((time.perf_counter() - s0) * 1000)
        snap = eng.snapshot
        f = Filters(as_of=snap.last_tx, valid_at=None, valid_during=(-(2**62), 2**63 - 1), tags=None)
        res, plan, _ = plan_and_search(eng, snap, q[None], k, f)
        tails.append(sum(bp.selected for bp in plan if bp.bucket == "tail"))
        if qi % 10 == 0:
            ref, _, _ = exact_search(eng, snap, q[None], k, f)
            got = {int(eng.table.atom_code[r]) for r, _ in res[0]}
            want = {int(eng.table.atom_code[r]) for r, _ in ref[0]}
            recs.append(len(got & want) / max(1, len(want)))
        del hits
        qi += 1
    wrote = pos - half
    secs = time.perf_counter() - t0
    out = {"rate_asked": rate, "rate_done": wrote / secs, "seconds": secs, "queries": len(lat),
           "api_p50_ms": statistics.median(lat), "api_p99_ms": pctl(lat, 99), "tail_rows_max": max(tails),
           "tail_rows_p50": statistics.median(tails), "tail_rows_bound": idx.recipe.tail_rows,
           "recall": float(np.mean(recs)), "samples": samples}
    print(f"steady writes {out['rate_done']:.0f} atoms/s for {secs:.0f}s, {len(lat)} queries: API p50 "
          f"{out['api_p50_ms']:.2f} ms p99 {out['api_p99_ms']:.2f} ms, exact tail rows p50 {out['tail_rows_p50']:.0f} "
          f"max {out['tail_rows_max']} (tail_rows {idx.recipe.tail_rows}), recall {out['recall']:.3f}", flush=True)
    for smp in samples[:: max(1, len(samples) // 10)]:
        print(f"  t={smp['t_s']:5.1f}s rows={smp['rows']} tail={smp['tail']} base={smp['base_rows']} "
              f"runs={smp['runs']}", flush=True)
    mem.close()
    shutil.rmtree(store, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------- main
def _reuse(built: Path, n: int) -> tuple[float, float, list[int], int]:
    """The figures and transaction times recorded when the store was built (``--reuse``)."""
    doc = json.loads(built.read_text())
    if doc["n"] != n:
        raise SystemExit(f"--reuse: the store holds n={doc['n']}, not {n}")
    print(f"aether: reusing the store built earlier (ingest {doc['ingest_rate']:,.0f} rows/s, "
          f"build {doc['build_s']:.1f}s)", flush=True)
    return float(doc["ingest_rate"]), float(doc["build_s"]), [int(t) for t in doc["batch_tx"]], int(doc["pre_corr_tx"])


def _build_store(store: Path, built: Path, args: argparse.Namespace, x: np.ndarray, vf: np.ndarray,
                 vt: np.ndarray, corr: np.ndarray, xc: np.ndarray) -> tuple[float, float, list[int], int]:
    """Ingest the workload into a fresh store and build its index; returns (ingest rate, build s, tx times)."""
    n, dim = args.n, args.dim
    ncorr = len(corr)
    if store.exists():
        shutil.rmtree(store)
    mem = aether.open(store, embedder=aether.PrecomputedEmbedder(dim))
    if args.defer_build:  # bulk-load mode: no background seals during ingest, one build after it
        idx0 = find_index(mem._engine)
        assert idx0 is not None
        idx0.pause()
    nb = 100
    bounds = np.linspace(0, n, nb + 1).astype(int)
    batch_tx: list[int] = []
    ingest_s = 0.0
    for j in range(nb):
        s, e = bounds[j], bounds[j + 1]
        cols = {"content": [f"atom {i}" for i in range(s, e)], "atom_id": [f"a{i}" for i in range(s, e)],
                "valid_from": vf[s:e].astype("datetime64[us]"), "valid_to": vt[s:e].astype("datetime64[us]")}
        t = time.perf_counter()
        mem.add_columns(vectors=x[s:e], **cols)  # the bulk path (add_many of dicts: bench_core --ingest-only)
        ingest_s += time.perf_counter() - t
        batch_tx.append(mem._engine.snapshot.last_tx)
    pre_corr_tx = mem._engine.snapshot.last_tx
    cols = {"content": [f"atom {i} v2" for i in corr], "atom_id": [f"a{i}" for i in corr],
            "valid_from": vf[corr].astype("datetime64[us]"), "valid_to": vt[corr].astype("datetime64[us]")}
    new_s = ingest_s
    t = time.perf_counter()
    mem.add_columns(vectors=xc, **cols)  # existing ids: new versions through the general planner
    ingest_s += time.perf_counter() - t
    total_rows = n + ncorr
    ingest_rate = total_rows / ingest_s
    print(f"aether ingest: {total_rows} rows in {ingest_s:.2f}s = {ingest_rate:,.0f} rows/s (durable): "
          f"{n / new_s:,.0f} new atoms/s, {ncorr / (ingest_s - new_s):,.0f} corrections/s", flush=True)
    idx = find_index(mem._engine)
    assert idx is not None
    t = time.perf_counter()
    idx.wait()
    idx.resume()
    idx.seal()
    build_s = time.perf_counter() - t
    mem.close()
    built.write_text(json.dumps({"n": n, "ingest_rate": ingest_rate, "build_s": build_s, "batch_tx": batch_tx,
                                 "pre_corr_tx": pre_corr_tx}))
    return ingest_rate, build_s, batch_tx, pre_corr_tx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100, help="queries per set for aether and FAISS")
    ap.add_argument("--peer-queries", type=int, default=20, help="queries per set for LanceDB and Chroma")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--peers", default="faiss,lancedb,chroma",
                    help="comma list of faiss, faiss-flat, lancedb, chroma; empty for aether only")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--workdir", default=None, help="where stores are built (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the store --workdir holds from an earlier run with the same --n (queries only)")
    ap.add_argument("--defer-build", action="store_true",
                    help="pause index sealing during ingest and build once after it (bulk-load mode)")
    ap.add_argument("--bulk", choices=("on", "off", "only"), default="on",
                    help="also (or only) measure queries right after one bulk add_many of every atom")
    ap.add_argument("--steady-s", type=float, default=0.0,
                    help="also measure queries under continuous writes for this many seconds (0: skip)")
    ap.add_argument("--steady-rate", type=float, default=1000.0, help="atoms per second of the steady writes")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n, dim, k = args.n, args.dim, args.k
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="aether-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "n": n, "dim": dim, "k": k, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                "faiss": faiss.__version__, "aether": aether.__version__},
        "systems": {},
    }
    print(f"# bench_filtered n={n} dim={dim} workdir={work}", flush=True)

    # -- data
    x, _ = clustered(n, dim, rng)
    vf = rng.integers(T0_US, T0_US + SPAN_US, n).astype(np.int64)
    dur = np.exp(rng.uniform(np.log(MINUTE_US), np.log(3 * 24 * HOUR_US), n)).astype(np.int64)
    vt = vf + dur
    ncorr = n // 10
    corr = rng.choice(n, ncorr, replace=False)
    xc = perturb(x[corr], rng, 0.5)
    if args.steady_s > 0:
        report["steady"] = steady_phase(args, work, x, vf, vt, np.random.default_rng(args.seed + 2))
    if args.bulk != "off":
        report["bulk"] = bulk_phase(args, work, x, vf, vt, np.random.default_rng(args.seed + 1))
        if args.bulk == "only":
            (out_dir / f"filtered_{n}_bulk.json").write_text(json.dumps(report, indent=1, default=str))
            return

    # -- aether ingest (durable: each add_many is one fsynced transaction)
    store = work / "aether"
    built = work / "aether_build.json"  # what the build of ``store`` measured (for --reuse)
    if args.reuse and store.exists() and built.exists():
        ingest_rate, build_s, batch_tx, pre_corr_tx = _reuse(built, n)
    else:
        ingest_rate, build_s, batch_tx, pre_corr_tx = _build_store(store, built, args, x, vf, vt, corr, xc)
    t = time.perf_counter()
    mem = aether.open(store, embedder=aether.PrecomputedEmbedder(dim))
    open_s = time.perf_counter() - t
    t1 = time.perf_counter()
    mem.search(x[0], k=k)  # the first query after open (index pages, tail vectors)
    first_query_s = time.perf_counter() - t1
    mem._engine.table.vectors  # noqa: B018  # every row's vector resident (loaded in the background)
    vectors_ready_s = time.perf_counter() - t
    print(f"aether reopen {open_s:.2f}s, first query {first_query_s * 1000:.1f} ms, "
          f"all vectors resident {vectors_ready_s:.2f}s after the open began", flush=True)
    eng = mem._engine
    idx = find_index(eng)
    assert idx is not None and idx.state.covered == eng.snapshot.n, "index not loaded from disk"
    parts = [(p.label, p.m, p.tier.name) for p in idx.state.partitions]
    print(f"aether index build {build_s:.1f}s, reopen {open_s:.2f}s, partitions {parts}", flush=True)
    snap = eng.snapshot
    tbl = eng.table
    rows_n = snap.n
    cols = {"vf": tbl.valid_from[:rows_n].copy(), "vt": tbl.valid_to[:rows_n].copy(),
            "txf": tbl.tx_from[:rows_n].copy(), "txto": tbl.tx_to[:rows_n].copy()}
    xall = np.ascontiguousarray(tbl.vectors[:rows_n])
    atom_of = tbl.atom_code[:rows_n]

    # -- query sets
    qsets: list[dict[str, Any]] = []
    cur = cols["txto"] == np.iinfo(np.int64).max
    for target in VT_SELECTIVITIES:
        w = window_for(cols["vf"][cur], cols["vt"][cur], target, rng)
        qsets.append({"name": f"valid-time {target:g}", "kind": "valid", "target": target, "width": w})
    for target in ASOF_SELECTIVITIES:
        qsets.append({"name": f"as-of {target:g}", "kind": "asof", "target": target,
                      "as_of": batch_tx[max(0, round(target * len(batch_tx)) - 1)]})
    qsets.append({"name": "as-of before corrections", "kind": "asof", "target": 1.0, "as_of": pre_corr_tx})
    nq = args.queries
    qidx = rng.integers(0, n, nq)
    queries = perturb(x[qidx], rng, 0.6)

    def filters_for(qs: dict[str, Any], i: int) -> Filters:
        if qs["kind"] == "valid":
            if qs["width"] < 0:
                return Filters(as_of=snap.last_tx, valid_at=None, valid_during=(-(2**62), 2**63 - 1), tags=None)
            a = int(T0_US + (SPAN_US - qs["width"]) * ((i * 0.618034) % 1.0))
            return Filters(as_of=snap.last_tx, valid_at=None, valid_during=(a, a + qs["width"]), tags=None)
        return Filters(as_of=qs["as_of"], valid_at=None, valid_during=(-(2**62), 2**63 - 1), tags=None)

    # ground truth (exact numpy over the selected rows; dedupe per atom like aether)
    truth: dict[str, list[list[int]]] = {}
    masks: dict[str, list[np.ndarray]] = {}
    for qs in qsets:
        truth[qs["name"]], masks[qs["name"]] = [], []
        sels = []
        for i in range(nq):
            f = filters_for(qs, i)
            res, _, sel = exact_search(eng, snap, queries[i][None], k, f)
            truth[qs["name"]].append([r for r, _ in res[0]])
            m = eng.mask(snap, as_of=f.as_of, valid_at=None, valid_during=f.valid_during, tags=None)
            masks[qs["name"]].append(m)
            sels.append(sel / n)
        qs["selectivity"] = float(np.mean(sels))

    def recall(got: list[int], ref: list[int]) -> float:
        if not ref:
            return 1.0
        ga = {int(atom_of[r]) for r in got}
        return len(ga & {int(atom_of[r]) for r in ref}) / len(ref)

    Fn = Callable[[np.ndarray, Filters, np.ndarray], "list[int] | Callable[[], list[int]]"]
    systems: list[tuple[str, Fn, int]] = []

    def measure_all() -> None:
        """Queries interleaved across systems (query i of every system, then i+1), so that a busy
        shared machine slows them all alike instead of whichever happened to run at a bad moment.
        The order rotates with i: a peer's worker threads still busy after its call (LanceDB, Chroma)
        then slow each system's next query equally often, not always the same system's."""
        for qs in qsets:
            lat: dict[str, list[float]] = {name: [] for name, _, _ in systems}
            rec: dict[str, list[float]] = {name: [] for name, _, _ in systems}
            for i in range(nq):
                f = filters_for(qs, i)
                mask = masks[qs["name"]][i]
                r = i % max(1, len(systems))
                for name, fn, nqs in systems[r:] + systems[:r]:
                    if i >= nqs:
                        continue
                    try:
                        t = time.perf_counter()
                        got = fn(queries[i], f, mask)
                        lat[name].append((time.perf_counter() - t) * 1000)
                        if callable(got):  # row ids worked out after the clock stopped
                            got = got()
                        rec[name].append(recall(got, truth[qs["name"]][i]))
                    except Exception as exc:  # a peer failing must not lose the rest of the run
                        report["systems"][name]["error"] = repr(exc)
            for name, _, _ in systems:
                if not lat[name]:
                    continue
                row = {"set": qs["name"], "selectivity": qs["selectivity"], "p50_ms": statistics.median(lat[name]),
                       "p99_ms": pctl(lat[name], 99), "recall": float(np.mean(rec[name])),
                       "min_recall": float(np.min(rec[name])), "queries": len(lat[name])}
                report["systems"][name].setdefault("sets", []).append(row)
                print(f"  {name:34s} {qs['name']:26s} sel={qs['selectivity']:.4f} p50={row['p50_ms']:.3f}ms "
                      f"p99={row['p99_ms']:.3f}ms recall={row['recall']:.3f}", flush=True)

    # -- aether, engine level (row ids, like FAISS) and API level (Hit objects)
    def aether_engine(q: np.ndarray, f: Filters, mask: np.ndarray) -> list[int]:
        res, _, _ = plan_and_search(eng, eng.snapshot, q[None], k, f)
        return [r for r, _ in res[0]]

    def aether_api(q: np.ndarray, f: Filters, mask: np.ndarray) -> Callable[[], list[int]]:
        a, b = f.valid_during or (None, None)
        hits = mem.search(q, k=k, valid_during=(dt(a) if a > -(2**62) else None, dt(b) if b < 2**63 - 1 else None),
                          as_of=dt(f.as_of))
        # Hits carry version ids; mapping them back to table rows (for recall) is the benchmark's
        # work, not the search's: done after the clock stops, as in bulk_phase.
        return lambda: [int(r) for r in tbl.row_index(np.array([h.atom.version_id for h in hits], np.int64))]

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = {"open_s": open_s, "first_query_after_open_s": first_query_s, "vectors_resident_s": vectors_ready_s,
             "partitions": parts, "max_rss_mb_after_open": rss}
    report["systems"]["aether (engine)"] = {"build_s": build_s, "ingest_rows_per_s": ingest_rate, **extra}
    report["systems"]["aether (API)"] = {"build_s": build_s, "ingest_rows_per_s": ingest_rate}
    systems += [("aether (engine)", aether_engine, nq), ("aether (API)", aether_api, nq)]
    # plans for one query per set
    report["plans"] = {}
    for qs in qsets:
        _, plan, sel = plan_and_search(eng, snap, queries[0][None], k, filters_for(qs, 0))
        report["plans"][qs["name"]] = [b.model_dump() for b in plan if b.strategy != "pruned"]
    # batch search
    # (one warm-up call, then the median of 3: a single cold call right after reopen measured the page
    # cache and allocator, not the planner)
    f_all = filters_for(qsets[VT_SELECTIVITIES.index(1.0)], 0)
    plan_and_search(eng, snap, queries, k, f_all)
    batch_s = []
    for _ in range(3):
        t = time.perf_counter()
        plan_and_search(eng, snap, queries, k, f_all)
        batch_s.append(time.perf_counter() - t)
    report["batch_100pct_ms_per_query"] = float(np.median(batch_s)) * 1000 / nq

    # -- peers
    want = {p.strip() for p in args.peers.split(",") if p.strip()}
    peers: list[tuple[Peer, int]] = []
    h64 = h256 = None
    if "faiss" in want or "faiss-flat" in want:
        peers.append((FaissFlat(), nq))
    if "faiss" in want:  # "faiss-flat" skips the (slow to build) HNSW peers
        h64 = FaissHNSW(64)
        h256 = FaissHNSW(256)
        peers += [(h64, nq), (h256, nq)]
    makers = (("lancedb", lambda: [Lance(False, work), Lance(True, work)]), ("chromadb", lambda: [Chroma(work)]))
    for mod, make in makers:
        if mod.replace("db", "") in want or mod in want:
            try:
                __import__(mod)
            except ImportError:
                print(f"  {mod} not installed: skipped (pip install 'aether[bench]')", flush=True)
                continue
            peers += [(p, args.peer_queries) for p in make()]
    for peer, nqs in peers:
        if peer is h256 and h64 is not None and h64.index is not None:
            h256.share(h64)  # same graph, searched with a larger efSearch
        try:
            b = peer.build(xall, cols)
            print(f"  {peer.name}: build {b:.1f}s", flush=True)
            report["systems"][peer.name] = {"build_s": b, "ingest_rows_per_s": None}
            systems.append((peer.name, lambda q, f, m, p=peer: p.search(q, k, f, m), nqs))  # type: ignore[misc]
        except Exception as exc:  # a peer failing must not lose the rest of the run
            print(f"  {peer.name}: FAILED {exc!r}", flush=True)
            report["systems"][peer.name] = {"error": repr(exc)}
    measure_all()
    mem.close()
    report["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # -- outputs
    stem = out_dir / f"filtered_{n}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# Filtered search, n={n} atoms (+{ncorr} corrections), dim={dim}, k={k}", "",
             f"aether: ingest {ingest_rate:,.0f} rows/s durable, index build {build_s:.1f}s, "
             f"reopen {open_s:.2f}s (first query {first_query_s * 1000:.0f} ms, all vectors resident after "
             f"{vectors_ready_s:.2f}s), partitions {len(parts)}; batch search (100%) "
             f"{report['batch_100pct_ms_per_query']:.3f} ms/query; max RSS {report['max_rss_mb']:.0f} MB", "",
             "| system | build s | " + " | ".join(qs["name"] + f" ({qs['selectivity']:.2%})" for qs in qsets) + " |",
             "|---|---|" + "---|" * len(qsets)]
    for name, sysr in report["systems"].items():
        if "sets" not in sysr:
            lines.append(f"| {name} | failed: {sysr.get('error', '')[:60]} |")
            continue
        cells = [f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms, R {r['recall']:.3f}" for r in sysr["sets"]]
        b = sysr.get("build_s")
        lines.append(f"| {name} | {b:.1f} | " + " | ".join(cells) + " |" if b is not None else
                     f"| {name} | - | " + " | ".join(cells) + " |")
    lines += ["", "cells: p50 / p99 latency, R = recall@10 vs exact numpy search over the same selected rows", "",
              "API p50 / engine p50 (the cost of building Hit objects): " + ", ".join(
                  f"{e['set']} x{a['p50_ms'] / e['p50_ms']:.2f}" for e, a in zip(
                      report["systems"]["aether (engine)"]["sets"], report["systems"]["aether (API)"]["sets"],
                      strict=True))]
    if "bulk" in report:
        b = report["bulk"]
        lines += ["", f"Right after one bulk add_many of {b['n']} atoms ({b['add_many_s']:.1f}s): exact tail "
                  f"{b['tail_rows_at_return']} rows when it returned, below tail_rows "
                  f"{b['tail_sealed_after_s']:.1f}s after it returned:", "",
                  "| phase | set | queries at | max exact tail rows | engine p50 | API p50 (x engine) | "
                  "faiss flat+bitmap p50 | API / faiss | recall engine / API |", "|---" * 9 + "|"]
        for r in b["sets"]:
            lines.append(f"| {r['phase']} | {r['set']} | {r['t_first_s']:.1f}-{r['t_last_s']:.1f}s | "
                         f"{r['tail_rows_max']} | "
                         f"{r['engine_p50_ms']:.3f} ms | {r['api_p50_ms']:.3f} ms (x{r['api_over_engine']:.2f}) | "
                         f"{r['faiss_p50_ms']:.3f} ms | x{r['api_over_faiss']:.2f} | "
                         f"{r['engine_recall']:.3f} / {r['api_recall']:.3f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
        for name, sysr in report["systems"].items():
            if "sets" not in sysr:
                continue
            pts = sorted((r["selectivity"], r["p50_ms"], r["recall"]) for r in sysr["sets"]
                         if r["set"].startswith("valid"))
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax2.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=name)
        for ax, yl in ((ax1, "p50 latency (ms)"), (ax2, "recall@10")):
            ax.set_xscale("log")
            ax.set_xlabel("valid-time selectivity")
            ax.set_ylabel(yl)
            ax.grid(True, alpha=0.3)
        ax1.set_yscale("log")
        ax2.legend(fontsize=7)
        fig.suptitle(f"aether filtered search, n={n}, dim={dim}")
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
    print(f"wrote {stem}.md/.json/.png", flush=True)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
