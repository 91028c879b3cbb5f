"""The Ray batch engine (``aether[ray]``) builds the same generation as the local engine, index files included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faiss
import numpy as np
import pytest

import aether
from aether.index import Recipe, find_index, load_recipe, use_recipe
from aether.maintenance.reindex import reindex

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

pytestmark = pytest.mark.slow  # starting a local Ray takes ~10-20 s on 2 cores

T0 = datetime(2024, 1, 1, tzinfo=UTC)
N = 1200


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _recipe() -> Recipe:
    # Small thresholds, so that the re-index builds several partitions and most of them are HNSW graphs.
    return load_recipe().with_overrides(
        partition_rows=300,
        tail_rows=100,
        background=False,
        tiers=[
            {"name": "flat", "max_rows": 120, "factory": "Flat"},
            {"name": "hnsw", "max_rows": None, "factory": "HNSW16,Flat", "build": {"efConstruction": 40}},
        ],
        planner={"exact_rows": 30, "ann_cost_per_ef": 1},
    )


def _store(path: Path) -> aether.Memory:
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=32))
    use_recipe(mem._engine, _recipe())
    for s in range(3):
        mem.add_many([{"content": f"note {i} on topic {i % 11} shade {i % 4}", "atom_id": f"a{i}",
                       "valid_from": T0 + timedelta(days=(i * 7) % 250)}
                      for i in range(s * 400, (s + 1) * 400)])
        if s < 2:
            mem.checkpoint()
    mem.correct("a3", "note three, corrected")
    return mem


def _generation(mem: aether.Memory) -> tuple[np.ndarray, np.ndarray, list[str]]:
    t = mem._engine.table
    return t.version_id[: t.n].copy(), t.vectors[: t.n].copy(), [t.atom_ids[c] for c in t.atom_code[: t.n]]


def _index_files(path: Path) -> tuple[list[dict[str, object]], list[bytes]]:
    """The catalog's partition entries and the files' bytes (a plain store: FAISS's own serialisation)."""
    doc = json.loads((path / "index" / "1" / "CATALOG.json").read_text())
    return doc["partitions"], [(path / e["file"]).read_bytes() for e in doc["partitions"]]


QUERIES = [("topic 3 shade 1", 0, 60), ("note 17 on topic 6", 30, 150), ("shade 2", 100, 130), ("topic 9", 0, 400)]


def _answers(mem: aether.Memory) -> list[list[tuple[str, int | None, float]]]:
    out = []
    for q, a, b in QUERIES:
        hits = mem.search(q, k=5, mode="dense", valid_during=(T0 + timedelta(days=a), T0 + timedelta(days=b)))
        out.append([(h.atom.atom_id, h.atom.version_id, round(h.score, 5)) for h in hits])
    return out


@pytest.mark.usefixtures("local_ray")
def test_ray_and_local_engines_build_identical_generations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.batch.local import LocalEngine
    from aether.batch.ray_engine import RayEngine

    built: dict[str, int] = {}
    for cls in (LocalEngine, RayEngine):  # count the partitions each engine builds itself (Ray: as tasks)
        def spy(self: object, jobs: list[object], _orig: object = cls.build_indexes) -> object:
            built[self.name] = built.get(self.name, 0) + len(jobs)  # type: ignore[attr-defined]
            return _orig(self, jobs)  # type: ignore[operator]

        monkeypatch.setattr(cls, "build_indexes", spy)
    new = aether.HashingEmbedder(dim=48)
    gens, files, serialized, answers, strategies = {}, {}, {}, {}, {}
    for engine in ("local", "ray"):
        mem = _store(tmp_path / engine)
        res = reindex(mem._engine, new, batch_engine=engine, part_rows=300, workers=2)
        assert res.engine == engine and res.rows == mem._engine.table.n and res.notes == []
        gens[engine] = _generation(mem)
        hits = mem.search("topic 3 shade 1", k=5, mode="dense")
        q = new.embed(["topic 3 shade 1"])[0]
        assert np.allclose([h.score for h in hits], sorted((gens[engine][1] @ q), reverse=True)[:5], atol=1e-5)
        # The swapped-in index loaded the pre-built partitions: nothing was rebuilt, every row is covered.
        idx = find_index(mem._engine)
        assert idx is not None and idx.generation == 1 and idx.notes == []
        assert idx.state.covered == mem._engine.table.n
        files[engine] = _index_files(tmp_path / engine)
        serialized[engine] = [faiss.serialize_index(p.index).tobytes() for p in idx.state.partitions]
        answers[engine] = _answers(mem)
        strategies[engine] = {
            b.strategy for q, a, b_ in QUERIES
            for b in mem.explain(q, k=5, mode="dense",
                                 valid_during=(T0 + timedelta(days=a), T0 + timedelta(days=b_))).buckets
        }
        mem.close()
    (lv, lx, la), (rv, rx, ra) = gens["local"], gens["ray"]
    assert np.array_equal(lv, rv) and la == ra and np.array_equal(lx, rx)
    # Same partitions (bucket ranges, rows in the same order, tiers) and byte-identical FAISS files.
    (lcat, lbytes), (rcat, rbytes) = files["local"], files["ray"]
    keys = ("klo", "khi", "label", "rows", "vids_crc", "tier", "bytes", "crc32c")
    assert [{k: e[k] for k in keys} for e in lcat] == [{k: e[k] for k in keys} for e in rcat]
    assert len(lcat) >= 3 and sum(e["tier"] == "hnsw" for e in lcat) >= 2
    assert built == {"local": len(lcat), "ray": len(rcat)}
    assert lbytes == rbytes and serialized["local"] == serialized["ray"]
    assert answers["local"] == answers["ray"] and all(answers["local"])
    assert "hnsw" in strategies["local"]  # the queries went through the HNSW graphs, not only exact scans
