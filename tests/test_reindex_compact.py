"""Compaction policies: merging small segments, retention, purging erased rows; queries unchanged."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aether

ATOMS = [f"fact {i} about {['tea', 'rain', 'trains', 'maps'][i % 4]}" for i in range(10)]


def _store(path: Path) -> aether.Memory:
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=32))
    mem.add_many([{"content": f"big {i} about maps", "atom_id": f"b{i}"} for i in range(600)])
    mem.checkpoint()
    for s in range(4):  # four small segments
        mem.add_many([{"content": f"small {i} about tea", "atom_id": f"s{i}"} for i in range(s * 10, s * 10 + 10)])
        mem.checkpoint()
    mem.correct("b3", "big 3 about maps, corrected")  # closes a row of the big segment
    mem.delete("s12")
    mem.add("tail row about rain", atom_id="t0")  # left in the WAL
    return mem


def _view(mem: aether.Memory, as_of: object = None) -> tuple[object, ...]:
    hits = [(h.atom.atom_id, round(h.score, 5)) for h in mem.search("about tea maps", k=8, as_of=as_of, mode="dense")]
    return (
        hits,
        [(a.content.inline, a.tx_to) for a in mem.history("b3")],
        mem.get("s12") is None,
        mem.stats().versions,
    )


def test_merge_small_segments_keeps_big_ones_and_every_answer(tmp_path: Path) -> None:
    mem = _store(tmp_path / "s")
    before = _view(mem)
    as_of = mem.history("b3")[0].tx_from
    before_as_of = _view(mem, as_of)
    big = mem._engine.manifest["segments"][0]
    big_bytes = (tmp_path / "s" / big["file"]).read_bytes()
    res = mem.compact(merge_below=100)
    segs = mem._engine.manifest["segments"]
    assert res.purged == 0 and segs[0] == big and len(segs) == 2  # the big one kept, the rest merged
    assert (tmp_path / "s" / big["file"]).read_bytes() == big_bytes
    assert len(mem._engine.manifest["closings"]) == 1  # b3's closing, in a kept segment, carried over
    assert _view(mem) == before and _view(mem, as_of) == before_as_of
    mem.close()
    with aether.open(tmp_path / "s") as again:
        assert _view(again) == before and _view(again, as_of) == before_as_of
        files = {p.name for p in (tmp_path / "s" / "segments").iterdir()}
        assert files == {Path(e["file"]).name for e in again._engine.manifest["segments"]}
    # Nothing to merge: nothing rewritten.
    with aether.open(tmp_path / "s") as again:
        res = again.compact(merge_below=5)
        assert res.files_removed == 0 and res.rows_after == res.rows_before


def test_retention_drops_versions_closed_before_the_horizon(tmp_path: Path) -> None:
    mem = _store(tmp_path / "s")
    current = _view(mem)[0]
    closed = sum(1 for h in mem.history("b3") if h.tx_to is not None) + 1  # b3's old version, s12
    n = mem.stats().versions
    res = mem.compact(retain=timedelta(0), merge_below=100)
    assert res.purged == closed and mem.stats().versions == n - closed
    assert all(a.tx_to is None for a in mem.history("b3"))  # only versions still believed remain
    assert mem.history("s12") == [] and _view(mem)[0] == current
    mem.close()
    with aether.open(tmp_path / "s") as again:
        assert again.stats().versions == n - closed and _view(again)[0] == current


def test_merge_policy_purges_erased_rows(tmp_path: Path) -> None:
    mem = _store(tmp_path / "s")
    mem.erase(atom_id="s5")
    mem.checkpoint()
    n = mem.stats().versions
    res = mem.compact(merge_below=100)
    assert res.purged == 1 and mem.get("s5") is None and mem.stats().versions == n
    mem.close()
    for p in (tmp_path / "s").rglob("*.parquet"):
        assert b"small 5 about tea" not in p.read_bytes()


def test_in_memory_retention() -> None:
    mem = aether.open(embedder=aether.HashingEmbedder(dim=32))
    mem.add("first", atom_id="x")
    mem.add("second", atom_id="x")
    n = len(mem.history("x"))
    res = mem.compact(retain=timedelta(0))
    assert res.purged == 1 and len(mem.history("x")) == n - 1
    assert all(a.tx_to is None for a in mem.history("x")) and mem.get("x").content.inline == "second"  # type: ignore[union-attr]


def test_cli_compact_with_policy(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aether.cli import app

    mem = _store(tmp_path / "s")
    n = mem.stats().versions
    mem.close()
    res = CliRunner().invoke(app, ["compact", str(tmp_path / "s"), "--merge-below", "100", "--retain-days", "0"])
    assert res.exit_code == 0, res.output
    with aether.open(tmp_path / "s") as again:
        assert again.stats().versions == n - 2 and len(again._engine.manifest["segments"]) == 1
