"""Agent-memory ranking: relevance / recency / importance blend and MMR, after the bitemporal filters."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.retrieval import ranking as rk

from .conftest import FakeClock
from .test_keyword import VOCAB, build_history, random_filter, visible_versions

T0 = datetime(2024, 1, 1, tzinfo=UTC)
MODES = ["dense", "keyword", "hybrid", None]


def _modes() -> list[str | None]:
    try:
        import tantivy  # noqa: F401
    except ImportError:
        return ["dense"]
    return MODES


def test_options_are_validated(memory_mem: aether.Memory) -> None:
    memory_mem.add("note")
    for bad in ({"ranking": "nope"}, {"recency": -1}, {"importance": float("nan")}, {"diversity": 1.5},
                {"half_life": 0}, {"half_life": "1d"}, {"recency_axis": "world"},
                {"relevance": 0, "recency": 0, "importance": 0}, {"recency": True}):
        with pytest.raises(aether.InvalidInputError):
            memory_mem.search("note", mode="dense", **bad)
    r = rk.resolve(ranking="generative_agents", recency=0.25, half_life=3600)
    assert (r.relevance, r.recency, r.importance, r.half_life) == (1.0, 0.25, 1.0, timedelta(hours=1))


def test_recency_decay_is_relative_to_valid_at() -> None:
    ref = 1_000_000_000
    hl = timedelta(seconds=10)
    times = np.array([ref, ref - 10_000_000, ref - 20_000_000, ref + 5_000_000])
    assert rk.recency(times, ref, hl) == pytest.approx([1.0, 0.5, 0.25, 1.0])  # the future clips to age 0


def test_recency_puts_the_newest_of_equal_memories_first(memory_mem: aether.Memory) -> None:
    ids = [memory_mem.add("alice lives in paris", valid_from=T0 + timedelta(days=d)).atom_id for d in (0, 30, 10)]
    at = T0 + timedelta(days=40)
    plain = memory_mem.search("alice lives in paris", k=3, valid_at=at, mode="dense")
    assert [h.atom_id for h in plain] == ids  # equal cosines: row order
    recent = memory_mem.search("alice lives in paris", k=3, valid_at=at, mode="dense", recency=1.0,
                               half_life=timedelta(days=10))
    assert [h.atom_id for h in recent] == [ids[1], ids[2], ids[0]]
    # score = (1 * relevance + 1 * recency) / 2, relevance all 1 (equal), recency 0.5 ** (age / 10 days)
    assert [h.score for h in recent] == pytest.approx([(1 + 0.5) / 2, (1 + 0.125) / 2, (1 + 0.0625) / 2])
    # As of valid time day 20 the day-30 memory is not valid yet: it never surfaces, however recent.
    past = memory_mem.search("alice lives in paris", k=3, valid_at=T0 + timedelta(days=20), mode="dense",
                             recency=5.0)
    assert [h.atom_id for h in past] == [ids[2], ids[0]]


def test_tx_axis_and_importance(memory_mem: aether.Memory) -> None:
    a = memory_mem.add("bob works at acme", valid_from=T0 + timedelta(days=5), quality_score=0.2).atom_id
    b = memory_mem.add("bob works at acme", valid_from=T0, quality_score=0.9).atom_id
    at = T0 + timedelta(days=10)
    by_valid = memory_mem.search("bob works at acme", k=2, valid_at=at, mode="dense", recency=1.0)
    assert [h.atom_id for h in by_valid] == [a, b]
    by_tx = memory_mem.search("bob works at acme", k=2, valid_at=at, mode="dense", recency=1.0, recency_axis="tx",
                              half_life=1e-3)
    # b was recorded later (tx), so in transaction time it is the recent one
    assert [h.atom_id for h in by_tx] == [b, a]
    by_imp = memory_mem.search("bob works at acme", k=2, valid_at=at, mode="dense", importance=1.0)
    assert [h.atom_id for h in by_imp] == [b, a]
    ga = memory_mem.search("bob works at acme", k=2, valid_at=at, mode="dense", ranking="generative_agents",
                           recency=0.0)
    assert [h.atom_id for h in ga] == [b, a]


def test_mmr_trades_duplicates_for_coverage(memory_mem: aether.Memory) -> None:
    dim = memory_mem.embedder.dim
    eye = np.eye(dim, dtype=np.float32)
    dup1 = memory_mem.add("dup one", vector=eye[0] + 0.3 * eye[1]).atom_id
    dup2 = memory_mem.add("dup two", vector=eye[0] + 0.31 * eye[1] + 0.01 * eye[3]).atom_id
    diff = memory_mem.add("different angle", vector=eye[0] - 0.35 * eye[1]).atom_id
    memory_mem.add_many([f"filler {i}" for i in range(5)], vectors=eye[4:9])  # unrelated: cosine 0
    q = eye[0]
    plain = memory_mem.search(q, k=2, mode="dense")
    assert [h.atom_id for h in plain] == [dup1, dup2]
    assert [h.atom_id for h in memory_mem.search(q, k=2, mode="dense", diversity=1.0)] == [dup1, dup2]
    diverse = memory_mem.search(q, k=2, mode="dense", diversity=0.5)
    assert [h.atom_id for h in diverse] == [dup1, diff]
    assert diverse[0].score == pytest.approx(plain[0].score)  # MMR reorders; a hit keeps its score


def test_mmr_picks_by_the_formula() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(12, 6))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    s = rng.random(12)
    lam = 0.6
    got = rk.mmr(v, s, 5, lam)
    rel = (s - s.min()) / (s.max() - s.min())
    picked: list[int] = []
    for _ in range(5):
        best = max((i for i in range(12) if i not in picked),
                   key=lambda i: lam * rel[i] - (1 - lam) * max((float(v[i] @ v[j]) for j in picked), default=0.0))
        picked.append(best)
    assert got == picked


@pytest.mark.parametrize("seed", range(3))
def test_no_reranking_surfaces_a_row_the_filters_exclude(tmp_path: Path, embedder: aether.HashingEmbedder,
                                                         seed: int) -> None:
    rng = random.Random(500 + seed)
    configs = [{"recency": 3.0}, {"ranking": "generative_agents"}, {"diversity": 0.3},
               {"recency": 1.0, "recency_axis": "tx", "diversity": 0.7, "half_life": 86400}]
    with aether.open(tmp_path / "s", embedder=embedder, clock=FakeClock()) as mem:
        txs = build_history(mem, rng, 40)
        for _ in range(10):
            f = random_filter(rng, txs)
            allowed = {v.version_id for v in visible_versions(mem, f)}
            q = " ".join(rng.sample(VOCAB, rng.randint(1, 3)))
            for mode in _modes():
                for cfg in configs:
                    hits = mem.search(q, k=rng.randint(1, 8), mode=mode, **f, **cfg)  # type: ignore[arg-type]
                    assert {h.atom.version_id for h in hits} <= allowed, (mode, cfg, f)
                    assert len({h.atom_id for h in hits}) == len(hits) or "valid_during" in f
