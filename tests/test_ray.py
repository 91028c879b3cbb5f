"""The Ray batch engine (``aether[ray]``) builds the same generation as the local engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.engine.reindex import reindex

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

pytestmark = pytest.mark.slow  # starting a local Ray takes ~10-20 s on 2 cores


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _store(path: Path) -> aether.Memory:
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=32))
    for s in range(3):
        mem.add_many([{"content": f"note {i} on topic {i % 11} shade {i % 4}", "atom_id": f"a{i}"}
                      for i in range(s * 400, (s + 1) * 400)])
        if s < 2:
            mem.checkpoint()
    mem.correct("a3", "note three, corrected")
    return mem


def _generation(mem: aether.Memory) -> tuple[np.ndarray, np.ndarray, list[str]]:
    t = mem._engine.table
    return t.version_id[: t.n].copy(), t.vectors[: t.n].copy(), [t.atom_ids[c] for c in t.atom_code[: t.n]]


@pytest.mark.usefixtures("local_ray")
def test_ray_and_local_engines_build_identical_generations(tmp_path: Path) -> None:
    new = aether.HashingEmbedder(dim=48)
    gens = {}
    for engine in ("local", "ray"):
        mem = _store(tmp_path / engine)
        res = reindex(mem._engine, new, batch_engine=engine, part_rows=300, workers=2)
        assert res.engine == engine and res.rows == mem._engine.table.n
        gens[engine] = _generation(mem)
        hits = mem.search("topic 3 shade 1", k=5, mode="dense")
        q = new.embed(["topic 3 shade 1"])[0]
        assert np.allclose([h.score for h in hits], sorted((gens[engine][1] @ q), reverse=True)[:5], atol=1e-5)
        mem.close()
    (lv, lx, la), (rv, rx, ra) = gens["local"], gens["ray"]
    assert np.array_equal(lv, rv) and la == ra and np.array_equal(lx, rx)
