"""Recovery after a kill amid maintenance (issue 19, the concurrency soak's findings).

Each test puts the store into a state that a SIGKILL leaves behind (an interrupted re-index's
staged parts, a compaction stopped between two of its durable steps) deterministically, by an
exception at the same point or by building the intermediate files, then checks that nothing
acknowledged is lost, nothing erased comes back and the store opens and verifies clean.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import aether
from aether.security.keys import generate_key

DIM = 16


def _emb() -> aether.HashingEmbedder:
    return aether.HashingEmbedder(dim=DIM)


class _Interrupt(Exception):
    """Stands in for a kill: raised from the re-index's progress callback after its first part."""


def _interrupted_reindex(mem: aether.Memory) -> None:
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 2:  # the first part is staged and recorded in reindex/<g>/state.json
            raise _Interrupt

    with pytest.raises(_Interrupt):
        mem.reindex(embedder=_emb(), progress=progress)
    assert list((mem._engine.path / "reindex").rglob("*.parquet"))  # type: ignore[operator]


@pytest.mark.parametrize("rewrite", ["compact", "merge", "erase_subject"])
def test_resumed_reindex_after_a_compaction_keeps_every_row(tmp_path: Path, rewrite: str) -> None:
    """A re-index killed after staging parts, then a compaction, then the re-index again.

    The compacted segment starts at the same version id as the old first segment; the staged
    part of that old segment was reused for it, so the swap installed old rows: later rows
    were lost, erased rows came back, and closings named versions no segment held
    (``CorruptionError: closing names an unknown version`` at the next open).
    """
    key = generate_key() if rewrite == "erase_subject" else None
    mem = aether.open(tmp_path / "s", embedder=_emb(), key=key)
    first = [mem.add(f"first {i}", subject="keep") for i in range(5)]
    mem.checkpoint()
    second = [mem.add(f"second {i}", subject="keep") for i in range(5)]
    gone = mem.add("erase me", subject="gone")
    mem.correct(first[1].atom_id, "first 1, corrected")  # a closing of a row of the first segment
    mem.checkpoint()
    versions = len(mem.history(first[1].atom_id))
    _interrupted_reindex(mem)
    if rewrite == "erase_subject":  # an encrypted subject erasure purges (rewrites) at once
        mem.erase(subject="gone")
    else:
        mem.erase(atom_id=gone.atom_id)
        mem.compact() if rewrite == "compact" else mem.compact(merge_below=1_000)
    mem.reindex(embedder=_emb())
    mem.close()
    with aether.open(tmp_path / "s", embedder=_emb(), key=key) as mem:
        for a in first + second:
            assert mem.get(a.atom_id) is not None, a.content.inline
        assert mem.get(first[1].atom_id).content.inline == "first 1, corrected"  # type: ignore[union-attr]
        assert mem.get(gone.atom_id) is None
        assert len(mem.history(first[1].atom_id)) == versions
    report = aether.verify(tmp_path / "s", key=key)
    assert report.ok, report.problems
