"""A live ``aether serve`` (uvicorn in a subprocess on 127.0.0.1): lifecycle, auth, isolation, bad input,
metrics and access logs. Every request goes to loopback and is bounded in count and time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import aether
from aether.errors import AuthenticationError, PermissionDeniedError
from aether.server._auth import KeysFile

from ._server_util import LiveServer, clean_exit

DIM = 64


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("srv") / "root"
    kf = KeysFile(root / "api-keys.json")
    out: dict[str, Any] = {"root": root, "file": kf}
    for label, scope, ns in (("admin", "admin", None), ("writer_a", "write", ["a"]), ("reader_a", "read", ["a"]),
                             ("reader_b", "read", ["b"]), ("revoked", "admin", None)):
        key, entry = kf.add(name=label, scope=scope, namespaces=ns)
        out[label] = key
        out[label + "_id"] = entry["id"]
    return out


@pytest.fixture(scope="module")
def server(keys: dict[str, Any]) -> Iterator[LiveServer]:
    srv = LiveServer(keys["root"], args=("--max-body-mb", "1"))
    srv.start()
    try:
        yield srv
    finally:
        code = srv.stop()
        assert clean_exit(code), srv.log()[-3000:]


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _err(r: httpx.Response, status: int, type_name: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert set(doc) == {"error"} and {"type", "message"} <= set(doc["error"])
    assert "Traceback" not in r.text
    if type_name is not None:
        assert doc["error"]["type"] == type_name, doc
    return doc["error"]


# ------------------------------------------------------------------------------------------ lifecycle


def test_writes_survive_sigterm_and_the_stores_verify(tmp_path: Path) -> None:
    root = tmp_path / "root"
    srv = LiveServer(root).start()
    try:
        mem = aether.connect(srv.url, namespace="life")
        first = mem.add("Alice lives in Paris", tags={"user": "alice"}, valid_from="2023-01-01T00:00:00Z")
        ids = mem.add_many([f"note {i}" for i in range(50)])
        vecs = np.random.default_rng(0).standard_normal((20, DIM)).astype(np.float32)
        ids += mem.add_columns([f"vec {i}" for i in range(20)], vectors=vecs)
        mem.correct(first.atom_id, "Alice lives in Lyon", valid_from="2024-06-01T00:00:00Z")
        # Requests in flight when SIGTERM arrives finish (or are refused), never half-done.
        done: list[list[str]] = []

        def writer() -> None:
            with aether.connect(srv.url, namespace="life") as w:
                for i in range(200):
                    try:
                        done.append(w.add_many([f"late {i}-{j}" for j in range(5)]))
                    except aether.AetherError:
                        return

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        code = srv.stop()
        t.join(30)
        assert not t.is_alive()
    finally:
        srv.kill()
    assert clean_exit(code), srv.log()[-3000:]
    assert "Application shutdown complete" in srv.log()
    rep = aether.verify(root / "life")
    assert rep.ok, rep.problems
    with aether.open(root / "life") as local:
        now, then = local.get(first.atom_id), local.get(first.atom_id, valid_at="2023-06-01T00:00:00Z")
        assert now is not None and now.content.inline == "Alice lives in Lyon"
        assert then is not None and then.content.inline == "Alice lives in Paris"
        for atom_id in ids + [a for batch in done for a in batch]:
            assert local.get(atom_id) is not None, atom_id


def test_refuses_to_bind_beyond_loopback_without_keys(tmp_path: Path) -> None:
    import subprocess
    import sys

    from ._server_util import REPO

    r = subprocess.run([sys.executable, "-m", "aether", "serve", str(tmp_path / "r"), "--host", "0.0.0.0",
                        "--port", "0"], capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert r.returncode != 0
    assert "refusing to listen on 0.0.0.0 without API keys" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------ auth


def test_health_needs_no_key_but_everything_else_does(server: LiveServer, keys: dict[str, Any]) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}
        assert c.get("/openapi.json").status_code == 200
        for path in ("/metrics", "/v1/namespaces", "/v1/namespaces/a/stats"):
            r = c.get(path)
            _err(r, 401, "AuthenticationError")
            assert r.headers["www-authenticate"] == "Bearer"
        _err(c.post("/v1/namespaces/a/search", json={"query": "x"}), 401, "AuthenticationError")


@pytest.mark.parametrize("header", [
    {"Authorization": "Bearer nope"}, {"X-API-Key": "aek_00000000_wrong"}, {"Authorization": "Basic abc"},
    {"Authorization": "Bearer"},
])
def test_wrong_keys_are_401(server: LiveServer, header: dict[str, str]) -> None:
    r = httpx.get(server.url + "/v1/namespaces", headers=header, timeout=10)
    _err(r, 401, "AuthenticationError")


def test_bearer_and_x_api_key_both_work(server: LiveServer, keys: dict[str, Any]) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post("/v1/namespaces/a/atoms", json={"content": "hello"}, headers=_h(keys["writer_a"]))
        assert r.status_code == 201, r.text
        r2 = c.get(f"/v1/namespaces/a/atoms/{r.json()['atom_id']}", headers={"X-API-Key": keys["reader_a"]})
        assert r2.status_code == 200 and r2.json()["content"]["inline"] == "hello"


def test_scopes_and_namespaces(server: LiveServer, keys: dict[str, Any]) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        c.post("/v1/namespaces/b/atoms", json={"content": "secret of b"}, headers=_h(keys["admin"]))
        _err(c.post("/v1/namespaces/a/atoms", json={"content": "x"}, headers=_h(keys["reader_a"])), 403,
             "PermissionDeniedError")
        _err(c.post("/v1/namespaces/b/search", json={"query": "secret"}, headers=_h(keys["reader_a"])), 403)
        _err(c.get("/v1/namespaces/b/stats", headers=_h(keys["writer_a"])), 403)
        _err(c.post("/v1/namespaces/a/erase", json={"subject": "default"}, headers=_h(keys["writer_a"])), 403)
        _err(c.post("/v1/namespaces/a/jobs", json={"kind": "compact"}, headers=_h(keys["writer_a"])), 403)
        _err(c.put("/v1/namespaces/c", json={}, headers=_h(keys["writer_a"])), 403)
        # A key for A lists only A; B's reader sees B's data and nothing of A.
        assert c.get("/v1/namespaces", headers=_h(keys["reader_a"])).json() == {"namespaces": ["a"]}
        hits = c.post("/v1/namespaces/b/search", json={"query": "hello", "k": 10},
                      headers=_h(keys["reader_b"])).json()["hits"]
        assert [h["atom"]["content"]["inline"] for h in hits] == ["secret of b"]
        _err(c.post("/v1/namespaces/a/search", json={"query": "hello"}, headers=_h(keys["reader_b"])), 403)
    # The client raises the same error classes.
    with aether.connect(server.url, api_key=keys["reader_a"], namespace="b") as mem, \
            pytest.raises(PermissionDeniedError):
        mem.search("secret")
    with aether.connect(server.url, api_key="aek_deadbeef_nope", namespace="a") as mem, \
            pytest.raises(AuthenticationError):
        mem.stats()


def test_revoked_key_is_rejected_by_the_running_server(server: LiveServer, keys: dict[str, Any]) -> None:
    url = server.url + "/v1/namespaces"
    assert httpx.get(url, headers=_h(keys["revoked"]), timeout=10).status_code == 200
    keys["file"].revoke(keys["revoked_id"])
    deadline = time.monotonic() + 5
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = httpx.get(url, headers=_h(keys["revoked"]), timeout=10).status_code
        time.sleep(0.1)
    assert status == 401
    _err(httpx.get(url, headers=_h(keys["revoked"]), timeout=10), 401, "AuthenticationError")
    assert httpx.get(url, headers=_h(keys["admin"]), timeout=10).status_code == 200


def test_only_hashes_on_disk(keys: dict[str, Any]) -> None:
    raw = (keys["root"] / "api-keys.json").read_text()
    assert (keys["root"] / "api-keys.json").stat().st_mode & 0o077 == 0
    for label in ("admin", "writer_a", "reader_a", "reader_b", "revoked"):
        secret = keys[label].split("_", 2)[2]
        assert secret not in raw and keys[label] not in raw
    assert raw.count("sha256:") == 5


# ------------------------------------------------------------------------------------------ bad input


def _state(c: httpx.Client, key: str) -> tuple[Any, ...]:
    s = c.get("/v1/namespaces/bad/stats", headers=_h(key)).json()
    hits = c.post("/v1/namespaces/bad/search", json={"query": "base", "k": 50}, headers=_h(key)).json()["hits"]
    return s["versions"], s["transactions"], s["atoms_current"], sorted(h["atom"]["atom_id"] for h in hits)


def test_bad_input_is_4xx_json_and_changes_nothing(server: LiveServer, keys: dict[str, Any]) -> None:
    key = keys["admin"]
    h = _h(key)
    with httpx.Client(base_url=server.url, timeout=30, headers=h) as c:
        r = c.post("/v1/namespaces/bad/atoms/batch", json={"items": ["base one", "base two"]})
        assert r.status_code == 201
        aid = r.json()["atom_ids"][0]
        before = _state(c, key)
        J = {"Content-Type": "application/json"}
        cases: list[tuple[httpx.Response, int, str | None]] = [
            (c.post("/v1/namespaces/bad/atoms", content=b'{"content": "x",', headers=J), 400, None),
            (c.post("/v1/namespaces/bad/atoms", content=b"[1, 2]", headers=J), 422, None),
            (c.post("/v1/namespaces/bad/atoms", json={"content": 5}), 422, None),
            (c.post("/v1/namespaces/bad/atoms", json={"content": "x", "tags": "notadict"}), 422, None),
            (c.post("/v1/namespaces/bad/atoms", json={"content": "x", "tags": {"k": [1, 2]}}), 422,
             "InvalidTagError"),
            (c.post("/v1/namespaces/bad/atoms", json={"content": ""}), 422, "InvalidContentError"),
            (c.post("/v1/namespaces/bad/atoms", json={"content": "x", "surprise": 1}), 422, None),
            (c.post("/v1/namespaces/bad/atoms", content=b'{"content": "x", "vector": [NaN' + b", 1.0" * 63 + b"]}",
                    headers=J), 422, "InvalidVectorError"),
            (c.post("/v1/namespaces/bad/atoms", json={"content": "x", "vector": [1.0] * 3}), 422,
             "InvalidVectorError"),
            (c.post("/v1/namespaces/bad/atoms", json={"content": "x", "vector": [0.0] * DIM}), 422,
             "InvalidVectorError"),
            (c.post("/v1/namespaces/bad/atoms", json={"content": "x", "vector": {"shape": [DIM], "data": "!!"}}),
             422, "InvalidVectorError"),
            (c.post("/v1/namespaces/bad/atoms/batch", json={"items": ["ok", "ok"], "vectors": [[1.0] * DIM]}), 422,
             "InvalidInputError"),
            (c.post("/v1/namespaces/bad/atoms/batch", json={"items": ["fine", {"content": "x",
                                                                                "valid_from": "yesterday"}]}),
             422, "InvalidInputError"),
            (c.post("/v1/namespaces/bad/atoms", json={"content": "x", "valid_from": "2024-01-01T00:00:00"}), 422,
             "NaiveDatetimeError"),
            (c.post("/v1/namespaces/bad/atoms", json={"content": "x", "valid_from": "2024-01-02T00:00:00Z",
                                                      "valid_to": "2024-01-01T00:00:00Z"}), 422,
             "InvalidIntervalError"),
            (c.post("/v1/namespaces/bad/atoms/columns", json={"content": ["a", "b"], "atom_id": ["x"]}), 422, None),
            (c.post("/v1/namespaces/bad/correct", json={"atom_id": "no-such-atom", "content": "x"}), 404,
             "AtomNotFoundError"),
            (c.post("/v1/namespaces/bad/retract", json={"atom_id": "no-such-atom"}), 404, "AtomNotFoundError"),
            (c.post("/v1/namespaces/bad/retract", json={"atom_id": aid, "at": "soon"}), 422, "InvalidInputError"),
            (c.delete("/v1/namespaces/bad/atoms/no-such-atom"), 404, "AtomNotFoundError"),
            (c.get("/v1/namespaces/bad/atoms/no-such-atom"), 404, "AtomNotFoundError"),
            (c.get("/v1/namespaces/bad/history/no-such-atom"), 404, "AtomNotFoundError"),
            (c.get(f"/v1/namespaces/bad/atoms/{aid}", params={"valid_at": "2024-13-01T00:00:00Z"}), 422, None),
            (c.post("/v1/namespaces/bad/search", json={"query": "x", "k": 0}), 422, None),
            (c.post("/v1/namespaces/bad/search", json={"query": "x", "k": "ten"}), 422, None),
            (c.post("/v1/namespaces/bad/search", json={"query": "x", "as_of": "noon"}), 422, "InvalidInputError"),
            (c.post("/v1/namespaces/bad/search", json={"query": "x", "valid_at": "2024-01-01T00:00:00Z",
                                                       "valid_during": ["2024-01-01T00:00:00Z", None]}), 422, None),
            (c.post("/v1/namespaces/bad/search", json={"query": "x", "mode": "telepathy"}), 422, None),
            (c.post("/v1/namespaces/bad/search", json={"query": "x", "no_such_option": 1}), 422, None),
            (c.post("/v1/namespaces/bad/search", json={"query": [1.0, 2.0]}), 422, "InvalidVectorError"),
            (c.post("/v1/namespaces/bad/search/batch", json={"queries": [[1.0] * DIM, [1.0]]}), 422,
             "InvalidVectorError"),
            (c.post("/v1/namespaces/bad/erase", json={"atom_id": "no-such-atom"}), 404, "AtomNotFoundError"),
            (c.get("/v1/namespaces/bad/jobs/nope"), 404, None),
            (c.post("/v1/namespaces/bad/jobs", json={"kind": "reindex", "model": "no-such-model"}), 400,
             "ConfigError"),
            (c.get("/v1/namespaces/Bad%2F..%2F..%2Fetc/stats"), 404, None),
            (c.get("/v1/namespaces/%2E%2E/stats"), 422, None),
            (c.get("/v1/namespaces/UPPER/stats"), 422, None),
            (c.get("/v1/namespaces/missing/stats"), 404, "StoreNotFoundError"),
            (c.post("/v1/namespaces/bad/atoms", content=b"x" * (2 * 1024 * 1024), headers=J), 413,
             "InvalidInputError"),
        ]
        # A body over the limit sent without Content-Length (chunked) is cut off too.
        chunks = iter([b'{"content": "', b"y" * (600 * 1024), b"y" * (600 * 1024), b'"}'])
        cases.append((c.post("/v1/namespaces/bad/atoms", content=chunks, headers=J), 413, "InvalidInputError"))
        for i, (r, status, type_name) in enumerate(cases):
            try:
                _err(r, status, type_name)
            except AssertionError as exc:
                raise AssertionError(f"case {i}: {r.request.method} {r.request.url}: {exc}") from None
        assert _state(c, key) == before
    assert not (server.root.parent / "etc").exists()
    assert sorted(p.name for p in server.root.iterdir() if p.is_dir()) == sorted(
        p.name for p in server.root.iterdir() if p.is_dir() and p.name in {"a", "b", "bad"})


# ------------------------------------------------------------------------------------------ metrics, logs, jobs


def test_metrics_and_access_logs(server: LiveServer, keys: dict[str, Any]) -> None:
    mem = aether.connect(server.url, api_key=keys["admin"], namespace="m")
    mem.add_many([f"metric {i}" for i in range(7)])
    mem.search("metric", k=3)
    mem.search(np.ones(DIM, np.float32), k=3, mode="dense")
    stats = mem.stats()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get("/metrics", headers={"X-API-Key": keys["reader_b"], "X-Request-ID": "probe-123"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "probe-123"
        text = r.text
    assert f'aether_atoms{{namespace="m"}} {float(stats.atoms_current)}' in text
    assert 'aether_wal_bytes{namespace="m"}' in text
    assert f'aether_tail_rows{{namespace="m"}} {float(stats.tail_rows)}' in text and stats.tail_rows == 7
    for phase in ("embed", "index", "materialize", "encode"):  # inside the Memory call, and the JSON reply
        assert f'aether_search_duration_seconds_count{{mode="dense",op="search",phase="{phase}"}} 1.0' in text
        assert f'aether_search_duration_seconds_count{{mode="default",op="search",phase="{phase}"}}' in text
    # The text query was embedded; the vector query was not.
    def embed_sum(mode: str) -> float:
        head = f'aether_search_duration_seconds_sum{{mode="{mode}",op="search",phase="embed"}} '
        return float(next(x for x in text.splitlines() if x.startswith(head))[len(head):])

    assert embed_sum("dense") == 0.0 and embed_sum("default") > 0.0
    assert f'aether_index_seals_total{{namespace="m"}} {float(stats.seals)}' in text
    assert 'aether_index_seal_seconds_total{namespace="m"}' in text
    assert 'route="/v1/namespaces/{ns}/search",status="200"' in text
    assert 'route="/v1/namespaces/{ns}/atoms/batch",status="201"' in text
    # One JSON line per request, with the request id.
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in server.log().splitlines() if x.startswith("{") and '"request_id"' in x]
        if any(d["request_id"] == "probe-123" for d in lines):
            break
        time.sleep(0.1)
    import importlib.util

    if importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools"):  # uvicorn[standard]
        assert "uvloop loop, httptools parser" in server.log()
    probe = [d for d in lines if d["request_id"] == "probe-123"]
    assert probe and probe[0]["route"] == "/metrics" and probe[0]["status"] == 200
    assert probe[0]["key_id"] == keys["reader_b_id"]
    searches = [d for d in lines if d["route"] == "/v1/namespaces/{ns}/search" and d["namespace"] == "m"]
    assert len(searches) >= 2 and all(len(d["request_id"]) == 32 and d["ms"] > 0 for d in searches)


def test_admin_jobs_and_erase(server: LiveServer, keys: dict[str, Any]) -> None:
    mem = aether.connect(server.url, api_key=keys["admin"], namespace="jobs")
    ids = mem.add_many([{"content": f"job {i}", "subject": "carol" if i % 2 else "dan"} for i in range(10)])
    res = mem.erase(subject="carol")
    assert res.versions == 5
    out = mem.compact(timeout=60)
    assert out.purged == 5 and out.rows_after == 5
    assert [mem.get(a) is None for a in ids] == [bool(i % 2) for i in range(10)]
    with httpx.Client(base_url=server.url, timeout=10, headers=_h(keys["admin"])) as c:
        jobs = c.get("/v1/namespaces/jobs/jobs").json()["jobs"]
        assert [j["kind"] for j in jobs] == ["compact"] and jobs[0]["status"] == "succeeded"
        one = c.get(f"/v1/namespaces/jobs/jobs/{jobs[0]['id']}").json()
        assert one["result"]["purged"] == 5 and one["seconds"] > 0
        _err(c.get(f"/v1/namespaces/a/jobs/{jobs[0]['id']}"), 404)  # a job is found only in its namespace
        text = c.get("/metrics").text
    assert 'aether_job_duration_seconds_count{kind="compact",status="succeeded"} 1.0' in text
    # A re-index to another model, as a job; the namespace then searches with the new model.
    done = mem.reindex(model="hashing:32", timeout=120)
    assert done.dim == 32 and done.rows == 5
    assert mem.stats().dim == 32 and len(mem.search("job 2", k=3)) == 3
    with pytest.raises(aether.errors.ConfigError):
        mem.reindex(model="no-such-model")
