"""The bounded exact tail: the background index seals the tail into runs, merges runs by size and
into the bucket partitions (an LSM tree), and answers stay within recall 0.95 of exact search."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

import aether
from aether.index import BucketedIndex, load_recipe, use_recipe

DIM = 32
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TAIL = 300


def lsm_recipe(**kw: object) -> aether.index.Recipe:
    """Small thresholds: a few thousand rows make flat runs, IVF runs, compactions and merges."""
    base: dict[str, object] = dict(
        partition_rows=3000,
        tail_rows=TAIL,
        background=True,
        tiers=[
            {"name": "flat", "max_rows": 500, "factory": "Flat"},
            {"name": "hnsw", "max_rows": None, "factory": "HNSW16,Flat", "build": {"efConstruction": 40}},
        ],
        run_tiers=[
            {"name": "run-flat", "max_rows": 600, "factory": "Flat"},
            {"name": "run-ivf", "max_rows": None, "factory": "IVF{nlist},Flat",
             "build": {"rows_per_list": 64, "max_nlist": 64}, "search": {"nprobe": 8}},
        ],
        run_fanout=4,
        merge_min_rows=10**9,  # no merge into the bucket partitions unless a test asks for it
        planner={"exact_rows": 100, "ann_cost_per_ef": 1},
    )
    base.update(kw)
    return load_recipe().with_overrides(**base)


def clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.normal(size=(24, DIM))
    x = centers[rng.integers(0, 24, n)] + 0.35 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def items(n: int, start: int, rng: np.random.Generator) -> list[dict[str, object]]:
    days = rng.uniform(0, 365, n)
    return [{"content": f"atom {start + i}", "atom_id": f"a{start + i}",
             "valid_from": T0 + timedelta(days=float(days[i]))} for i in range(n)]


def open_lsm(path: Path | None, **kw: object) -> tuple[aether.Memory, BucketedIndex]:
    mem = aether.open(path, embedder=aether.PrecomputedEmbedder(DIM))
    return mem, use_recipe(mem._engine, lsm_recipe(**kw))


def exact_ids(x: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> set[str]:
    """Reference answer: exact numpy search over every current vector."""
    top = np.argsort(-(x @ q), kind="stable")[:k]
    return {ids[i] for i in top}


def mean_recall(mem: aether.Memory, x: np.ndarray, ids: list[str], rng: np.random.Generator, k: int = 10) -> float:
    recs = []
    for _ in range(30):
        q = x[rng.integers(0, len(x))] + 0.2 * rng.normal(size=DIM)
        q = (q / np.linalg.norm(q)).astype(np.float32)
        got = {h.atom_id for h in mem.search(q, k=k, valid_during=(None, None))}
        recs.append(len(got & exact_ids(x, ids, q, k)) / k)
    return float(np.mean(recs))


def tail_rows(idx: BucketedIndex, mem: aether.Memory) -> int:
    return mem._engine.snapshot.n - idx.state.covered


def test_bulk_load_is_searchable_within_seconds_then_rebuilt_as_a_sealed_run() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    x = clustered(n, rng)
    mem, idx = open_lsm(None)
    t0 = time.monotonic()
    ids = mem.add_many(items(n, 0, rng), vectors=x)
    while tail_rows(idx, mem) >= TAIL and time.monotonic() - t0 < 60:
        time.sleep(0.005)
    assert tail_rows(idx, mem) < TAIL, "the bulk load was not sealed within 60 s"
    # right away (a fresh IVF run, or already its HNSW rebuild): only the tail is scanned exactly
    plan = mem.explain(x[0], k=10, valid_during=(None, None))
    assert sum(b.selected for b in plan.buckets if b.bucket == "tail") < TAIL
    assert {b.strategy for b in plan.buckets if b.bucket.startswith("run")} <= {"ivf", "hnsw"}
    assert mean_recall(mem, x, ids, rng) >= 0.95
    idx.wait()
    st = idx.state
    assert st.run_parts and not st.base_parts  # below merge_min_rows: nothing in bucket partitions
    assert {p.tier.name for p in st.run_parts} == {"hnsw"}  # the slow lane rebuilt the IVF run
    assert sum(p.m for p in st.partitions) == st.covered == n
    assert mean_recall(mem, x, ids, rng) >= 0.95
    mem.close()


def test_small_commits_keep_the_tail_and_the_run_count_small() -> None:
    rng = np.random.default_rng(2)
    mem, idx = open_lsm(None)
    xs, ids = [], []
    worst_tail = 0
    for b in range(60):
        x = clustered(50, rng)  # new clusters in each batch: a harder set for IVF than one clustering
        ids += mem.add_many(items(50, 50 * b, rng), vectors=x)
        xs.append(x)
        if b % 6 == 5:
            idx.wait()
            worst_tail = max(worst_tail, tail_rows(idx, mem))
    idx.wait()
    x = np.concatenate(xs)
    st = idx.state
    assert worst_tail < TAIL  # once the lanes are idle the exact tail is below tail_rows
    runs = st.run_parts
    assert sum(p.m for p in runs) + tail_rows(idx, mem) == len(x)
    assert not [p for p in runs if p.tier.kind == "ivf"]  # every IVF run was rebuilt as a sealed run
    assert 1 <= len(runs) <= 4  # size-tiered merging: few runs
    assert mean_recall(mem, x, ids, rng) >= 0.95
    mem.close()


def test_runs_merge_into_bucket_partitions_and_persist(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "s"
    mem, idx = open_lsm(path, merge_min_rows=2000, merge_ratio=0.25)
    x = clustered(4000, rng)
    ids = mem.add_many(items(2500, 0, rng), vectors=x[:2500])
    idx.wait()
    assert idx.state.base_parts and idx.state.base_covered == 2500  # merged: 2500 >= merge_min_rows
    ids += mem.add_many(items(1500, 2500, rng), vectors=x[2500:])
    idx.wait()
    st = idx.state
    assert st.base_covered >= 2500 and st.covered > mem._engine.snapshot.n - TAIL
    assert mean_recall(mem, x, ids, rng) >= 0.95
    labels = [(p.label, p.m) for p in st.partitions]
    covered = st.covered
    mem.close()
    # reopen: bucket partitions and runs are loaded from the catalog, nothing is rebuilt
    mem, idx = open_lsm(path, merge_min_rows=2000, merge_ratio=0.25)
    assert idx.notes == []
    assert idx.state.covered == covered and [(p.label, p.m) for p in idx.state.partitions] == labels
    assert mean_recall(mem, x, ids, rng) >= 0.95
    idx.seal()  # everything into the bucket partitions
    assert idx.state.run_parts == () and idx.state.covered == mem._engine.snapshot.n
    assert mean_recall(mem, x, ids, rng) >= 0.95
    mem.close()


def test_a_corrected_row_in_a_run_is_closed_there() -> None:
    rng = np.random.default_rng(4)
    x = clustered(1500, rng)
    mem, idx = open_lsm(None)
    ids = mem.add_many(items(1500, 0, rng), vectors=x)
    idx.wait()
    assert idx.state.run_parts
    hit = mem.search(x[7], k=1, valid_during=(None, None))[0]
    assert hit.atom_id == ids[7]
    mem.correct(ids[7], "moved", vector=-x[7], valid_from=hit.atom.valid_from)
    again = mem.search(x[7], k=5, valid_during=(None, None))
    assert hit.atom.version_id not in [h.atom.version_id for h in again]
    mem.close()


def test_without_background_the_tail_goes_straight_to_bucket_partitions() -> None:
    rng = np.random.default_rng(5)
    mem, idx = open_lsm(None, background=False)
    mem.add_many(items(1000, 0, rng), vectors=clustered(1000, rng))
    assert idx.state.run_parts == () and idx.state.covered == 1000
    mem.close()
