"""Reliability where processes and background work meet (issue 19).

Each race is widened deterministically with a hook or a barrier at the point where the
interleaving used to go wrong, so these tests fail on the old code every time, not by luck.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import aether
from aether.engine import store as store_mod
from aether.errors import InvalidInputError

DIM = 16


def _emb() -> aether.HashingEmbedder:
    return aether.HashingEmbedder(dim=DIM)


@pytest.fixture
def hooks() -> Iterator[dict[str, object]]:
    yield store_mod.TEST_HOOKS  # type: ignore[misc]
    store_mod.TEST_HOOKS.clear()


# ------------------------------------------------------------------ 1. concurrent creation
def test_concurrent_creation_keeps_the_other_writers_store(tmp_path: Path, hooks: dict[str, object]) -> None:
    """A creator stalled just before taking the writer lock must not re-create a store another
    creator made (and committed 100 writes to) meanwhile: it opens that store instead."""
    path = tmp_path / "s"
    reached, go = threading.Event(), threading.Event()
    stalled: dict[str, object] = {}

    def stall() -> None:
        if threading.current_thread().name == "late-creator":
            reached.set()
            assert go.wait(30)

    store_mod.TEST_HOOKS["before_lock"] = stall

    def late() -> None:
        try:
            m = aether.open(path, embedder=_emb())
            stalled["count"] = m.stats().versions
            m.close()
        except BaseException as exc:  # reported below
            stalled["error"] = exc

    t = threading.Thread(target=late, name="late-creator")
    t.start()
    assert reached.wait(30)
    with aether.open(path, embedder=_emb()) as first:  # the other creator wins the race
        first.add_many([{"content": f"fact {i}"} for i in range(100)])
    go.set()
    t.join(60)
    assert "error" not in stalled, stalled.get("error")
    assert stalled["count"] == 100
    with aether.open(path, embedder=_emb()) as again:
        assert again.stats().versions == 100


# ------------------------------------------------------------------ 6. options that must be rejected
@pytest.mark.parametrize("bad", [-1, 0, 1.5, True, "10"])
def test_open_rejects_a_bad_content_limit(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidInputError, match="max_content_bytes"):
        aether.open(tmp_path / "s", embedder=_emb(), max_content_bytes=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "s" / "MANIFEST.json").exists()


@pytest.mark.parametrize("bad", [-5, -1, 1.5, True])
def test_compact_rejects_a_bad_merge_below(tmp_path: Path, bad: object) -> None:
    with aether.open(tmp_path / "s", embedder=_emb()) as mem:
        mem.add("x")
        with pytest.raises(InvalidInputError, match="merge_below"):
            mem.compact(merge_below=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("in_memory", [False, True])
def test_compact_rejects_retention_past_the_latest_commit(tmp_path: Path, in_memory: bool) -> None:
    mem = aether.open(None if in_memory else tmp_path / "s", embedder=_emb())
    a = mem.add("first belief")
    before = datetime.now(UTC)
    mem.correct(a.atom_id, "second belief")
    for future in (datetime.now(UTC) + timedelta(days=1), timedelta(days=-1)):
        with pytest.raises(InvalidInputError, match="retain"):
            mem.compact(retain=future)
    # Nothing was purged: the past belief is still visible as of before the correction.
    got = mem.get(a.atom_id, as_of=before)
    assert got is not None and got.content.inline == "first belief"
    mem.compact(retain=timedelta(0))  # up to now: allowed (drops the superseded version)
    assert mem.get(a.atom_id, as_of=before) is None
    mem.close()
