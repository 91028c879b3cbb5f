"""The engine core runs without its plug-ins; aether.open wires them (issue 12: one-way layers)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.engine.hooks import NoHooks
from aether.engine.query import Filters
from aether.engine.search import plan_and_search
from aether.engine.store import Engine
from aether.engine.txplan import PutOp
from aether.errors import KeyRequiredError
from aether.index import BucketedIndex
from aether.security.engine_hooks import SecurityHooks

DIM = 32


def _put(atom_id: str, text: str, emb: aether.HashingEmbedder) -> PutOp:
    vec = emb.embed([text])[0]
    return PutOp(atom_id, text, None, None, None, None, None, None, None, 2**63 - 1, vec)


def test_engine_without_plug_ins_commits_and_searches_exactly(tmp_path: Path) -> None:
    emb = aether.HashingEmbedder(dim=DIM)
    eng = Engine(tmp_path / "s", embedder=emb)
    try:
        assert isinstance(eng.hooks, NoHooks) and len(eng.derived) == 0
        eng.commit([_put("a", "alice lives in paris", emb), _put("b", "bob lives in rome", emb)])
        assert eng.derived.dense_searcher() is None
        snap = eng.snapshot
        q = eng.query_vectors(["alice lives in paris"])
        f = Filters(as_of=snap.last_tx, valid_at=eng.clock(), valid_during=None, tags=None)
        results, plans, selected = plan_and_search(eng, snap, q, 1, f)
        assert selected == 2 and [p.strategy for p in plans] == ["exact"]
        assert eng.atom_at(results[0][0][0]).atom_id == "a"
    finally:
        eng.close()
    reopened = Engine(tmp_path / "s", embedder=emb)  # the rows came back from the WAL / segments
    try:
        assert reopened.snapshot.n == 2
    finally:
        reopened.close()


def test_engine_without_security_hooks_refuses_an_encrypted_store(tmp_path: Path) -> None:
    emb = aether.HashingEmbedder(dim=DIM)
    key = base64.b64encode(os.urandom(32)).decode()
    with aether.open(tmp_path / "s", embedder=emb, key=key) as mem:
        mem.add("secret")
    with pytest.raises(KeyRequiredError):
        Engine(tmp_path / "s", embedder=emb)


def test_open_wires_the_bucketed_index_and_the_security_hooks(tmp_path: Path) -> None:
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM)) as mem:
        eng = mem.engine
        assert isinstance(eng.hooks, SecurityHooks)
        idx = eng.derived.find(BucketedIndex)
        assert idx is not None and eng.derived.dense_searcher() is idx


def test_generation_swap_is_odd_inside_and_counts_nested_brackets_once() -> None:
    eng = Engine(None, embedder=aether.HashingEmbedder(dim=DIM))
    try:
        start = eng.gen_seq
        with eng.generation_swap():
            assert eng.gen_seq % 2 == 1
            with eng.generation_swap():
                assert eng.gen_seq == start + 1
        assert eng.gen_seq == start + 2
        with pytest.raises(RuntimeError), eng.generation_swap():
            raise RuntimeError("a failed swap still ends the bracket")
        assert eng.gen_seq == start + 4 and eng.gen_seq % 2 == 0
        assert np.array_equal(eng.table.rows_present(np.asarray([1, 2], np.int64)), np.zeros(0, np.int64))
    finally:
        eng.close()
