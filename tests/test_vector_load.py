"""Opening a plain store loads segment vectors in the background (newest rows first): readers that
need old rows wait for them, the tail and new writes do not, and a failed load is a typed error."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aether
from aether.engine import store as store_mod
from aether.errors import CorruptionError

DIM = 16


def _vecs(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _build(path: Path, batches: int = 4, per: int = 300) -> np.ndarray:
    """A plain store with ``batches`` segments (one checkpoint per batch) and a few WAL rows."""
    x = _vecs(batches * per + 20, 0)
    with aether.open(path, embedder=aether.PrecomputedEmbedder(DIM)) as mem:
        for b in range(batches):
            s = b * per
            mem.add_columns([f"row {i}" for i in range(s, s + per)], vectors=x[s : s + per],
                            atom_id=[f"a{i}" for i in range(s, s + per)])
            mem.checkpoint()
    return x


def _gated(monkeypatch: pytest.MonkeyPatch, path: Path, gate: threading.Event, *, fail: bool = False) -> list[str]:
    """Make the oldest segment's deferred vector fetch block on ``gate`` (then fail, if asked)."""
    real = store_mod.read_segment
    oldest = "segments/" + sorted(p.name for p in (path / "segments").iterdir())[0]
    gated: list[str] = []

    def read_segment(root: Path, entry: dict[str, Any], *a: Any, **kw: Any) -> Any:
        tbl, fetch = real(root, entry, *a, **kw)
        if fetch is None or entry["file"] != oldest:
            return tbl, fetch
        gated.append(entry["file"])

        def slow() -> Any:
            gate.wait(30)
            if fail:
                raise CorruptionError("injected: cannot decode vectors", path=entry["file"])
            return fetch()

        return tbl, slow

    monkeypatch.setattr(store_mod, "read_segment", read_segment)
    return gated


def test_vectors_after_open_equal_what_was_written(tmp_path: Path) -> None:
    x = _build(tmp_path / "s")
    with aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(DIM)) as mem:
        t = mem._engine.table
        n = t.n
        np.testing.assert_allclose(t.vectors[:n], x[:n], atol=1e-6)
        top = mem.search(x[5], k=1)
        assert top[0].atom.atom_id == "a5"


def test_new_writes_and_tail_searches_do_not_wait_for_old_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _build(tmp_path / "s")
    gate = threading.Event()
    gated = _gated(monkeypatch, tmp_path / "s", gate)
    from aether.engine.search import Filters, exact_search

    mem = aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(DIM))
    try:
        assert gated  # segments are read in parallel: the oldest one, whichever thread read it
        t = mem._engine.table
        n0 = t.n
        mem.add_columns(["fresh one", "fresh two"], vectors=_vecs(2, 9), atom_id=["f1", "f2"])  # no wait
        v = t.vectors_from(300)  # rows of the later segments are in place while the first is held back
        np.testing.assert_allclose(v[300:n0], x[300:n0], atol=1e-6)
        done = threading.Event()
        out: list[Any] = []

        def full() -> None:  # a reader that needs every row waits ...
            snap = mem._engine.snapshot
            out.append(exact_search(mem._engine, snap, x[3][None], 1, Filters(snap.last_tx, None, None, None)))
            done.set()

        th = threading.Thread(target=full)
        th.start()
        assert not done.wait(0.3)
        gate.set()  # ... until the first segment arrives
        assert done.wait(30)
        th.join()
        assert int(out[0][0][0][0][0]) == 3
        np.testing.assert_allclose(t.vectors[:n0], x[:n0], atol=1e-6)
    finally:
        gate.set()
        mem.close()
    with aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(DIM)) as mem:
        assert mem.get("f2") is not None and mem.search(_vecs(2, 9)[1], k=1)[0].atom.atom_id == "f2"


def test_a_failed_background_load_is_a_typed_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _build(tmp_path / "s")
    gate = threading.Event()
    gate.set()
    _gated(monkeypatch, tmp_path / "s", gate, fail=True)
    mem = aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(DIM))
    try:
        with pytest.raises(CorruptionError, match="injected"):
            mem._engine.table.vectors  # noqa: B018
        with pytest.raises(CorruptionError, match="injected"):
            mem.search(np.ones(DIM, np.float32), k=3)  # the rows are all in the (unsealed) tail
    finally:
        mem.close()  # nothing new to checkpoint: closing needs no vectors


def test_encrypted_stores_load_eagerly(tmp_path: Path) -> None:
    key = b"k" * 32
    x = _vecs(200, 1)
    with aether.open(tmp_path / "e", embedder=aether.PrecomputedEmbedder(DIM), key=key) as mem:
        mem.add_columns([f"s {i}" for i in range(200)], vectors=x)
        mem.checkpoint()
    with aether.open(tmp_path / "e", embedder=aether.PrecomputedEmbedder(DIM), key=key) as mem:
        assert mem._engine.table._loader is None
        np.testing.assert_allclose(mem._engine.table.vectors[:200], x, atol=1e-6)


def test_a_load_failure_fails_a_growing_commit_before_it_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Growing the table copies every vector; if they cannot be loaded the commit fails cleanly."""
    _build(tmp_path / "s")
    gate = threading.Event()
    gate.set()
    _gated(monkeypatch, tmp_path / "s", gate, fail=True)
    big = 8000  # beyond the open's headroom: the table must grow
    with aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(DIM)) as mem:
        before = mem._engine.snapshot
        with pytest.raises(CorruptionError, match="injected"):
            mem.add_columns([f"n {i}" for i in range(big)], vectors=_vecs(big, 5))
        assert mem._engine.snapshot == before  # nothing applied, nothing in the WAL
        mem.add_columns(["small"], vectors=_vecs(1, 6), atom_id=["small"])  # fits the headroom: no wait
    monkeypatch.undo()
    with aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(DIM)) as mem:
        assert mem.stats().versions == 1201
        mem.add_columns([f"n {i}" for i in range(big)], vectors=_vecs(big, 5))
        assert mem.stats().versions == 1201 + big
