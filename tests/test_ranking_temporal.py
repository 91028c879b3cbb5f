"""The generated temporal agent-memory collection (benchmarks/_temporal_data.py): deterministic,
gold answers consistent with the bitemporal model, and no future fact leaks in any mode or ranking."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import aether

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _temporal_data import generate
from bench_temporal import RANKINGS, build, evaluate


def test_generation_is_deterministic_and_questions_have_gold() -> None:
    a, b = generate(5, people=6), generate(5, people=6)
    assert [u.text for u in a.utterances] == [u.text for u in b.utterances]
    assert [(q.text, q.valid_at, q.value) for q in a.questions] == [(q.text, q.valid_at, q.value) for q in b.questions]
    assert [u.text for u in generate(6, people=6).utterances] != [u.text for u in a.utterances]
    assert any(u.corrects_from is not None for u in a.utterances) and any(u.retracts for u in a.utterances)
    for q in a.questions:
        gold = a.utterances[q.facts_gold]
        assert gold.person == q.person and gold.states == (q.attribute, q.value)
        if q.log_gold >= 0:
            said = a.utterances[q.log_gold]
            assert said.at <= q.valid_at and said.states == (q.attribute, q.value)


@pytest.mark.parametrize("kind", ["facts", "log"])
def test_no_mode_or_ranking_leaks_a_future_fact(kind: str) -> None:
    col = generate(11, people=5, sessions=6, questions_per_person=6)
    mem, txs, atoms = build(col, aether.HashingEmbedder(dim=64), kind)
    try:
        modes: list[str | None] = ["dense", None]
        try:
            import tantivy  # noqa: F401

            modes += ["keyword", "hybrid"]
        except ImportError:
            pass
        for mode in modes:
            for ranking in RANKINGS.values():
                m = evaluate(col, mem, txs, atoms, kind, mode, ranking)
                assert m["leaks"] == 0 and m["hits_checked"] > 0
        # with the tags filter the gold fact is findable: dense over a person's few facts finds most
        assert evaluate(col, mem, txs, atoms, kind, "dense", {})["recall@5"] > 0.3
    finally:
        mem.close()
