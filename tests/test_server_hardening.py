"""Limits and error hygiene of the app (in-process): hits per search_many, namespaces, 500 bodies, job
options checked before queueing, the inline search path and the orjson body parser."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

import aether
from aether.server import create_app


def _app(root: Path, **kw: Any) -> Any:
    return create_app(root, model="hashing:16", api_key="", keys_file=root / "k.json", **kw)


def _err(r: Any, status: int, type_name: str = "InvalidInputError") -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == type_name, err
    return str(err["message"])


def test_search_many_caps_k_times_queries(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path, max_hits=20)) as c:
        assert c.post("/v1/namespaces/n/atoms/batch", json={"items": ["a", "b", "c"]}).status_code == 201
        ok = c.post("/v1/namespaces/n/search/batch", json={"queries": ["a", "b"], "k": 10})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 2
        msg = _err(c.post("/v1/namespaces/n/search/batch", json={"queries": ["a", "b", "c"], "k": 7}), 413)
        assert "21 hits" in msg and "at most 20" in msg
        vecs = np.ones((3, 16), np.float32).tolist()
        _err(c.post("/v1/namespaces/n/search/batch", json={"queries": vecs, "k": 10}), 413)


def test_namespace_limit_is_a_409_and_creates_nothing(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path, max_namespaces=2)) as c:
        for ns in ("a", "b"):
            assert c.post(f"/v1/namespaces/{ns}/atoms", json={"content": "x"}).status_code == 201
        msg = _err(c.post("/v1/namespaces/c/atoms", json={"content": "x"}), 409)
        assert "limit of 2 namespaces" in msg
        _err(c.put("/v1/namespaces/d", json={}), 409)
        # existing namespaces keep working
        assert c.post("/v1/namespaces/a/atoms", json={"content": "y"}).status_code == 201
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["a", "b"]


def test_unexpected_errors_never_reach_the_body(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    secret = "/srv/secret/path/segment-0001.parquet"
    app = _app(tmp_path)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/v1/namespaces/n/atoms", json={"content": "x"}).status_code == 201
        mem = app.state.server.namespaces.get("n")

        def broken(*a: Any, **k: Any) -> Any:
            raise RuntimeError(f"boom at {secret}")

        def broken_store(*a: Any, **k: Any) -> Any:
            raise aether.errors.CorruptionError(f"checksum mismatch in {secret}")

        with caplog.at_level(logging.ERROR, logger="aether.server"):
            for attr, fn in (("stats", broken), ("stats", broken_store)):
                monkeypatch.setattr(type(mem), attr, fn)
                r = c.get("/v1/namespaces/n/stats", headers={"X-Request-ID": "rid-500"})
                assert r.status_code == 500, r.text
                assert secret not in r.text and "boom" not in r.text and "checksum" not in r.text
                assert "rid-500" in r.json()["error"]["message"]
                monkeypatch.undo()
            # raised outside the worker call (the search options' own code): still JSON, still no text
            monkeypatch.setattr("aether.server._app._search_kwargs", broken)
            r = c.post("/v1/namespaces/n/search", json={"query": "x"}, headers={"X-Request-ID": "rid-out"})
            assert r.status_code == 500 and r.json()["error"]["type"] == "RemoteError"
            assert secret not in r.text and "rid-out" in r.text
        logged = caplog.text
        assert secret in logged and "rid-500" in logged and "rid-out" in logged


def test_job_options_are_checked_before_queueing(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path)) as c:
        assert c.post("/v1/namespaces/j/atoms", json={"content": "x"}).status_code == 201
        cases = [
            ({"kind": "compact", "model": "hashing:8"}, 422, "InvalidInputError", "do not apply"),
            ({"kind": "compact", "batch_size": 8}, 422, "InvalidInputError", "do not apply"),
            ({"kind": "reindex", "merge_below": 3}, 422, "InvalidInputError", "do not apply"),
            ({"kind": "reindex", "retain_days": 1}, 422, "InvalidInputError", "do not apply"),
            ({"kind": "compact", "retain": "2024-01-01T00:00:00Z", "retain_days": 1}, 422, "InvalidInputError",
             "not both"),
            ({"kind": "compact", "retain": "yesterday"}, 422, "InvalidInputError", "retain"),
            ({"kind": "compact", "retain": "2024-01-01T00:00:00"}, 422, "NaiveDatetimeError", "retain"),
            ({"kind": "reindex", "recipe": "no-such-recipe"}, 400, "ConfigError", "unknown index recipe"),
            ({"kind": "reindex", "model": "no-such-model"}, 400, "ConfigError", ""),
        ]
        for body, status, type_name, text in cases:
            assert text in _err(c.post("/v1/namespaces/j/jobs", json=body), status, type_name), body
        assert c.get("/v1/namespaces/j/jobs").json()["jobs"] == []  # nothing was queued
        ok = c.post("/v1/namespaces/j/jobs", json={"kind": "compact", "retain": "2024-01-01T00:00:00Z",
                                                   "model": None})
        assert ok.status_code == 202, ok.text  # an explicit null is "not given"


def test_unexpected_job_failure_keeps_its_text_in_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    app = _app(tmp_path)
    with TestClient(app) as c:
        assert c.post("/v1/namespaces/j/atoms", json={"content": "x"}).status_code == 201
        mem = app.state.server.namespaces.get("j")

        def broken(*a: Any, **k: Any) -> Any:
            raise RuntimeError("internal detail /srv/x")

        monkeypatch.setattr(type(mem), "compact", broken)
        job = c.post("/v1/namespaces/j/jobs", json={"kind": "compact"}).json()
        for _ in range(200):
            job = c.get(f"/v1/namespaces/j/jobs/{job['id']}").json()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.02)
        assert job["status"] == "failed" and job["error"]["type"] == "RemoteError"
        assert "/srv/x" not in job["error"]["message"] and job["id"] in job["error"]["message"]


def test_vector_searches_inline_and_threaded_agree(tmp_path: Path) -> None:
    from aether.server import _state

    app = _app(tmp_path)
    rng = np.random.default_rng(3)
    q = rng.standard_normal(16).astype(np.float32).tolist()
    with TestClient(app) as c:
        items = [f"fact {i}" for i in range(30)]
        assert c.post("/v1/namespaces/v/atoms/batch", json={"items": items}).status_code == 201
        ctx = _state.Ctx(app.state.server, None, "v")  # type: ignore[arg-type]
        assert not ctx.inline(np.zeros(16), 10)  # never searched since it opened: the first one goes to a worker
        first = c.post("/v1/namespaces/v/search", json={"query": q, "k": 5}).json()["hits"]
        assert ctx.inline(np.zeros(16), 10) and not ctx.inline("text", 10) and not ctx.inline(["t"], 1)
        assert not ctx.inline(np.zeros(16), _state.INLINE_WORK + 1)
        assert not _state.Ctx(app.state.server, None, "closed").inline(np.zeros(16), 10)  # type: ignore[arg-type]
        small = c.post("/v1/namespaces/v/search", json={"query": q, "k": 5}).json()["hits"]
        big_k = _state.INLINE_WORK + 1  # over the inline limit: the worker-thread path
        big = c.post("/v1/namespaces/v/search", json={"query": q, "k": big_k}).json()["hits"]
        assert [h["atom"]["atom_id"] for h in small] == [h["atom"]["atom_id"] for h in big[:5]] == [
            h["atom"]["atom_id"] for h in first]
        # a bad vector is the same 422 on the inline path
        _err(c.post("/v1/namespaces/v/search", json={"query": [1.0, 2.0], "k": 3}), 422, "InvalidVectorError")


def test_orjson_body_parser_falls_back_for_what_it_refuses(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path)) as c:
        assert c.post("/v1/namespaces/p/atoms", json={"content": "x"}).status_code == 201
        h = {"content-type": "application/json"}
        # NaN is not JSON for orjson; the standard library reads it and the engine rejects the vector
        nan = '{"query": [NaN' + ", 0.0" * 15 + '], "k": 3}'
        _err(c.post("/v1/namespaces/p/search", content=nan, headers=h), 422, "InvalidVectorError")
        _err(c.post("/v1/namespaces/p/search", content=b'{"query": ', headers=h), 400)
        huge = '{"content": "y", "quality_score": 1' + "0" * 30 + "}"  # beyond 64 bits: orjson refuses
        r = c.post("/v1/namespaces/p/atoms", content=huge, headers=h)
        assert r.status_code in (201, 422), r.text


def _binary(head: dict[str, Any], vecs: bytes) -> bytes:
    import json

    h = json.dumps(head).encode()
    return len(h).to_bytes(4, "little") + h + vecs


def test_binary_columns_round_trip_and_reject_malformed_bodies(tmp_path: Path) -> None:
    from aether.server._schemas import BINARY_COLUMNS

    h = {"content-type": BINARY_COLUMNS}
    path = "/v1/namespaces/b/atoms/columns/binary"
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((3, 16)).astype("<f4")
    with TestClient(_app(tmp_path)) as c:
        ok = c.post(path, content=_binary({"content": ["x", "y", "z"], "shape": [3, 16], "tags": {"t": 1}},
                                          vecs.tobytes()), headers=h)
        assert ok.status_code == 201, ok.text
        ids = ok.json()["atom_ids"]
        hit = c.post("/v1/namespaces/b/search", json={"query": vecs[1].tolist(), "k": 1}).json()["hits"][0]
        assert hit["atom"]["atom_id"] == ids[1] and hit["atom"]["tags"] == {"t": 1}
        nan = vecs.copy()
        nan[0, 0] = np.nan
        bad = [
            (b"", 422, "InvalidInputError"),
            (b"\xff\xff\xff\x7f{}", 422, "InvalidInputError"),  # header length past the end
            (_binary({"content": ["x"]}, vecs[:1].tobytes()), 422, "InvalidInputError"),  # no shape
            (_binary({"content": ["x"], "shape": [1, -16]}, b""), 422, "InvalidInputError"),
            (_binary({"content": ["x"], "shape": [1, 16], "vectors": [[0.0]]}, vecs[:1].tobytes()), 422,
             "InvalidInputError"),
            (_binary({"content": ["x"], "shape": [1, 16], "bogus": 1}, vecs[:1].tobytes()), 422, "InvalidInputError"),
            (_binary({"content": ["x"], "shape": [1, 16]}, vecs[:1].tobytes()[:-4]), 422, "InvalidVectorError"),
            (_binary({"content": ["x", "y"], "shape": [2, 8]}, vecs[:1].tobytes()), 422, "InvalidVectorError"),
            (_binary({"content": ["x"], "shape": [1, 16]}, nan[:1].tobytes()), 422, "InvalidVectorError"),
            (b"\x02\x00\x00\x00[]", 422, "InvalidInputError"),
        ]
        for body, status, type_name in bad:
            _err(c.post(path, content=body, headers=h), status, type_name)
        assert c.get("/v1/namespaces/b/stats").json()["atoms_current"] == 3  # nothing stored by a rejected one
        assert BINARY_COLUMNS in c.get("/openapi.json").json()["paths"][
            "/v1/namespaces/{ns}/atoms/columns/binary"]["post"]["requestBody"]["content"]


def test_the_client_sends_numpy_matrices_as_binary_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.client._sync import RemoteMemory

    app = _app(tmp_path)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        mem = RemoteMemory("http://127.0.0.1", namespace="cb", _http=c)
        vecs = np.random.default_rng(6).standard_normal((4, 16)).astype(np.float64)  # converted to float32
        ids = mem.add_columns(["a", "b", "c", "d"], vectors=vecs, subject="s")
        call = mem.c_add_columns(["a"], vectors=vecs[:1])
        assert call.path.endswith("/atoms/columns/binary") and call.vectors is not None
        assert mem.c_add_columns(["a"], vectors=vecs[:1].tolist()).vectors is None  # lists: the JSON path
        got = mem.search(vecs[2].astype(np.float32), k=1)
        assert got[0].atom_id == ids[2] and got[0].atom.subject == "s"
        with pytest.raises(aether.errors.InvalidVectorError):
            mem.add_columns(["e"], vectors=np.full((1, 16), np.nan))
        with pytest.raises(aether.errors.InvalidVectorError):
            mem.add_columns(["e"], vectors=np.ones((1, 15)))
        assert mem.stats().atoms_current == 4
