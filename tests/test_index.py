"""Bucketed index: recipes, buckets, persistence of index files across reopen, corruption detection."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.errors import ConfigError
from aether.index import BucketedIndex, find_index, load_recipe, recipe_from_dict, use_recipe
from aether.index import partition as partition_mod
from aether.index.buckets import bucket_keys, bucket_label
from aether.index.catalog import CATALOG, gen_dir

DIM = 16
N = 1200
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def recipe() -> aether.index.Recipe:
    return load_recipe().with_overrides(
        partition_rows=300,
        tail_rows=100,
        background=False,
        tiers=[
            {"name": "flat", "max_rows": 150, "factory": "Flat"},
            {"name": "hnsw", "max_rows": None, "factory": "HNSW16,Flat", "build": {"efConstruction": 40}},
        ],
        planner={"exact_rows": 30, "ann_cost_per_ef": 1},
    )


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def open_store(path: Path) -> tuple[aether.Memory, BucketedIndex]:
    mem = aether.open(path, embedder=aether.PrecomputedEmbedder(DIM))
    return mem, use_recipe(mem._engine, recipe())


def fill(path: Path) -> np.ndarray:
    x = vectors(N)
    mem, idx = open_store(path)
    items = [{"content": f"m{i}", "atom_id": f"a{i}", "valid_from": T0 + timedelta(days=i % 365),
              "valid_to": T0 + timedelta(days=i % 365 + 20)} for i in range(N)]
    for s in range(0, N, 400):
        mem.add_many(items[s : s + 400], vectors=x[s : s + 400])
    idx.seal()
    mem.close()
    return x


def answers(mem: aether.Memory, x: np.ndarray) -> list[list[tuple[int | None, float]]]:
    out = []
    for i in range(0, 60, 6):
        hits = mem.search(x[i], k=5, valid_during=(T0 + timedelta(days=i), T0 + timedelta(days=i + 90)))
        out.append([(h.atom.version_id, round(h.score, 5)) for h in hits])
    return out


def index_files(path: Path) -> list[Path]:
    return sorted(p for p in gen_dir(path, 0).iterdir() if p.suffix == ".faiss")


def test_recipe_files_load_and_validate() -> None:
    r = load_recipe("default")
    assert r.bucket == "month" and r.tiers[0].kind == "flat" and r.tiers[-1].kind == "hnsw"
    assert r.tier_for(10).name == "flat" and r.tier_for(10**7).name == r.tiers[-1].name
    assert recipe_from_dict(r.to_dict()) == r
    with pytest.raises(ConfigError):
        load_recipe("no-such-recipe")
    with pytest.raises(ConfigError):
        r.with_overrides(bucket="fortnight")
    with pytest.raises(ConfigError):
        recipe_from_dict({"name": "x"})


@pytest.mark.parametrize(
    ("period", "label"),
    [("day", "2024-05-17"), ("month", "2024-05"), ("quarter", "2024-Q2"), ("year", "2024")],
)
def test_bucket_keys_and_labels(period: str, label: str) -> None:
    us = int(datetime(2024, 5, 17, 13, tzinfo=UTC).timestamp() * 1_000_000)
    keys = bucket_keys(np.array([us, us + 1]), period)
    assert keys[0] == keys[1]
    assert bucket_label(int(keys[0]), period) == label
    later = bucket_keys(np.array([us + 400 * 86_400 * 1_000_000]), period)
    assert later[0] > keys[0]


def test_index_files_persist_and_reopen_without_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s"
    x = fill(path)
    files = index_files(path)
    assert files and (gen_dir(path, 0) / CATALOG).exists()
    mem, idx = open_store(path)
    first = answers(mem, x)
    n = mem._engine.snapshot.n
    mem.close()

    def no_build(*a: object, **k: object) -> None:
        raise AssertionError("index rebuilt instead of loaded")

    monkeypatch.setattr(partition_mod, "new_index", no_build)
    mem, idx = open_store(path)
    assert idx.notes == []
    assert idx.state.covered == n and len(idx.state.partitions) >= 2
    assert answers(mem, x) == first
    assert index_files(path) == files  # nothing rewritten
    mem.close()


def test_search_settings_change_without_rebuilding_but_layout_changes_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what the files depend on (buckets, partition sizes, tier factories and build settings)
    invalidates a persisted index; planner and efSearch settings are read at query time."""
    path = tmp_path / "s"
    fill(path)
    files = index_files(path)
    real_new_index = partition_mod.new_index

    def no_build(*a: object, **k: object) -> None:
        raise AssertionError("index rebuilt instead of loaded")

    monkeypatch.setattr(partition_mod, "new_index", no_build)
    searchy = recipe().with_overrides(planner={"exact_rows": 10, "prefix_max_rows": 5}, tail_rows=50)
    mem = aether.open(path, embedder=aether.PrecomputedEmbedder(DIM))
    idx = use_recipe(mem._engine, searchy)
    assert idx.notes == [] and idx.state.covered == mem._engine.snapshot.n
    mem.close()
    assert index_files(path) == files
    monkeypatch.setattr(partition_mod, "new_index", real_new_index)
    mem = aether.open(path, embedder=aether.PrecomputedEmbedder(DIM))
    idx = use_recipe(mem._engine, recipe().with_overrides(partition_rows=200))
    assert any("does not match" in note for note in idx.notes)
    mem.close()


def test_index_files_go_through_the_codec(tmp_path: Path) -> None:
    path = tmp_path / "s"
    fill(path)
    doc = json.loads((gen_dir(path, 0) / CATALOG).read_text())
    assert doc["store_id"] and doc["covered_rows"] == N
    for e in doc["partitions"]:
        assert e["file"].startswith("index/0/") and e["bytes"] == (path / e["file"]).stat().st_size
        assert isinstance(e["crc32c"], int)


def test_corrupt_index_file_is_detected_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "s"
    x = fill(path)
    mem, _ = open_store(path)
    first = answers(mem, x)
    mem.close()
    victim = index_files(path)[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    mem, idx = open_store(path)
    assert any("rebuilt index partition" in note for note in idx.notes)
    assert answers(mem, x) == first  # rebuilt from rows: same answers, never a silent wrong one
    mem.close()
    mem, idx = open_store(path)  # the rebuilt file was persisted again
    assert idx.notes == []
    mem.close()


def test_damaged_catalog_or_missing_file_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "s"
    x = fill(path)
    mem, _ = open_store(path)
    first = answers(mem, x)
    mem.close()
    index_files(path)[-1].unlink()
    mem, idx = open_store(path)
    assert any("rebuilt" in note for note in idx.notes)
    assert answers(mem, x) == first
    mem.close()
    (gen_dir(path, 0) / CATALOG).write_text("{not json")
    mem, idx = open_store(path)
    assert any("damaged" in note for note in idx.notes)
    idx.seal()
    assert answers(mem, x) == first
    mem.close()


def test_default_index_attached_and_survives_plain_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM)) as mem:
        mem.add_many([f"note number {i}" for i in range(50)])
        idx = find_index(mem._engine)
        assert idx is not None and idx.recipe.name == "default"
        idx.seal()
        assert idx.state.covered == 50
        top = mem.search("note number 7", k=1, valid_during=(None, None))[0].atom.content.inline
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM)) as mem:
        idx = find_index(mem._engine)
        assert idx is not None and idx.state.covered == 50 and idx.notes == []
        assert mem.search("note number 7", k=1, valid_during=(None, None))[0].atom.content.inline == top


def test_read_only_store_uses_persisted_index(tmp_path: Path) -> None:
    path = tmp_path / "s"
    x = fill(path)
    mem, _ = open_store(path)
    first = answers(mem, x)
    mem.close()
    ro = aether.open(path, embedder=aether.PrecomputedEmbedder(DIM), read_only=True)
    idx = use_recipe(ro._engine, recipe())
    assert idx.state.covered == N and idx.notes == []
    assert answers(ro, x) == first
    ro.close()


def test_pause_defers_sealing_until_resume(tmp_path: Path) -> None:
    mem, idx = open_store(tmp_path / "s")
    idx.pause()
    mem.add_many([{"content": f"m{i}", "valid_from": T0 + timedelta(days=i)} for i in range(250)], vectors=vectors(250))
    assert idx.state.covered == 0  # 250 rows > tail_rows, but sealing is paused
    assert len(mem.search(vectors(1, seed=3)[0], k=5, valid_during=(None, None))) == 5  # the tail is searched
    idx.resume()
    assert idx.state.covered == 250
    mem.close()


def test_offline_build_api_plans_like_sealing_and_installs_loadable_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    from aether.batch import build_indexes_in_process
    from aether.index import build_index_bytes, install_partitions, plan_partitions

    path = tmp_path / "s"
    x = vectors(N)
    mem, idx = open_store(path)
    idx.pause()  # one seal of every row at resume: what a fresh plan must reproduce
    mem.add_many([{"content": f"m{i}", "atom_id": f"a{i}", "valid_from": T0 + timedelta(days=i % 365),
                   "valid_to": T0 + timedelta(days=i % 365 + 20)} for i in range(N)], vectors=x)
    idx.resume()
    t = mem._engine.table
    specs = plan_partitions(t.valid_from[: t.n], recipe())
    live = idx.state.partitions
    assert [(s.klo, s.khi, s.label, s.tier, s.rows.tolist()) for s in specs] == [
        (p.klo, p.khi, p.label, p.tier, p.rows.tolist()) for p in live
    ]
    assert len(specs) >= 3 and all(s.tier.name == "hnsw" for s in specs)  # real graphs, not flat scans
    first = answers(mem, x)
    jobs = [(np.ascontiguousarray(t.vectors[s.rows]), s.tier) for s in specs]
    vids = t.version_id[: t.n].copy()
    mem.close()

    threads = faiss.omp_get_max_threads()
    serial = build_indexes_in_process(jobs)
    pooled = build_indexes_in_process(jobs, threads=2)
    assert [b.tobytes() for b in serial] == [b.tobytes() for b in pooled]  # single-threaded builds: deterministic
    assert serial[0].dtype == np.uint8 and faiss.omp_get_max_threads() == threads  # the caller's threads restored
    assert build_index_bytes(jobs[-1][0], jobs[-1][1]).tobytes() == serial[-1].tobytes()

    for f in gen_dir(path, 0).iterdir():
        f.unlink()
    with aether.open(path, embedder=aether.PrecomputedEmbedder(DIM)) as plain:  # default recipe: seals nothing
        body = install_partitions(plain._engine, 0, list(zip(specs, serial, strict=True)), recipe=recipe(),
                                  version_ids=vids, dim=DIM)
    assert body["covered_rows"] == N and len(body["partitions"]) == len(specs)
    assert len(index_files(path)) == len(specs)

    def no_build(*a: object, **k: object) -> None:
        raise AssertionError("index rebuilt instead of loaded")

    monkeypatch.setattr(partition_mod, "new_index", no_build)
    mem, idx = open_store(path)
    assert idx.notes == [] and idx.state.covered == N
    assert [faiss.serialize_index(p.index).tobytes() for p in idx.state.partitions] == [b.tobytes() for b in serial]
    assert answers(mem, x) == first
    mem.close()
