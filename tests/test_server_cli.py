"""The CLI side of the server: ``aether keys add|list|revoke`` and the read commands with ``--url``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from typer.testing import CliRunner

import aether
from aether.cli import app
from aether.server._auth import KeysFile

from ._server_util import LiveServer, clean_exit

runner = CliRunner()


def test_keys_add_list_revoke(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = runner.invoke(app, ["keys", "add", str(root), "--name", "ci", "--scope", "write", "--namespace", "team",
                            "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["key"].startswith(f"aek_{doc['id']}_") and doc["scope"] == "write" and doc["namespaces"] == ["team"]
    assert "hash" not in doc
    listed = json.loads(runner.invoke(app, ["keys", "list", str(root), "--json"]).stdout)
    assert [e["id"] for e in listed] == [doc["id"]] and "hash" not in listed[0]
    assert doc["key"] not in (root / "api-keys.json").read_text()
    assert runner.invoke(app, ["keys", "revoke", str(root), doc["id"]]).exit_code == 0
    assert json.loads(runner.invoke(app, ["keys", "list", str(root), "--json"]).stdout)[0]["revoked"]
    bad = runner.invoke(app, ["keys", "add", str(root), "--name", "x", "--scope", "root"])
    assert bad.exit_code != 0


def test_read_commands_with_url(tmp_path: Path) -> None:
    root = tmp_path / "root"
    key = KeysFile(root / "api-keys.json").add(name="t", scope="admin")[0]
    with LiveServer(root) as srv:
        mem = aether.connect(srv.url, api_key=key, namespace="team")
        a = mem.add("Alice lives in Paris", valid_from="2023-01-01T00:00:00Z")
        mem.correct(a.atom_id, "Alice lives in Lyon", valid_from="2024-06-01T00:00:00Z")
        common = ["--url", srv.url, "--namespace", "team", "--api-key", key, "--json"]
        r = runner.invoke(app, ["search", "where does alice live", "--valid-at", "2023-06-01", *common])
        assert r.exit_code == 0, r.output
        assert [h["atom"]["content"] for h in json.loads(r.stdout)["hits"]] == ["Alice lives in Paris"]
        r = runner.invoke(app, ["get", a.atom_id, *common])
        assert r.exit_code == 0 and json.loads(r.stdout)["content"] == "Alice lives in Lyon"
        r = runner.invoke(app, ["history", a.atom_id, *common])
        assert r.exit_code == 0 and len(json.loads(r.stdout)) >= 2
        r = runner.invoke(app, ["stats", *common])
        assert r.exit_code == 0 and json.loads(r.stdout)["atoms_current"] == 1
        r = runner.invoke(app, ["stats", "--url", srv.url, "--namespace", "team", "--api-key", "wrong"])
        assert r.exit_code != 0 and isinstance(r.exception, aether.errors.AuthenticationError)
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        code = srv.stop()
    assert clean_exit(code)
