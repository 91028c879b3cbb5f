"""Re-indexing: a new generation equals exact search with the new model, swaps atomically, resumes after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.errors import ConfigError, ModelMismatchError
from aether.maintenance.reindex import reindex

OLD, NEW = 32, 48
WORDS = [
    "apple", "banana", "cherry", "delta", "echo", "falcon", "garden", "harbor", "island", "jungle", "kettle", "lemon",
]
QUERIES = ["apple garden", "harbor lemon island", "kettle", "falcon delta echo"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _text(i: int) -> str:
    return f"{WORDS[i % 12]} {WORDS[(i * 7) % 12]} {WORDS[(i * 5 + 3) % 12]} note {i}"


def _fill(mem: aether.Memory, n: int, *, segments: int = 2) -> None:
    """``n`` atoms over several segments plus a WAL tail, with corrections and deletes."""
    per = n // (segments + 1)
    for s in range(segments + 1):
        items = [
            {"content": _text(i), "atom_id": f"a{i}", "valid_from": T0 + timedelta(days=i % 90), "tags": {"g": i % 3}}
            for i in range(s * per, n if s == segments else (s + 1) * per)
        ]
        mem.add_many(items)
        if s < segments:
            mem.checkpoint()
    mem.correct("a1", "apple apple apple corrected", valid_from=T0)
    mem.delete("a2")


def _exact(mem: aether.Memory, emb: aether.HashingEmbedder, query: str, k: int) -> list[tuple[str, float]]:
    """Reference: exact cosine search with ``emb`` over the currently visible versions."""
    eng = mem._engine
    snap = eng.snapshot
    mask = eng.mask(snap, as_of=snap.last_tx, valid_at=eng.clock(), valid_during=None, tags=None)
    rows = np.flatnonzero(mask)
    vecs = emb.embed([eng.table.text(int(r))["content"] for r in rows])
    scores = vecs @ emb.embed([query])[0]
    order = np.lexsort((rows, -scores))[: k + 1]  # one more: a tie at the cut may be ordered either way
    return [(eng.table.text(int(rows[i]))["atom_id"], float(scores[i])) for i in order]


def _hits(mem: aether.Memory, query: str, k: int) -> list[tuple[str, float]]:
    return [(h.atom.atom_id, h.score) for h in mem.search(query, k=k, mode="dense")]


def _same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """Same scores in the same order, and the same ids except where scores tie (float rounding orders ties)."""
    k = len(a)
    sa, sb = np.array([s for _, s in a]), np.array([s for _, s in b])  # b: the reference, k + 1 long
    if len(b) < k or not np.allclose(sa, sb[:k], atol=1e-5):
        return False
    near = np.abs(np.diff(sb)) < 1e-5
    tied = np.zeros(len(b), bool)
    tied[1:] |= near
    tied[:-1] |= near
    return all(x == y for (x, _), (y, _), t in zip(a, b[:k], tied[:k], strict=True) if not t)


def test_reindex_to_new_embedder_equals_exact_search(tmp_path: Path) -> None:
    path = tmp_path / "s"
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=OLD))
    _fill(mem, 900)
    history = [a.content.inline for a in mem.history("a1")]
    seen: list[tuple[int, int]] = []
    new = aether.HashingEmbedder(dim=NEW)
    res = mem.reindex(embedder=new, progress=lambda d, t: seen.append((d, t)))
    assert res.generation == 1 and res.model == new.identity and res.rows == 901 and res.resumed_parts == 0
    assert seen[-1] == (901, 901) and all(d <= t for d, t in seen)
    assert mem.embedder.identity == new.identity and mem._engine.table.dim == NEW
    for q in QUERIES:
        assert _same(_hits(mem, q, 7), _exact(mem, new, q, 7))
    # History and time travel survive: same versions, same transaction times.
    assert [a.content.inline for a in mem.history("a1")] == history
    assert mem.get("a2") is None and mem.get("a2", as_of=mem.history("a2")[0].tx_from) is not None
    assert not (path / "reindex").exists()
    mem.close()
    body = json.loads((path / "MANIFEST.json").read_text())
    assert body["model"] == {"identity": new.identity, "dim": NEW} and body["index"]["generation"] == 1
    assert all(Path(e["file"]).name.startswith("g0001-") for e in body["segments"])
    live = sorted(Path(e["file"]).name for e in body["segments"])
    assert sorted(p.name for p in (path / "segments").iterdir()) == live
    with pytest.raises(ModelMismatchError):
        aether.open(path, embedder=aether.HashingEmbedder(dim=OLD))
    with aether.open(path) as again:  # the embedder is rebuilt from the recorded identity
        assert again.embedder.identity == new.identity
        for q in QUERIES:
            assert _same(_hits(again, q, 7), _exact(again, new, q, 7))


def test_process_pool_gives_the_same_generation(tmp_path: Path) -> None:
    vecs = []
    for workers in (None, 2):
        mem = aether.open(tmp_path / f"s{workers}", embedder=aether.HashingEmbedder(dim=OLD))
        _fill(mem, 300)
        reindex(mem._engine, aether.HashingEmbedder(dim=NEW), workers=workers, part_rows=64)
        t = mem._engine.table
        vecs.append((t.version_id[: t.n].copy(), t.vectors[: t.n].copy()))
        mem.close()
    assert np.array_equal(vecs[0][0], vecs[1][0]) and np.array_equal(vecs[0][1], vecs[1][1])


class _SlowHashing(aether.HashingEmbedder):
    """Same vectors and identity as ``HashingEmbedder``, slow enough to overlap other threads."""

    def embed(self, texts):  # type: ignore[no-untyped-def]
        time.sleep(0.02)
        return super().embed(texts)


def test_queries_and_writes_during_reindex(tmp_path: Path) -> None:
    mem = aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=OLD))
    _fill(mem, 600)
    old, new = aether.HashingEmbedder(dim=OLD), aether.HashingEmbedder(dim=NEW)
    stop = threading.Event()
    errors: list[BaseException] = []
    results: list[tuple[str, list[tuple[str, float]]]] = []
    written: list[str] = []

    def reader() -> None:
        i = 0
        while not stop.is_set():
            q = QUERIES[i % len(QUERIES)]
            i += 1
            try:
                results.append((q, [(h.atom.atom_id, h.score) for h in mem.search(q, k=5, mode="dense")]))
            except BaseException as exc:
                errors.append(exc)
                return

    def writer() -> None:
        i = 0
        while not stop.is_set():
            try:
                mem.add(f"kettle lemon written during reindex {i}", atom_id=f"w{i}")
                written.append(f"w{i}")
                if i % 7 == 0:
                    mem.checkpoint()  # new segments appear while the re-index runs: caught up
            except BaseException as exc:
                errors.append(exc)
                return
            i += 1
            time.sleep(0.005)

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    try:
        reindex(mem._engine, _SlowHashing(dim=NEW), part_rows=50, batch_size=25)
        time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert written and results
    # Every row, including those written during the re-index, carries a new-generation vector.
    t = mem._engine.table
    contents = [t.text(r)["content"] for r in range(t.n)]
    assert np.allclose(t.vectors[: t.n], new.embed(contents), atol=1e-6)
    assert all(mem.get(a) is not None for a in written)
    # A query's hits and scores come wholly from one generation: each score is the cosine of the
    # query and the hit under the old model, or all under the new one, never a mix.
    for q, hits in results:
        texts = [mem.get(a).content.inline for a, _ in hits]  # type: ignore[union-attr]
        scores = np.array([s for _, s in hits])
        as_old = old.embed(texts) @ old.embed([q])[0]
        as_new = new.embed(texts) @ new.embed([q])[0]
        assert np.allclose(scores, as_old, atol=1e-5) or np.allclose(scores, as_new, atol=1e-5), (q, hits)
    mem.close()


_CHILD = r"""
import sys, time
import aether
from aether.maintenance.reindex import reindex

class Slow(aether.HashingEmbedder):
    def embed(self, texts):
        time.sleep(0.15)
        return super().embed(texts)

mem = aether.open(sys.argv[1], embedder=aether.HashingEmbedder(dim=32))
reindex(mem._engine, Slow(dim=48), part_rows=60, batch_size=60)
print("finished")
"""


def test_killed_reindex_resumes(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with aether.open(path, embedder=aether.HashingEmbedder(dim=OLD)) as mem:
        _fill(mem, 600)
    state = path / "reindex" / "1" / "state.json"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and child.poll() is None:
            try:
                done = len(json.loads(state.read_text())["done"])
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 3:
                break
            time.sleep(0.02)
        assert child.poll() is None, child.communicate()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert done >= 3
    # The live store is untouched: still the old model, fully searchable.
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=OLD))
    assert _same(_hits(mem, "apple garden", 5), _exact(mem, aether.HashingEmbedder(dim=OLD), "apple garden", 5))
    new = aether.HashingEmbedder(dim=NEW)
    res = mem.reindex(embedder=new)  # part size comes from the saved state
    assert res.resumed_parts >= 3 and res.parts > res.resumed_parts
    for q in QUERIES:
        assert _same(_hits(mem, q, 6), _exact(mem, new, q, 6))
    mem.close()
    assert not (path / "reindex").exists()


def test_reindex_in_memory_store() -> None:
    mem = aether.open(embedder=aether.HashingEmbedder(dim=OLD))
    _fill(mem, 200)
    new = aether.HashingEmbedder(dim=NEW)
    mem.reindex(embedder=new)
    for q in QUERIES:
        assert _same(_hits(mem, q, 5), _exact(mem, new, q, 5))
    mem.close()


def test_reindex_encrypted_store(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "s"
    with aether.open(path, embedder=aether.HashingEmbedder(dim=OLD), key=key) as mem:
        _fill(mem, 300)
        new = aether.HashingEmbedder(dim=NEW)
        mem.reindex(embedder=new)
        for q in QUERIES:
            assert _same(_hits(mem, q, 5), _exact(mem, new, q, 5))
    with aether.open(path, key=key) as mem:
        assert mem.embedder.identity == new.identity
        for q in QUERIES:
            assert _same(_hits(mem, q, 5), _exact(mem, new, q, 5))


def test_reindex_bad_arguments(mem: aether.Memory) -> None:
    mem.add("x")
    with pytest.raises(ConfigError):
        mem.reindex(recipe="no-such-recipe")
    with pytest.raises(ConfigError):
        mem.reindex(engine="spark")
    with pytest.raises(ConfigError):
        mem.reindex(model="no-such-model")
    with aether.open(mem.path, read_only=True) as ro, pytest.raises(aether.errors.ReadOnlyError):
        ro.reindex(embedder=aether.HashingEmbedder(dim=NEW))


def test_new_generation_bucket_indexes_are_built_before_the_swap(tmp_path: Path) -> None:
    from aether.index import find_index, load_recipe, use_recipe

    path = tmp_path / "s"
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=OLD))
    use_recipe(mem._engine, load_recipe("default").with_overrides(tail_rows=100, background=False))
    _fill(mem, 600)
    new = aether.HashingEmbedder(dim=NEW)
    res = mem.reindex(embedder=new)
    assert res.notes == []
    catalog = json.loads((path / "index" / "1" / "CATALOG.json").read_text())
    assert catalog["generation"] == 1 and catalog["dim"] == NEW and catalog["covered_rows"] >= 600
    idx = find_index(mem._engine)
    assert idx is not None and idx.generation == 1 and idx.state.covered >= 600
    assert not any("rebuil" in n for n in idx.notes)  # loaded the pre-built files, rebuilt nothing
    assert not (path / "index" / "0").exists()
    for q in QUERIES:
        assert _same(_hits(mem, q, 7), _exact(mem, new, q, 7))
    mem.close()
