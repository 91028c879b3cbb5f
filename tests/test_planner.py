"""The bucketed planner against exact numpy search: recall at every selectivity, as-of, tags, dedupe, plans."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aether
from aether.engine.search import Filters, exact_search, plan_and_search
from aether.index import BucketedIndex, find_index, load_recipe, use_recipe

DIM = 32
N = 3000
T0 = datetime(2023, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)
DAY_US = 86_400 * 1_000_000
SPAN_DAYS = 730


def small_recipe(**kw: object) -> aether.index.Recipe:
    """Tiny thresholds so that a few thousand rows exercise partitions, HNSW and the selectors."""
    base = dict(
        partition_rows=800,
        tail_rows=400,
        background=False,
        tiers=[
            {"name": "flat", "max_rows": 300, "factory": "Flat"},
            {"name": "hnsw", "max_rows": None, "factory": "HNSW16,Flat", "build": {"efConstruction": 40},
             "search": {"efSearch": 16}},
        ],
        planner={"exact_rows": 60, "ann_min_fraction": 0.05, "ann_cost_per_ef": 1},
    )
    base.update(kw)
    return load_recipe().with_overrides(**base)


def clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.normal(size=(24, DIM))
    x = centers[rng.integers(0, 24, n)] + 0.35 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Data:
    def __init__(self, mem: aether.Memory, x: np.ndarray, rng: np.random.Generator, tx_mid: int, tx_pre: int) -> None:
        self.mem = mem
        self.x = x
        self.rng = rng
        self.tx_mid = tx_mid  # after half of the ingest
        self.tx_pre = tx_pre  # before the corrections

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        return self.mem._engine

    def query(self) -> np.ndarray:
        q = self.x[self.rng.integers(0, len(self.x))] + 0.2 * self.rng.normal(size=DIM)
        return (q / np.linalg.norm(q)).astype(np.float32)


def build(path: Path | None, rng: np.random.Generator, *, recipe: aether.index.Recipe | None = None) -> Data:
    x = clustered(N, rng)
    vf = rng.uniform(0, SPAN_DAYS, N)
    dur = np.exp(rng.uniform(np.log(0.01), np.log(60), N))
    mem = aether.open(path, embedder=aether.PrecomputedEmbedder(DIM))
    use_recipe(mem._engine, recipe or small_recipe())
    items = [
        {"content": f"atom {i}", "atom_id": f"a{i}", "valid_from": T0 + timedelta(days=float(vf[i])),
         "valid_to": T0 + timedelta(days=float(vf[i] + dur[i])), "tags": {"team": "red" if i % 3 else "blue"}}
        for i in range(N)
    ]
    tx_mid = 0
    for s in range(0, N, 500):
        mem.add_many(items[s : s + 500], vectors=x[s : s + 500])
        if s + 500 == N // 2:
            tx_mid = mem._engine.snapshot.last_tx
    tx_pre = mem._engine.snapshot.last_tx
    corr = rng.choice(N, N // 10, replace=False)
    xc = clustered(len(corr), rng)
    mem.add_many([{**items[i], "content": f"atom {i} corrected"} for i in corr], vectors=xc)
    idx = find_index(mem._engine)
    assert idx is not None
    idx.seal()  # the last rows are below tail_rows: seal them so partitions cover everything
    return Data(mem, x, rng, tx_mid, tx_pre)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    d = build(tmp_path_factory.mktemp("planner") / "store", np.random.default_rng(3))
    yield d
    d.mem.close()


def recall(got: list[tuple[int, float]], ref: list[tuple[int, float]], codes: np.ndarray) -> float:
    if not ref:
        return 1.0 if not got else 0.0
    return len({int(codes[r]) for r, _ in got} & {int(codes[r]) for r, _ in ref}) / len(ref)


def compare(d: Data, f: Filters, nq: int = 20, k: int = 10) -> tuple[float, list[str], int]:
    eng = d.engine
    snap = eng.snapshot
    recs, strategies, sel = [], set(), 0
    for _ in range(nq):
        q = d.query()[None]
        got, plan, sel = plan_and_search(eng, snap, q, k, f)
        ref, _, ref_sel = exact_search(eng, snap, q, k, f)
        assert sel == ref_sel
        assert len(got[0]) == len(ref[0])
        recs.append(recall(got[0], ref[0], eng.table.atom_code))
        strategies |= {b.strategy for b in plan}
        if f.valid_at is None:  # one best version per atom
            atoms = [int(eng.table.atom_code[r]) for r, _ in got[0]]
            assert len(atoms) == len(set(atoms))
    return float(np.mean(recs)), sorted(strategies), sel


def test_partitions_and_tiers(data: Data) -> None:
    idx = next(d for d in data.engine.derived if isinstance(d, BucketedIndex))
    st_ = idx.state
    assert st_.covered == data.engine.snapshot.n
    assert len(st_.partitions) >= 3
    assert sum(p.m for p in st_.partitions) == st_.covered
    assert {p.tier.name for p in st_.partitions} >= {"hnsw"}
    for p in st_.partitions:
        assert np.all(np.diff(p.vf) >= 0)  # ordered by valid_from inside a partition
    bounds = [(p.klo, p.khi) for p in st_.partitions]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(bounds))  # ranges tile the bucket axis


@pytest.mark.parametrize("days", [0.5, 5, 40, 200, 700])
def test_recall_at_every_valid_time_selectivity(data: Data, days: float) -> None:
    snap = data.engine.snapshot
    recs = []
    strategies: set[str] = set()
    for j in range(5):
        a = T0_US + int((SPAN_DAYS - days) * DAY_US * (j + 0.5) / 5)
        f = Filters(as_of=snap.last_tx, valid_at=None, valid_during=(a, a + int(days * DAY_US)), tags=None)
        r, s, _ = compare(data, f, nq=6)
        recs.append(r)
        strategies |= set(s)
    assert np.mean(recs) >= 0.95, (days, recs)
    if days >= 200:
        assert "hnsw" in strategies  # the ANN path is exercised, not only exact scans
    if days <= 5:
        assert "pruned" in strategies


def test_recall_valid_at_points_and_all_time(data: Data) -> None:
    snap = data.engine.snapshot
    for day in (10.0, 365.0, 729.0):
        f = Filters(as_of=snap.last_tx, valid_at=T0_US + int(day * DAY_US), valid_during=None, tags=None)
        r, _, _ = compare(data, f, nq=8)
        assert r >= 0.95
    f = Filters(as_of=snap.last_tx, valid_at=None, valid_during=(-(2**62), 2**63 - 1), tags=None)
    r, strategies, sel = compare(data, f)
    assert r >= 0.95 and "hnsw" in strategies and sel == N


@pytest.mark.parametrize("which", ["mid", "pre"])
def test_recall_as_of_in_the_past(data: Data, which: str) -> None:
    as_of = data.tx_mid if which == "mid" else data.tx_pre
    f = Filters(as_of=as_of, valid_at=None, valid_during=(-(2**62), 2**63 - 1), tags=None)
    r, _, sel = compare(data, f)
    assert r >= 0.95
    assert sel == (N // 2 if which == "mid" else N)


def test_tag_filters(data: Data) -> None:
    snap = data.engine.snapshot
    f = Filters(as_of=snap.last_tx, valid_at=None, valid_during=(-(2**62), 2**63 - 1), tags={"team": "blue"})
    r, _, sel = compare(data, f)
    assert r >= 0.95 and sel == N // 3
    hits = data.mem.search(data.query(), k=5, valid_during=(None, None), tags={"team": "blue"})
    assert hits and all(h.atom.tags["team"] == "blue" for h in hits)


def test_explain_reports_the_plan(data: Data) -> None:
    plan = data.mem.explain(data.query(), valid_during=(T0 + timedelta(days=100), T0 + timedelta(days=101)))
    assert plan.buckets_pruned >= 1
    assert plan.buckets_total == len(plan.buckets)
    assert plan.selected_rows == sum(b.selected for b in plan.buckets)
    live = [b for b in plan.buckets if b.strategy not in ("pruned", "empty")]
    assert live and all("range" in b.params for b in live)
    full = data.mem.explain(data.query(), valid_during=(None, None))
    ann = [b for b in full.buckets if b.strategy == "hnsw"]
    assert ann and all(b.params["efSearch"] >= 16 for b in ann)


def test_search_many_matches_single_queries(data: Data) -> None:
    qs = np.stack([data.query() for _ in range(12)])
    during = (T0 + timedelta(days=50), T0 + timedelta(days=400))
    batch = data.mem.search_many(qs, k=7, valid_during=during)
    for q, hits in zip(qs, batch, strict=True):
        single = data.mem.search(q, k=7, valid_during=during)
        assert [h.atom.version_id for h in hits] == [h.atom.version_id for h in single]


def test_tail_rows_are_searched_and_sealed(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    d = build(None, rng)
    mem = d.mem
    idx = next(x for x in d.engine.derived if isinstance(x, BucketedIndex))
    covered = idx.state.covered
    v = d.query()
    mem.add("fresh", vector=v, valid_from=T0 + timedelta(days=3), valid_to=T0 + timedelta(days=4))
    assert idx.state.covered == covered  # below tail_rows: stays in the tail
    hit = mem.search(v, k=1, valid_at=T0 + timedelta(days=3, hours=1))[0]
    assert hit.atom.content.inline == "fresh"
    plan = mem.explain(v, k=1, valid_at=T0 + timedelta(days=3, hours=1))
    assert plan.buckets[-1].bucket == "tail"
    # a correction of a sealed row closes it in the partition too (tx_to copy kept current)
    old = mem.search(d.x[0], k=1, valid_during=(None, None))[0]
    mem.correct(old.atom_id, "moved", vector=-d.x[0], valid_from=old.atom.valid_from, valid_to=old.atom.valid_to)
    again = mem.search(d.x[0], k=3, valid_during=(None, None))
    assert old.atom.version_id not in [h.atom.version_id for h in again]
    mem.close()


def test_background_seal(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    d = build(tmp_path / "s", rng, recipe=small_recipe(background=True))
    idx = next(x for x in d.engine.derived if isinstance(x, BucketedIndex))
    idx.wait()
    assert idx.state.covered >= d.engine.snapshot.n - 400
    f = Filters(as_of=d.engine.snapshot.last_tx, valid_at=None, valid_during=(-(2**62), 2**63 - 1), tags=None)
    assert compare(d, f, nq=5)[0] >= 0.95
    d.mem.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a=st.floats(0, SPAN_DAYS), width=st.floats(0.01, SPAN_DAYS), point=st.booleans(),
    past=st.booleans(), tag=st.sampled_from([None, "red", "blue"]),
)
def test_exact_tiers_match_exact_search(flat_data: Data, a: float, width: float, point: bool, past: bool,
                                        tag: str | None) -> None:
    """With only exact tiers the planner must return exactly what the reference scan returns."""
    eng = flat_data.engine
    snap = eng.snapshot
    lo = T0_US + int(a * DAY_US)
    f = Filters(
        as_of=flat_data.tx_mid if past else snap.last_tx,
        valid_at=lo if point else None,
        valid_during=None if point else (lo, lo + int(width * DAY_US)),
        tags={"team": tag} if tag else None,
    )
    q = flat_data.query()[None]
    got, _, sel = plan_and_search(eng, snap, q, 10, f)
    ref, _, ref_sel = exact_search(eng, snap, q, 10, f)
    assert sel == ref_sel
    assert [r for r, _ in got[0]] == [r for r, _ in ref[0]]
    assert np.allclose([s for _, s in got[0]], [s for _, s in ref[0]], atol=1e-5)


@pytest.fixture(scope="module")
def flat_data() -> Iterator[Data]:
    recipe = small_recipe(tiers=[{"name": "flat", "max_rows": None, "factory": "Flat"}])
    d = build(None, np.random.default_rng(11), recipe=recipe)
    yield d
    d.mem.close()


def _batch_filters(d: Data) -> list[Filters]:
    snap = d.engine.snapshot
    a = T0_US + 100 * DAY_US
    everything = (-(2**62), 2**63 - 1)
    return [
        Filters(as_of=snap.last_tx, valid_at=a, valid_during=None, tags=None),  # point: no dedupe
        Filters(as_of=snap.last_tx, valid_at=None, valid_during=(a, a + DAY_US), tags=None),
        Filters(as_of=snap.last_tx, valid_at=None, valid_during=(a, a + 200 * DAY_US), tags=None),
        Filters(as_of=snap.last_tx, valid_at=None, valid_during=everything, tags=None),
        Filters(as_of=snap.last_tx, valid_at=None, valid_during=everything, tags={"team": "blue"}),
        Filters(as_of=d.tx_mid, valid_at=None, valid_during=everything, tags=None),
    ]


def _assert_batch_matches_singles(d: Data, qs: np.ndarray, f: Filters, k: int = 10) -> set[str]:
    eng = d.engine
    snap = eng.snapshot
    batch, plan, sel = plan_and_search(eng, snap, qs, k, f)
    assert len(batch) == len(qs)
    for q, got in zip(qs, batch, strict=True):
        one, _, sel1 = plan_and_search(eng, snap, q[None], k, f)
        assert sel1 == sel
        # Single queries score with FAISS's SIMD kernels, batches with BLAS: equal up to rounding.
        assert {r for r, _ in got} == {r for r, _ in one[0]}, f
        assert np.allclose([s for _, s in got], [s for _, s in one[0]], atol=1e-5)
        if f.valid_at is None:
            atoms = [int(eng.table.atom_code[r]) for r, _ in got]
            assert len(atoms) == len(set(atoms))
    return {b.strategy for b in plan}


@pytest.mark.parametrize("threads", ["1", "2"])
def test_batch_equals_single_queries_on_every_path(
    data: Data, flat_data: Data, monkeypatch: pytest.MonkeyPatch, threads: str
) -> None:
    """A shared-filter batch (one mask, one FAISS call, one argpartition per partition) returns what
    each query returns alone, on the HNSW, exact slice/gather and exception paths, with 1 or 2 threads."""
    monkeypatch.setenv("AETHER_SEARCH_THREADS", threads)
    strategies: set[str] = set()
    for d in (data, flat_data):
        qs = np.stack([d.query() for _ in range(20)])
        for f in _batch_filters(d):
            strategies |= _assert_batch_matches_singles(d, qs, f)
    assert {"hnsw", "exact"} <= strategies
    # exact-only tiers: the batch equals the reference scan exactly
    eng = flat_data.engine
    qs = np.stack([flat_data.query() for _ in range(12)])
    for f in _batch_filters(flat_data):
        got, _, _ = plan_and_search(eng, eng.snapshot, qs, 10, f)
        ref, _, _ = exact_search(eng, eng.snapshot, qs, 10, f)
        assert [[r for r, _ in g] for g in got] == [[r for r, _ in g] for g in ref]


def test_batch_over_the_tail_and_gathered_rows() -> None:
    planner = {"exact_rows": 60, "ann_min_fraction": 0.05, "ann_cost_per_ef": 1, "dense_slice_fraction": 0.9}
    d = build(None, np.random.default_rng(21), recipe=small_recipe(planner=planner))  # sparse masks: gather
    try:
        rng = np.random.default_rng(22)
        xs = clustered(300, rng)  # below tail_rows: stays in the exact tail
        vf = rng.uniform(0, SPAN_DAYS, 300)
        d.mem.add_many([{"content": f"late {i}", "valid_from": T0 + timedelta(days=float(vf[i])),
                         "valid_to": T0 + timedelta(days=float(vf[i]) + 30)} for i in range(300)], vectors=xs)
        qs = np.stack([d.query() for _ in range(16)])
        scans: set[str] = set()
        for f in _batch_filters(d):
            _assert_batch_matches_singles(d, qs, f)
            _, plan, _ = plan_and_search(d.engine, d.engine.snapshot, qs, 10, f)
            scans |= {str(b.params.get("scan")) for b in plan if b.strategy == "exact"}
            assert plan[-1].bucket == "tail"
        assert {"slice", "gather"} <= scans
    finally:
        d.mem.close()


def test_batch_threads_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.index import planner

    monkeypatch.delenv(planner.THREADS_ENV, raising=False)
    assert planner.batch_threads(1) == 1
    assert 1 <= planner.batch_threads(1000) <= (os.cpu_count() or 1)
    monkeypatch.setenv(planner.THREADS_ENV, "3")
    assert planner.batch_threads(1) == 3
    monkeypatch.setenv(planner.THREADS_ENV, "junk")
    assert planner.batch_threads(4) == 1


def test_batch_restores_thread_settings(data: Data, monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    monkeypatch.setenv("AETHER_SEARCH_THREADS", "1")
    before = faiss.omp_get_max_threads()
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas_before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    qs = np.stack([data.query() for _ in range(10)])
    plan_and_search(data.engine, data.engine.snapshot, qs, 5, _batch_filters(data)[3])
    assert faiss.omp_get_max_threads() == before
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"] == blas_before


def test_as_of_prefix_scan_is_exact(tmp_path: Path) -> None:
    """An as-of time early in the store's history scans the table prefix committed by then (one exact
    scan instead of every partition): same rows and scores as exact search, with any other filter."""
    rng = np.random.default_rng(11)
    planner = {"exact_rows": 60, "ann_min_fraction": 0.5, "ann_cost_per_ef": 1, "prefix_max_rows": 1200}
    d = build(tmp_path / "s", rng, recipe=small_recipe(planner=planner))
    try:
        eng = d.engine
        snap = eng.snapshot
        txs = np.unique(eng.table.tx_from[: snap.n])
        assert len(txs) >= 6
        t_early, t_two = int(txs[0]), int(txs[1])  # 500 and 1000 rows committed
        windows: list[tuple[int, int] | None] = [None, (T0_US + 100 * DAY_US, T0_US + 300 * DAY_US)]
        for as_of, window, tags in itertools.product((t_early, t_two, d.tx_mid), windows, (None, {"team": "blue"})):
            f = Filters(as_of=as_of, valid_at=None, valid_during=window, tags=tags)
            for _ in range(5):
                q = d.query()[None]
                got, plan, sel = plan_and_search(eng, snap, q, 10, f)
                ref, _, ref_sel = exact_search(eng, snap, q, 10, f)
                assert sel == ref_sel
                assert [r for r, _ in got[0]] == [r for r, _ in ref[0]]
                np.testing.assert_allclose([s for _, s in got[0]], [s for _, s in ref[0]], rtol=1e-5)
                uses_prefix = [b.bucket for b in plan] == ["as-of prefix"]
                assert uses_prefix == (as_of != d.tx_mid)  # tx_mid: 1500 rows committed, above 1200
        assert eng.table.tx_prefix(t_early, snap.n) == 500
    finally:
        d.mem.close()


def test_tx_prefix_refuses_rows_out_of_commit_order() -> None:
    from aether.engine.table import VersionTable

    t = VersionTable(4)
    t.n = 5
    t.tx_from[:5] = [1, 2, 2, 5, 7]
    assert t.tx_prefix(2, 5) == 3 and t.tx_prefix(0, 5) == 0 and t.tx_prefix(9, 5) == 5
    t.tx_from[5:7] = [6, 8]
    t.n = 7
    assert t.tx_prefix(2, 7) is None  # 7 then 6: not in commit order, so no prefix shortcut
