"""Search phase timings (aether.api.search_timings) and the vector index's seal counters in stats()."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import aether
from aether.api import search_timings


def test_search_timings_split_a_text_search_into_its_phases(tmp_path: Path) -> None:
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=64)) as mem:
        mem.add_many([f"memory number {i} about topic {i % 7}" for i in range(50)])
        plain = mem.search("topic 3", k=5)
        with search_timings() as t:
            timed = mem.search("topic 3 again", k=5)
        assert set(t) == {"embed", "index", "materialize"}
        assert t["embed"] > 0 and t["index"] >= 0 and t["materialize"] > 0
        assert [h.atom.atom_id for h in timed] == [h.atom.atom_id for h in mem.search("topic 3 again", k=5)]
        with search_timings() as v:
            mem.search(np.ones(64, np.float32), k=5, mode="dense")
        assert "embed" not in v and v["index"] > 0  # a vector query embeds nothing
        with search_timings() as cached:
            mem.search("topic 3 again", k=5)  # the query's vector is cached now
        assert "embed" not in cached
        assert plain  # untimed searches work as before


def test_stats_count_the_index_seals(tmp_path: Path) -> None:
    with aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(16, "t")) as mem:
        assert mem.stats().seals == 0 and mem.stats().seal_seconds == 0.0
        vecs = np.random.default_rng(0).normal(size=(6000, 16)).astype(np.float32)
        mem.add_columns([f"row {i}" for i in range(6000)], vectors=vecs)
        deadline = time.monotonic() + 60
        while mem.stats().seals == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        s = mem.stats()
        assert s.seals >= 1 and s.seal_seconds > 0
        assert s.tail_rows < 6000
