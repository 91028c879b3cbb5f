"""Temporal agent memory: the generated collection of ``_temporal_data.py`` (fixed seed), scored
through the public API in every search mode, with and without the recency blend.

Two memories are built from the same dialogues (see ``_temporal_data``): ``facts`` (one atom per
person and attribute, kept with upserts, ``correct`` and ``retract``) and ``log`` (every
utterance an atom valid from when it was said). Each question is asked with its ``valid_at``,
the ``as_of`` of the agent's knowledge at that moment when the question has one, and the
person's tag. Reported per memory, mode and ranking: hit@1, recall@5 and MRR@10 of the gold
version, and the number of *leaks*: hits not valid at ``valid_at`` or not yet recorded at
``as_of`` (a future fact), which must be 0 in every configuration.

Run::

    .venv/bin/python benchmarks/bench_temporal.py                      # all-MiniLM-L6-v2 (~1-2 min)
    .venv/bin/python benchmarks/bench_temporal.py --embedder hashing   # no model, seconds

Writes ``benchmarks/results/bench_temporal.json`` and prints one table per memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _temporal_data import Collection, generate

import aether

RESULTS = Path(__file__).resolve().parent / "results"
RANKINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "recency": {"recency": 1.0, "half_life": timedelta(days=30)},
    "preset-recent": {"ranking": "recent"},
}


def _tx_after(mem: aether.Memory) -> datetime:
    assert mem.last_commit is not None
    return mem.last_commit


def build(col: Collection, embedder: Any, kind: str) -> tuple[aether.Memory, list[datetime], list[str | None]]:
    """The ``facts`` or ``log`` memory; per utterance, the store's commit time after writing it and
    the atom (log) holding it."""
    vecs = np.asarray(embedder.embed([u.text for u in col.utterances]), np.float32)
    mem = aether.open(None, embedder=embedder)
    txs: list[datetime] = []
    atoms: list[str | None] = []
    for u, v in zip(col.utterances, vecs, strict=True):
        tags = {"person": u.person}
        if kind == "log" or (u.states is None and u.retracts is None):
            atoms.append(mem.add(u.text, valid_from=u.at, tags=tags, vector=v).atom_id)
        elif u.retracts is not None:
            mem.retract(f"{u.person}:{u.retracts}", at=u.at)
            atoms.append(None)
        else:
            assert u.states is not None
            aid = f"{u.person}:{u.states[0]}"
            if u.corrects_from is not None:
                mem.correct(aid, u.text, valid_from=u.corrects_from, vector=v)
            else:
                mem.add(u.text, atom_id=aid, valid_from=u.at, tags=tags, vector=v)
            atoms.append(aid)
        txs.append(_tx_after(mem))
    return mem, txs, atoms


def evaluate(col: Collection, mem: aether.Memory, txs: list[datetime], atoms: list[str | None], kind: str,
             mode: str | None, ranking: dict[str, Any]) -> dict[str, float]:
    said = [u.at for u in col.utterances]
    h1 = r5 = rr = 0.0
    n = leaks = hits_seen = 0
    for q in col.questions:
        gold = q.facts_gold if kind == "facts" else q.log_gold
        if gold < 0:
            continue
        as_of = None
        if q.as_of_said is not None:
            last = max(i for i, t in enumerate(said) if t <= q.as_of_said)
            as_of = txs[last]
        hits = mem.search(q.text, k=10, valid_at=q.valid_at, as_of=as_of, tags={"person": q.person}, mode=mode,
                          **ranking)
        known = as_of or mem.last_commit
        assert known is not None
        for h in hits:  # the bitemporal contract, checked on every hit
            a = h.atom
            assert a.tx_from is not None
            hits_seen += 1
            if not (a.valid_from <= q.valid_at and (a.valid_to is None or q.valid_at < a.valid_to)
                    and a.tx_from <= known and (a.tx_to is None or known < a.tx_to)):
                leaks += 1
        want_text = col.utterances[gold].text
        if kind == "facts":
            want_atom = f"{q.person}:{q.attribute}"
            rank = next((i for i, h in enumerate(hits) if h.atom_id == want_atom and h.atom.text == want_text), None)
        else:
            rank = next((i for i, h in enumerate(hits) if h.atom_id == atoms[gold]), None)
        n += 1
        if rank is not None:
            h1 += rank == 0
            r5 += rank < 5
            rr += 1.0 / (rank + 1)
    return {"questions": n, "hit@1": h1 / n, "recall@5": r5 / n, "mrr@10": rr / n, "leaks": leaks,
            "hits_checked": hits_seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--embedder", choices=["model", "hashing"], default="model")
    args = ap.parse_args()
    embedder: Any = aether.SentenceTransformerEmbedder() if args.embedder == "model" else aether.HashingEmbedder(384)
    col = generate(args.seed)
    modes: list[str | None] = ["dense", "keyword", "hybrid", None]
    report: dict[str, Any] = {"seed": args.seed, "embedder": embedder.identity, "utterances": len(col.utterances),
                              "questions": len(col.questions), "memories": {}}
    for kind in ("facts", "log"):
        mem, txs, atoms = build(col, embedder, kind)
        try:
            rows = report["memories"][kind] = {}
            for mode in modes:
                for rname, ropts in RANKINGS.items():
                    label = f"{mode or 'default'}/{rname}"
                    rows[label] = evaluate(col, mem, txs, atoms, kind, mode, ropts)
        finally:
            mem.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_temporal.json").write_text(json.dumps(report, indent=1))
    print(f"seed {args.seed}, {report['utterances']} utterances, {report['questions']} questions, {embedder.identity}")
    for kind, rows in report["memories"].items():
        print(f"\n{kind}\n| mode / ranking | questions | hit@1 | recall@5 | MRR@10 | leaks (hits checked) |")
        print("|---|---|---|---|---|---|")
        for label, m in rows.items():
            print(f"| {label} | {m['questions']} | {m['hit@1']:.3f} | {m['recall@5']:.3f} | {m['mrr@10']:.3f} | "
                  f"{m['leaks']} ({m['hits_checked']}) |")


if __name__ == "__main__":
    main()
