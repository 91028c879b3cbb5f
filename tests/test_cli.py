"""The ``aether`` CLI through its real entry point (``python -m aether`` in a subprocess).

Most calls go in-process through ``aether.cli.main`` (what the console script runs); the tests in the
last section start real ``python -m aether`` subprocesses. Every store uses ``--model hashing:32``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aether.cli import main
from aether.cli._core import parse_tag_value, parse_tags, parse_time
from aether.errors import InvalidInputError, InvalidTagError, NaiveDatetimeError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "NO_COLOR": "1"}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str | Path, ok: bool = True, subprocess_: bool = False) -> Result:
    """Run ``aether ARGS``: in a real subprocess (``python -m aether``), or in-process through the same
    ``aether.cli.main`` the console script calls (process start-up costs seconds on a loaded machine)."""
    argv = [str(a) for a in args]
    if subprocess_:
        proc = subprocess.run(
            [sys.executable, "-m", "aether", *argv], capture_output=True, text=True, env=ENV, timeout=120
        )
        res = Result(proc.returncode, proc.stdout, proc.stderr)
    else:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        old_argv, old_cols = sys.argv, os.environ.get("COLUMNS")
        sys.argv = ["aether", *argv]
        os.environ["COLUMNS"] = "200"
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = old_argv
            if old_cols is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = old_cols
        res = Result(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in res.stderr, res.stderr
    if ok:
        assert res.returncode == 0, res.stderr
    return res


def run_json(*args: str | Path) -> Any:
    return json.loads(run(*args, "--json").stdout)


def fail(code: int, *args: str | Path, subprocess_: bool = False) -> str:
    """Run a command that must fail with ``code`` and print exactly one line on stderr; return that line."""
    proc = run(*args, ok=False, subprocess_=subprocess_)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert err and "\n" not in err, proc.stderr
    return err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "store"
    info = run_json("init", path, "--model", "hashing:32")
    assert info == {"path": str(path), "model": "hashing:v1:dim=32", "dim": 32, "created": True}
    return path


# ---------------------------------------------------------------- pure parsing helpers (in-process)


def test_parse_time_forms() -> None:
    assert parse_time("2024-03-01") == datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_time("2024-03-01T12:00:00Z") == datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert parse_time("2024-03-01T14:00:00+02:00") == datetime(2024, 3, 1, 12, tzinfo=UTC)
    with pytest.raises(NaiveDatetimeError):
        parse_time("2024-03-01T12:00:00")
    with pytest.raises(InvalidInputError):
        parse_time("2024-13-01")
    with pytest.raises(InvalidInputError):
        parse_time("yesterday")


def test_parse_tags() -> None:
    assert parse_tags(["n=3", "x=1.5", "b=true", "s=abc", 'q="42"', "e=", "j=[1]", "eq=a=b"]) == {
        "n": 3, "x": 1.5, "b": True, "s": "abc", "q": "42", "e": "", "j": "[1]", "eq": "a=b",
    }
    assert parse_tag_value("null") == "null"
    for bad in ("novalue", "=v"):
        with pytest.raises(InvalidTagError):
            parse_tags([bad])


# ---------------------------------------------------------------- commands


def test_help_and_init_is_idempotent(store: Path) -> None:
    out = run("--help").stdout
    for cmd in ("init", "add", "import", "search", "get", "history", "stats", "demo"):
        assert cmd in out
    assert run_json("init", store)["created"] is False
    err = fail(1, "init", store, "--model", "hashing:16")
    assert "ModelMismatchError" in err


def test_add_get_search_by_valid_time_and_as_of(store: Path) -> None:
    a1 = run_json("add", store, "Alice lives in Paris", "--atom-id", "alice-home", "--valid-from", "2023-01-01",
                  "--tag", "user=alice", "--tag", "n=3", "--tag", "vip=true", "--tag", 'code="42"')
    assert a1["atom_id"] == "alice-home"
    assert a1["tags"] == {"user": "alice", "n": 3, "vip": True, "code": "42"}
    assert a1["valid_from"] == "2023-01-01T00:00:00+00:00" and a1["valid_to"] is None
    t1 = a1["tx_from"]
    # a later write of the same atom: Lyon from 2024-06 on; Paris is cut there
    run_json("add", store, "Alice lives in Lyon", "--atom-id", "alice-home", "--valid-from", "2024-06-01T00:00:00Z",
             "--tag", "user=alice")

    def top(*opts: str) -> str:
        doc = run_json("search", store, "where does alice live?", "-k", "1", *opts)
        return str(doc["hits"][0]["atom"]["content"]) if doc["hits"] else ""

    assert top("--valid-at", "2023-06-01") == "Alice lives in Paris"
    assert top("--valid-at", "2025-01-01T00:00:00+02:00") == "Alice lives in Lyon"
    assert top("--valid-at", "2025-01-01", "--as-of", t1) == "Alice lives in Paris"
    assert top("--valid-at", "2025-01-01", "--tag", "user=bob") == ""

    doc = run_json("search", store, "alice", "--valid-at", "2023-06-01", "--tag", "user=alice")
    assert doc["query"] == "alice" and doc["k"] == 10 and doc["tags"] == {"user": "alice"}
    assert doc["valid_at"] == "2023-06-01T00:00:00+00:00" and doc["as_of"] is None
    assert isinstance(doc["hits"][0]["score"], float)

    got = run_json("get", store, "alice-home", "--valid-at", "2023-06-01")
    assert got["content"] == "Alice lives in Paris" and got["valid_to"] == "2024-06-01T00:00:00+00:00"
    assert run_json("get", store, "alice-home", "--valid-at", "2025-01-01", "--as-of", t1)["content"] == (
        "Alice lives in Paris"
    )
    # before the fact held: nothing; --json prints null and exits 1
    proc = run("get", store, "alice-home", "--valid-at", "2020-01-01", "--json", ok=False)
    assert proc.returncode == 1 and json.loads(proc.stdout) is None

    hist = run_json("history", store, "alice-home")
    assert [h["content"] for h in hist] == ["Alice lives in Paris", "Alice lives in Paris", "Alice lives in Lyon"]
    assert hist[0]["tx_to"] is not None and hist[1]["tx_to"] is None
    assert [h["tx_from"] for h in hist] == sorted(h["tx_from"] for h in hist)

    # the table forms print and exit 0
    assert "Alice lives in Paris" in run("search", store, "alice", "--valid-at", "2023-06-01").stdout
    assert "alice-home" in run("get", store, "alice-home", "--valid-at", "2023-06-01").stdout
    assert "Lyon" in run("history", store, "alice-home").stdout
    assert "hashing:v1:dim=32" in run("stats", store).stdout
    assert "alice-tea" in run("add", store, "Alice likes tea", "--atom-id", "alice-tea").stdout
    tea = run_json("add", store, "Alice likes green tea", "--atom-id", "alice-tea", "--subject", "alice",
                   "--metadata", '{"source": "chat", "turn": 7}')
    assert tea["subject"] == "alice" and tea["metadata"] == {"source": "chat", "turn": 7}


def test_import_jsonl_is_one_transaction(store: Path, tmp_path: Path) -> None:
    before = run_json("stats", store)
    lines = [
        {"content": "Bob lives in Lisbon", "atom_id": "bob-home", "valid_from": "2023-01-01",
         "valid_to": "2024-02-01", "tags": {"user": "bob"}},
        {"content": "Bob lives in Porto", "atom_id": "bob-home", "valid_from": "2024-02-01T00:00:00Z",
         "tags": {"user": "bob"}, "metadata": {"source": "hr"}},
        {"content": "Bob likes coffee", "subject": "bob"},
    ]
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    doc = run_json("import", store, f)
    assert doc["imported"] == 3 and doc["atom_ids"][:2] == ["bob-home", "bob-home"]
    after = run_json("stats", store)
    assert after["transactions"] == before["transactions"] + 1
    assert after["versions"] == before["versions"] + 3
    got = run_json("get", store, "bob-home", "--valid-at", "2024-03-01")
    assert got["content"] == "Bob lives in Porto" and got["metadata"] == {"source": "hr"}
    assert "Imported 3" in run("import", store, f).stdout


@pytest.mark.parametrize(
    ("body", "line", "word"),
    [
        ('{"content": "ok"}\n{"content": oops}\n', 2, "malformed JSON"),
        ('{"content": "ok"}\n\n[1]\n', 3, "JSON object"),
        ('{"content": "ok"}\n{"content": "x", "colour": "red"}\n', 2, "unknown keys"),
        ('{"content": "ok"}\n{"tags": {}}\n', 2, "content"),
        ('{"content": "ok"}\n{"content": "x", "valid_from": "2024-01-01T10:00"}\n', 2, "no timezone"),
        ('{"content": "ok"}\n{"content": "x", "tags": {"a": [1]}}\n', 2, "tag"),
        ('{"content": "ok"}\n{"content": "x", "valid_from": "2024-02-01", "valid_to": "2024-01-01"}\n', 2, "valid_to"),
    ],
)
def test_import_bad_line_writes_nothing(store: Path, tmp_path: Path, body: str, line: int, word: str) -> None:
    before = run_json("stats", store)["versions"]
    f = tmp_path / "bad.jsonl"
    f.write_text(body)
    err = fail(2, "import", store, f, "--atomic")  # without --atomic bad lines are skipped and reported
    assert f"line {line}" in err and word in err
    assert run_json("stats", store)["versions"] == before


def test_stats_json(store: Path) -> None:
    stats = run_json("stats", store)
    assert stats["model"] == "hashing:v1:dim=32" and stats["dim"] == 32
    assert stats["versions"] >= stats["atoms_current"] >= 1
    assert stats["path"] == str(store)


def test_user_errors_are_one_line(store: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert "aether init" in fail(1, "search", missing, "q")
    assert not missing.exists()  # reads never create a store
    assert "aether init" in fail(1, "add", missing, "text")
    assert "no such file" in fail(2, "import", store, tmp_path / "missing.jsonl")
    assert "no timezone" in fail(2, "search", store, "q", "--valid-at", "2024-01-01T10:00:00")
    assert "not a valid date" in fail(2, "search", store, "q", "--as-of", "2024-13-01")
    assert "ISO-8601" in fail(2, "get", store, "alice-home", "--valid-at", "soon")
    assert "KEY=VALUE" in fail(2, "search", store, "q", "--tag", "novalue")
    assert "KEY=VALUE" in fail(2, "add", store, "x", "--tag", "=v")
    assert "-k" in fail(2, "search", store, "q", "-k", "0")
    assert "malformed JSON" in fail(2, "add", store, "x", "--metadata", "{oops")
    assert "JSON object" in fail(2, "add", store, "x", "--metadata", "[1]")
    assert "valid_to" in fail(2, "add", store, "x", "--valid-from", "2024-02-01", "--valid-to", "2024-01-01")
    assert "no such atom" in fail(1, "get", store, "no-such-atom")
    assert "AtomNotFoundError" in fail(1, "history", store, "no-such-atom")
    assert "unknown model" in fail(1, "init", tmp_path / "s2", "--model", "no-such-model")
    assert not (tmp_path / "s2").exists()


def test_demo_refuses_to_delete_a_non_store(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    assert "not an aether store" in fail(1, "demo", precious, "--reset")
    assert "--reset" in fail(1, "demo", precious)
    assert (precious / "thesis.txt").read_text() == "do not delete"


# ---------------------------------------------------------------- real subprocesses


def test_subprocess_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub"
    assert "search" in run("--help", subprocess_=True).stdout
    assert "Created store" in run("init", path, "--model", "hashing:32", subprocess_=True).stdout
    f = tmp_path / "in.jsonl"
    f.write_text('{"content": "Carol leads the platform team", "valid_from": "2024-01-01", "atom_id": "c"}\n')
    assert "Imported 1" in run("import", path, f, subprocess_=True).stdout
    doc = json.loads(run("search", path, "who leads platform?", "--valid-at", "2024-06-01",
                         "--json", subprocess_=True).stdout)
    assert doc["hits"][0]["atom"]["atom_id"] == "c"


def test_subprocess_errors_are_one_line(tmp_path: Path) -> None:
    assert "aether init" in fail(1, "stats", tmp_path / "none", subprocess_=True)
    assert "no timezone" in fail(2, "search", tmp_path / "none", "q", "--valid-at", "2024-01-01T10:00",
                                 subprocess_=True)
