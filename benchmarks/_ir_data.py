"""Loading the IR collections in ../shared/data/ir (BEIR layout) and caching their embeddings."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("AETHER_IR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "ir"))
RESULTS = Path(__file__).resolve().parent / "results"
#: Where embeddings are cached (``.npy``, no pickle): outside the project, so repeated fusion
#: experiments never re-embed and nothing large lands in the checkout. ``$AETHER_EMB_CACHE`` overrides.
EMB_CACHE = Path(os.environ.get("AETHER_EMB_CACHE", "/tmp/aether-ir-embeddings"))
COLLECTIONS = ("scifact", "cranfield", "cisi")


@dataclass
class Collection:
    name: str
    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]
    #: Positions (in corpus.jsonl) of the documents kept; the embedding cache covers all of them.
    keep: list[int]
    raw_docs: list[str]


def doc_text(rec: dict[str, str]) -> str:
    """Title and body (Cranfield bodies already start with the title)."""
    title = (rec.get("title") or "").strip()
    text = (rec.get("text") or "").strip()
    if not title or text.startswith(title):
        return text
    return f"{title}. {text}"


def load(name: str) -> Collection:
    root = DATA / name
    doc_ids, docs, keep, raw = [], [], [], []
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for pos, line in enumerate(f):
            rec = json.loads(line)
            text = doc_text(rec)
            raw.append(text)
            if not text:  # a few Cranfield documents are empty: aether rejects empty content
                continue
            keep.append(pos)
            doc_ids.append(str(rec["_id"]))
            docs.append(text)
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / "test.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    qids, queries = [], []
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if str(rec["_id"]) in qrels:
                qids.append(str(rec["_id"]))
                queries.append(rec["text"])
    return Collection(name, doc_ids, docs, qids, queries, qrels, keep, raw)


def embeddings(col: Collection, embedder: object, kind: str) -> np.ndarray:
    """Document (``kind="docs"``) or query embeddings, cached as .npy under :data:`EMB_CACHE`."""
    EMB_CACHE.mkdir(parents=True, exist_ok=True)
    ident = getattr(embedder, "name", "model")
    path = EMB_CACHE / f"emb_{col.name}_{ident}_{kind}.npy"
    texts = col.raw_docs if kind == "docs" else col.queries
    arr = None
    if path.exists():
        arr = np.load(path, allow_pickle=False)
        if arr.shape[0] != len(texts):
            arr = None
    if arr is None:
        fn = embedder.embed if kind == "docs" else getattr(embedder, "embed_queries", embedder.embed)  # type: ignore[attr-defined]
        arr = np.asarray(fn(texts), dtype=np.float32)
        np.save(path, arr, allow_pickle=False)
    return arr[col.keep] if kind == "docs" else arr


if __name__ == "__main__":  # precompute all caches: python benchmarks/_ir_data.py
    import time

    import aether

    emb = aether.SentenceTransformerEmbedder()
    for name in sorted(COLLECTIONS, key=lambda n: n != "cranfield"):
        c = load(name)
        t0 = time.perf_counter()
        d = embeddings(c, emb, "docs")
        q = embeddings(c, emb, "queries")
        print(name, len(c.docs), d.shape, q.shape, f"{time.perf_counter() - t0:.1f}s", flush=True)
