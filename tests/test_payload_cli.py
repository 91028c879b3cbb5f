"""The CLI with payloads: ``aether add --file``, ``aether get --payload-out``, ``aether history``, ``verify``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .test_cli import run, run_json


def test_add_file_get_payload_out_and_history(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run("init", store, "--model", "hashing:32")
    photo = tmp_path / "photo.png"
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(3 * (1 << 20) + 5)  # more than one blob chunk
    photo.write_bytes(data)
    atom = run_json("add", store, "--file", photo, "--caption", "the team at the offsite")
    assert atom["content"] == "the team at the offsite"
    assert atom["content_type"] == "image/png" and atom["size_bytes"] == len(data)
    assert atom["modality"] == "image"
    out = tmp_path / "copy.png"
    shown = run("get", store, atom["atom_id"], "--payload-out", out).stdout
    assert "image/png" in shown and str(len(data)) in shown
    assert out.read_bytes() == data
    other = tmp_path / "voice.bin"
    other.write_bytes(b"OggS" + os.urandom(100))
    a2 = run_json("add", store, "a voice note", "--file", other, "--content-type", "audio/ogg")
    assert a2["modality"] == "audio" and a2["content_type"] == "audio/ogg"
    hist = run("history", store, atom["atom_id"]).stdout
    assert "image/png" in hist and atom["payload_digest"][:12] in hist
    s = run_json("add", store, "--data", json.dumps({"status": "open", "n": 2}))
    assert s["data"] == {"status": "open", "n": 2} and s["modality"] == "structured"
    assert "verify" in run("--help").stdout
    run("verify", store)


def test_cli_payload_errors_are_clean(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run("init", store, "--model", "hashing:32")
    bad = run("add", store, "--file", tmp_path / "missing.png", ok=False)
    assert bad.returncode != 0 and "missing.png" in bad.stderr
    bad = run("add", store, "x", "--file", tmp_path, ok=False)
    assert bad.returncode != 0
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    bad = run("add", store, "x", "--file", f, "--content-type", "not a type", ok=False)
    assert bad.returncode != 0 and "content_type" in bad.stderr
    assert run("add", store, "x", "--content-type", "image/png", ok=False).returncode != 0
    assert run("add", store, ok=False).returncode != 0
    text = run_json("add", store, "plain")
    bad = run("get", store, text["atom_id"], "--payload-out", tmp_path / "o", ok=False)
    assert bad.returncode != 0 and "no payload" in bad.stderr and not (tmp_path / "o").exists()
