"""Bulk import: JSONL and Parquet, bad lines reported by number, nothing lost, resumable, all-or-nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import aether
from aether import ingest
from aether.errors import ImportFailedError

DIM = 32


def _good(i: int) -> dict[str, Any]:
    return {"content": f"memory {i} about topic {i % 7}", "atom_id": f"a{i}", "tags": {"t": i % 7},
            "valid_from": "2024-01-01", "metadata": {"i": i}}


def _write_jsonl(path: Path, n: int, bad: dict[int, str]) -> set[str]:
    """``n`` good rows with bad lines spliced in at the given (1-based) line numbers; returns the good ids."""
    lines: list[str] = []
    ids = set()
    i = 0
    while len(lines) < n + len(bad):
        ln = len(lines) + 1
        if ln in bad:
            lines.append(bad[ln])
        else:
            lines.append(json.dumps(_good(i)))
            ids.add(f"a{i}")
            i += 1
    path.write_text("\n".join(lines) + "\n")
    return ids


BAD = {
    3: '{"content": oops}',
    10: "[1, 2]",
    11: json.dumps({"content": "x", "colour": "red"}),
    250: json.dumps({"tags": {}}),
    251: json.dumps({"content": "x", "valid_from": "2024-01-01T10:00"}),
    400: json.dumps({"content": "x", "valid_from": "2024-02-01", "valid_to": "2024-01-01"}),
    401: json.dumps({"content": "x", "vector": [0.0] * DIM}),
    777: json.dumps({"content": "too late", "valid_to": "2001-01-01"}),  # rejected by the engine at commit
}


def _ids(mem: aether.Memory) -> set[str]:
    t = mem._engine.table
    return {t.atom_ids[c] for c in t.atom_code[: t.n]}


def test_jsonl_reports_bad_lines_and_loses_nothing(mem: aether.Memory, tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    good = _write_jsonl(f, 900, BAD)
    seen: list[tuple[int, int]] = []
    rep = ingest.import_file(mem, f, batch_rows=100, progress=lambda d, t: seen.append((d, t)))
    assert rep.imported == 900 and sorted(b.line for b in rep.bad) == sorted(BAD)
    reasons = {b.line: b.error for b in rep.bad}
    assert "malformed JSON" in reasons[3] and "JSON object" in reasons[10] and "unknown keys" in reasons[11]
    assert "content" in reasons[250] and "no timezone" in reasons[251] and "valid_to" in reasons[400]
    assert "zero vector" in reasons[401] and "valid_to" in reasons[777]
    assert _ids(mem) == good
    a5 = mem.get("a5", valid_at="2024-06-01T00:00:00Z")
    assert a5 is not None and a5.content.inline == _good(5)["content"] and a5.metadata == {"i": 5}
    assert a5.tags == {"t": 5} and seen[-1] == (f.stat().st_size, f.stat().st_size)
    assert rep.atom_ids is not None and len(rep.atom_ids) == 900
    assert not (Path(mem.path or "") / "import").exists() or not any((Path(mem.path or "") / "import").iterdir())


def test_atomic_import_writes_nothing_on_a_bad_line(mem: aether.Memory, tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    _write_jsonl(f, 300, {3: BAD[3], 200: BAD[251]})
    before = mem.stats().versions
    with pytest.raises(ImportFailedError) as info:
        ingest.import_file(mem, f, atomic=True)
    assert [b.line for b in info.value.bad] == [3, 200] and "line 3" in str(info.value)
    assert mem.stats().versions == before
    ok = tmp_path / "ok.jsonl"
    _write_jsonl(ok, 300, {})
    tx = mem.stats().transactions
    rep = ingest.import_file(mem, ok, atomic=True, batch_rows=64)
    assert rep.imported == 300 and mem.stats().transactions == tx + 1  # one transaction


class _Boom(Exception):
    pass


def test_interrupted_import_resumes_without_duplicates(mem: aether.Memory, tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    good = _write_jsonl(f, 1000, {3: BAD[3], 620: BAD[10]})
    calls = 0

    def die(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:  # after three committed batches
            raise _Boom

    with pytest.raises(_Boom):
        ingest.import_file(mem, f, batch_rows=128, progress=die)
    partial = mem.stats().versions
    assert 0 < partial < 1000
    rep = ingest.import_file(mem, f, batch_rows=128)
    assert rep.resumed_rows > 0 and rep.imported == 1000 - partial
    assert [b.line for b in rep.bad] == [3, 620]  # the first run's bad lines are still reported
    assert _ids(mem) == good and mem.stats().versions == 1000


def test_crash_between_commit_and_checkpoint_is_not_imported_twice(
    mem: aether.Memory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "in.jsonl"
    good = _write_jsonl(f, 500, {})
    real = ingest._commit
    n = 0

    def commit_then_die(*args: Any) -> Any:
        nonlocal n
        n += 1
        out = real(*args)
        if n == 2:  # the batch is durable, the checkpoint still says "pending"
            raise _Boom
        return out

    monkeypatch.setattr(ingest, "_commit", commit_then_die)
    with pytest.raises(_Boom):
        ingest.import_file(mem, f, batch_rows=100)
    monkeypatch.setattr(ingest, "_commit", real)
    assert mem.stats().versions == 200
    rep = ingest.import_file(mem, f, batch_rows=100)
    assert rep.imported == 300 and mem.stats().versions == 500 and _ids(mem) == good


def test_parquet_pre_embedded_import(mem: aether.Memory, tmp_path: Path) -> None:
    n = 3000
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    vecs[17] = 0.0  # a zero vector: a bad row
    table = pa.table({
        "content": [f"pre-embedded {i}" for i in range(n)],
        "atom_id": [f"p{i}" for i in range(n)],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), DIM),
        "valid_from": pa.array(np.full(n, 1_704_067_200_000_000), pa.timestamp("us", tz="UTC")),
        "tags": pa.array([[("k", str(i % 4))] for i in range(n)], pa.map_(pa.string(), pa.string())),
        "metadata": [json.dumps({"i": i}) for i in range(n)],
    })
    f = tmp_path / "in.parquet"
    pq.write_table(table, f, row_group_size=700)
    rep = ingest.import_file(mem, f, batch_rows=500)
    assert rep.format == "parquet" and rep.imported == n - 1 and [b.line for b in rep.bad] == [18]
    t = mem._engine.table
    rows = np.asarray([t.atom_index[f"p{i}"] for i in (0, 5, 2999)])
    got = t.vectors[[t.atom_rows[c][0] for c in rows]]
    want = vecs[[0, 5, 2999]] / np.linalg.norm(vecs[[0, 5, 2999]], axis=1, keepdims=True)
    assert np.allclose(got, want, atol=1e-6)  # the given vectors, not re-embedded
    hit = mem.search(vecs[5], k=1, valid_at="2024-06-01T00:00:00Z", mode="dense")[0]
    assert hit.atom.atom_id == "p5" and hit.atom.tags == {"k": 1} and hit.atom.metadata == {"i": 5}


def test_cli_import_and_reindex(tmp_path: Path) -> None:
    from aether.cli import app

    store = tmp_path / "s"
    aether.open(store, embedder=aether.HashingEmbedder(dim=DIM)).close()
    f = tmp_path / "in.jsonl"
    _write_jsonl(f, 200, {5: BAD[3]})
    runner = CliRunner()
    res = runner.invoke(app, ["import", str(store), str(f), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["imported"] == 200 and doc["bad"][0]["line"] == 5 and len(doc["atom_ids"]) == 200
    res = runner.invoke(app, ["import", str(store), str(f), "--atomic"])
    assert res.exit_code != 0 and "line 5" in str(res.exception)
    res = runner.invoke(app, ["reindex", str(store), "--model", "hashing:48", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["model"] == "hashing:v1:dim=48" and doc["rows"] == 200 and doc["generation"] == 1
    with aether.open(store) as mem:
        assert mem.embedder.dim == 48 and mem.stats().versions == 200


def _hist(mem: aether.Memory) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for a in sorted(_ids(mem)):
        out[a] = [(h.content.inline, h.tags, h.metadata, h.content.metadata, h.modality, h.subject, h.quality_score,
                   h.valid_from, h.valid_to) for h in mem.history(a)]
    return out


def _both_paths(tmp_path: Path, f: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> list[Any]:
    """Import ``f`` through the columnar path and through the row path into two fresh stores."""
    calls = 0
    real = aether.Memory.add_columns

    def counting(self: aether.Memory, *a: Any, **k: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(self, *a, **k)

    monkeypatch.setattr(aether.Memory, "add_columns", counting)
    out = []
    for columnar in (True, False):
        with aether.open(tmp_path / f"s{columnar}", embedder=aether.HashingEmbedder(dim=DIM)) as mem:
            rep = ingest.import_file(mem, f, columnar=columnar, **kw)
            vecs = {a: mem._engine.table.vectors[mem._engine.table.atom_rows[mem._engine.table.atom_index[a]][0]]
                    for a in sorted(_ids(mem))}
            # (an engine error names the commit time, which differs between the two stores)
            out.append((rep.imported, [(b.line, b.error.split(" (20")[0]) for b in rep.bad], _hist(mem), vecs, calls))
    return out


def test_columnar_jsonl_import_stores_what_the_row_path_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "in.jsonl"
    _write_jsonl(f, 900, BAD)
    with f.open("a") as fh:  # more value kinds: epoch microseconds, JSON text fields, explicit defaults, vectors
        for i in range(40):
            fh.write(json.dumps({"content": f"extra {i}", "atom_id": f"x{i}", "valid_from": 1_704_067_200_000_000 + i,
                                 "valid_to": None if i % 2 else "2030-01-01T00:00:00+02:00", "tags": '{"k": 1}',
                                 "metadata": '{"b": [1, 2]}', "modality": "structured", "quality_score": 0.5,
                                 "subject": "bob", "content_metadata": {"p": i}}) + "\n")
    (a_n, a_bad, a_hist, _, calls), (b_n, b_bad, b_hist, _, after) = _both_paths(tmp_path, f, monkeypatch,
                                                                                 batch_rows=100)
    assert calls >= 6 and after == calls  # the columnar store used add_columns; the row-path store did not
    assert a_n == b_n == 940 and a_bad == b_bad and sorted(ln for ln, _ in a_bad) == sorted(BAD)
    assert a_hist == b_hist


def test_columnar_parquet_import_stores_what_the_row_path_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 1200
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    vecs[5] = 0.0
    vecs[900, 3] = np.nan
    table = pa.table({
        "content": [None if i == 7 else f"row {i}" for i in range(n)],
        "atom_id": [None if i % 50 == 0 else f"r{i}" for i in range(n)],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), DIM),
        "valid_from": pa.array(1_704_067_200_000 + np.arange(n) * 60_000, pa.timestamp("ms")),  # naive: UTC
        "valid_to": pa.array([None if i % 3 else 19_800 + i for i in range(n)], pa.date32()),
        "tags": pa.array([[("k", str(i % 4)), ("s", '"x"')] for i in range(n)], pa.map_(pa.string(), pa.string())),
        "metadata": [json.dumps({"i": i}) if i != 11 else "{not json" for i in range(n)],
        "modality": [None if i % 2 else "text" for i in range(n)],
        "quality_score": [None if i % 5 else 0.25 for i in range(n)],
        "colour": [None if i != 600 else "red" for i in range(n)],
    })
    f = tmp_path / "in.parquet"
    pq.write_table(table, f, row_group_size=500)
    (a_n, a_bad, a_hist, a_vec, calls), (b_n, b_bad, b_hist, b_vec, after) = _both_paths(
        tmp_path, f, monkeypatch, batch_rows=256)
    assert calls >= 3 and after == calls
    assert [ln for ln, _ in a_bad] == [6, 8, 12, 601, 901] and a_bad == b_bad and a_n == b_n == n - 5
    assert "unknown keys" in a_bad[3][1] and "content" in a_bad[1][1]
    named = {k: v for k, v in a_hist.items() if k.startswith("r")}
    # 24 rows without an id (fresh ones); rows 600 and 900 are bad and among them
    assert named == {k: v for k, v in b_hist.items() if k.startswith("r")} and len(named) == n - 24 - 3
    assert len(a_hist) == len(b_hist)
    assert all(np.allclose(a_vec[k], b_vec[k], atol=1e-6) for k in named)
    r3 = a_hist["r3"][0]
    assert r3[1] == {"k": 3, "s": "x"} and r3[2] == {"i": 3} and r3[4] == "text" and r3[6] == 1.0
    assert r3[7].isoformat() == "2024-01-01T00:03:00+00:00" and r3[8].isoformat() == "2024-03-21T00:00:00+00:00"


def test_columnar_import_resumes_mid_file(tmp_path: Path) -> None:
    n = 2000
    table = pa.table({"content": [f"p {i}" for i in range(n)], "atom_id": [f"p{i}" for i in range(n)]})
    f = tmp_path / "in.parquet"
    pq.write_table(table, f, row_group_size=700)
    calls = 0

    def die(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise _Boom

    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM)) as mem:
        with pytest.raises(_Boom):
            ingest.import_file(mem, f, batch_rows=300, progress=die)
        partial = mem.stats().versions
        assert 0 < partial < n
        rep = ingest.import_file(mem, f, batch_rows=300)
        assert rep.imported == n - partial and mem.stats().versions == n and _ids(mem) == {f"p{i}" for i in range(n)}
