"""The ASGI app in-process (``create_app``): limits, lifespan, key handling details."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

import aether
from aether.server import create_app
from aether.server._auth import KeysFile


def test_batch_and_query_limits_are_413_and_store_nothing(tmp_path: Path) -> None:
    app = create_app(tmp_path, model="hashing:16", api_key="", keys_file=tmp_path / "k.json", max_batch=5,
                     max_queries=3)
    with TestClient(app) as c:
        ok = c.post("/v1/namespaces/n/atoms/batch", json={"items": ["a", "b", "c", "d", "e"]})
        assert ok.status_code == 201
        for path, body in (("/v1/namespaces/n/atoms/batch", {"items": list("abcdef")}),
                           ("/v1/namespaces/n/atoms/columns", {"content": list("abcdef")}),
                           ("/v1/namespaces/n/search/batch", {"queries": list("abcd")})):
            r = c.post(path, json=body)
            assert r.status_code == 413 and r.json()["error"]["type"] == "InvalidInputError", r.text
        assert c.get("/v1/namespaces/n/stats").json()["atoms_current"] == 5
    # the lifespan ran and closed the store: it opens again in-process
    with aether.open(tmp_path / "n") as mem:
        assert mem.stats().atoms_current == 5


def test_env_key_and_keys_file_together(tmp_path: Path) -> None:
    key, _ = KeysFile(tmp_path / "k.json").add(name="r", scope="read", namespaces=["x"])
    app = create_app(tmp_path, model="hashing:16", api_key="env-secret", keys_file=tmp_path / "k.json")
    with TestClient(app) as c:
        assert c.post("/v1/namespaces/x/atoms", json={"content": "hi"},
                      headers={"X-API-Key": "env-secret"}).status_code == 201
        assert c.get("/v1/namespaces/x/stats", headers={"Authorization": f"bearer {key}"}).status_code == 200
        r = c.post("/v1/namespaces/x/atoms", json={"content": "no"}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403 and "scope 'write'" in r.json()["error"]["message"]
        assert c.get("/v1/namespaces/y/stats", headers={"X-API-Key": key}).status_code == 403
        assert c.get("/v1/namespaces", headers={"X-API-Key": "env-secret"}).json() == {"namespaces": ["x"]}
        assert c.get("/metrics", headers={"X-API-Key": "wrong"}).status_code == 401
        doc = c.get("/openapi.json").json()
        assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_namespaces_are_encrypted_with_the_servers_key_file(tmp_path: Path) -> None:
    from aether.security.keys import generate_key, write_key_file

    key_file = tmp_path / "master.key"
    write_key_file(key_file, generate_key())
    root = tmp_path / "root"
    app = create_app(root, model="hashing:16", api_key="", keys_file=root / "k.json", key_file=key_file)
    with TestClient(app) as c:
        r = c.post("/v1/namespaces/enc/atoms", json={"content": "Alice's phone is 555-0100"})
        assert r.status_code == 201
        assert c.get("/v1/namespaces/enc/stats").json()["encrypted"] is True
    raw = b"".join(p.read_bytes() for p in (root / "enc").rglob("*") if p.is_file())
    assert b"555-0100" not in raw
    rep = aether.verify(root / "enc", key_file=key_file)
    assert rep.ok and rep.authenticated


def test_a_server_with_keys_stays_closed_when_the_keys_file_disappears(tmp_path: Path) -> None:
    # Review finding: the keys file moved away or deleted while serving made KeyStore.enabled false, and
    # every request then ran as the anonymous admin -- also on a public interface. Auth must fail closed.
    keys_path = tmp_path / "k.json"
    key, _ = KeysFile(keys_path).add(name="w", scope="write")
    app = create_app(tmp_path, model="hashing:16", api_key="", keys_file=keys_path)
    with TestClient(app) as c:
        assert c.post("/v1/namespaces/x/atoms", json={"content": "hi"}, headers={"X-API-Key": key}).status_code == 201
        assert c.get("/v1/namespaces/x/stats").status_code == 401
        keys_path.unlink()
        app.state.server.keys.reload(force=True)
        r = c.post("/v1/namespaces/x/erase", json={"subject": "anyone"})
        assert r.status_code == 401, r.text
        assert c.get("/v1/namespaces/x/stats").status_code == 401
        assert c.get("/v1/namespaces/x/stats", headers={"X-API-Key": key}).status_code == 401  # the file is gone


def test_a_key_for_an_empty_namespace_list_is_refused_not_widened_to_all(tmp_path: Path) -> None:
    # Review finding: namespaces=[] was stored as null, i.e. a key for every namespace.
    import pytest

    kf = KeysFile(tmp_path / "k.json")
    with pytest.raises(aether.InvalidInputError):
        kf.add(name="none", scope="admin", namespaces=[])
    assert kf.load() == []
    _, entry = kf.add(name="one", scope="read", namespaces=["a"])
    assert entry["namespaces"] == ["a"]


def test_a_keys_file_broken_while_serving_keeps_the_last_good_keys_and_leaks_no_path(tmp_path: Path) -> None:
    # Review finding: a keys file left half-written by a manual edit made requests (unauthenticated ones
    # too) answer 400 ConfigError with the server's path to the file in the message.
    keys_path = tmp_path / "k.json"
    kf = KeysFile(keys_path)
    key, _ = kf.add(name="a", scope="admin")
    app = create_app(tmp_path, model="hashing:16", api_key="", keys_file=keys_path)
    with TestClient(app) as c:
        assert c.get("/v1/namespaces", headers={"X-API-Key": key}).status_code == 200
        good = keys_path.read_text()
        keys_path.write_text('{"format": 1, "keys": [')
        for headers in ({"X-API-Key": "aek_0000_wrong"}, {}):
            app.state.server.keys._checked = 0.0  # the next request re-reads the file
            r = c.get("/v1/namespaces", headers=headers)
            assert r.status_code == 401, r.text
            assert str(tmp_path) not in r.text
        app.state.server.keys._checked = 0.0
        assert c.get("/v1/namespaces", headers={"X-API-Key": key}).status_code == 200
        keys_path.write_text(good)
        second, _ = kf.add(name="b", scope="read")
        app.state.server.keys._checked = 0.0
        assert c.get("/v1/namespaces", headers={"X-API-Key": second}).status_code == 200


def test_readyz_tells_unauthenticated_callers_no_namespace_names_or_paths(tmp_path: Path) -> None:
    # Review finding: /readyz (no key needed) returned each failing namespace's name and error message.
    (tmp_path / "tenant-secret-name").mkdir()  # a folder that is not a store: it fails to open
    kf = tmp_path / "k.json"
    KeysFile(kf).add(name="a", scope="admin")
    app = create_app(tmp_path, model="hashing:16", api_key="", keys_file=kf)
    with TestClient(app) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "tenant-secret-name" not in r.text and str(tmp_path) not in r.text, r.text
        assert "server log" in r.json()["error"]["message"]


def test_a_keyless_loopback_server_refuses_foreign_host_headers(tmp_path: Path) -> None:
    # Review finding: without keys the REST API trusted any Host header, so a web page could reach it by DNS
    # rebinding (evil.example resolving to 127.0.0.1) and read or erase every namespace. The MCP mount
    # already kept the SDK's Host check; the REST routes now check it too when no key is configured.
    app = create_app(tmp_path, model="hashing:16", api_key="", keys_file=tmp_path / "k.json", local_host_only=True)
    for base in ("http://127.0.0.1:8765", "http://localhost", "http://[::1]:8765"):
        with TestClient(app, base_url=base) as c:
            assert c.post("/v1/namespaces/n/atoms", json={"content": "hi"}).status_code == 201, base
    with TestClient(app, base_url="http://evil.example:8765") as c:
        for r in (c.get("/v1/namespaces"), c.post("/v1/namespaces/n/erase", json={"subject": "default"}),
                  c.get("/v1/namespaces/n/stats")):
            assert r.status_code == 403 and r.json()["error"]["type"] == "PermissionDeniedError", r.text
        assert c.get("/healthz").status_code == 200
    key, _ = KeysFile(tmp_path / "k.json").add(name="a", scope="admin")  # with keys, the key is what counts
    app.state.server.keys.reload(force=True)
    with TestClient(app, base_url="http://evil.example:8765") as c:
        assert c.get("/v1/namespaces/n/stats", headers={"X-API-Key": key}).status_code == 200
