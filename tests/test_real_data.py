"""End to end on real data: SciFact abstracts, the packaged all-MiniLM-L6-v2 model, time filters.

Runs where ``../shared/data/ir/scifact`` exists (CI has it beside the clone); slow-marked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import aether

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ir" / "scifact"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason="shared IR data not present"),
]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _load(n_docs: int) -> tuple[list[dict], list[tuple[str, str]]]:
    qrels: dict[str, set[str]] = {}
    for line in (DATA / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels.setdefault(did, set()).add(qid)
    queries = {q["_id"]: q["text"] for q in map(json.loads, (DATA / "queries.jsonl").read_text().splitlines())}
    docs, pairs = [], []
    with (DATA / "corpus.jsonl").open() as fh:
        for line in fh:
            d = json.loads(line)
            judged = d["_id"] in qrels
            if judged or len(docs) < n_docs // 2:
                docs.append(d)
                pairs += [(queries[q], d["_id"]) for q in qrels.get(d["_id"], ()) if q in queries]
            if len(docs) >= n_docs:
                break
    return docs, pairs


def test_scifact_search_matches_exact_search_with_the_real_model(tmp_path: Path) -> None:
    docs, pairs = _load(150)
    emb = aether.SentenceTransformerEmbedder()
    with aether.open(tmp_path / "s") as mem:  # the default model, offline
        assert mem.embedder.identity == emb.identity
        items = [
            {"content": (d["title"] + " " + d["text"])[:1000], "metadata": {"doc": d["_id"]},
             "valid_from": T0 + timedelta(days=i), "tags": {"half": i % 2}}
            for i, d in enumerate(docs)
        ]
        ids = mem.add_many(items)
        doc_of = {a: d["_id"] for a, d in zip(ids, docs, strict=True)}
        vecs = emb.embed([it["content"] for it in items])  # the reference: exact numpy search
        queries = [q for q, _ in pairs[:25]]
        qv = emb.embed(queries)
        found = 0
        for (q, want), v in zip(pairs[:25], qv, strict=True):
            hits = mem.search(q, k=10, mode="dense")  # compared with exact dense search
            exact = np.argsort(-(vecs @ v), kind="stable")[:10]
            assert [h.atom_id for h in hits][:5] == [ids[i] for i in exact][:5]
            found += want in {doc_of[h.atom_id] for h in hits}
            # a valid-time window: the same query sees only docs valid then, best first
            lo, hi = T0 + timedelta(days=40), T0 + timedelta(days=80)
            window = mem.search(q, k=5, valid_during=(lo, hi), tags={"half": 0}, mode="dense")
            # open-ended facts valid from before the window overlap it too
            sel = [i for i in range(len(docs)) if i < 80 and i % 2 == 0]
            ref = [ids[i] for i in sorted(sel, key=lambda i: -float(vecs[i] @ v))[:5]]
            assert [h.atom_id for h in window] == ref
        assert found >= 15, f"relevant abstract in the top 10 for only {found} of 25 queries"
        # the keyword half finds a rare term that appears in exactly one abstract
        hits = mem.search(docs[0]["title"], k=3, mode="keyword")
        assert hits and doc_of[hits[0].atom_id] == docs[0]["_id"]
