"""Bad input through the API, the CLI and ``import``: a typed error, and the store unchanged.

Hypothesis draws wrong vector sizes, NaN/inf, empty and oversized content, naive and
out-of-range datetimes, inverted intervals, unknown ids, invalid tags and metadata, malformed
JSON(L) and odd Unicode. Every call must raise an ``AetherError`` (never a bare exception)
and leave the store exactly as it was: a full dump of every atom's history, the last
transaction and the WAL's size are compared before and after. Valid odd Unicode (RTL, emoji,
NUL, combining marks) must be accepted and round-trip through the WAL and a reopen.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aether
from aether.errors import AetherError

DIM = 8
LIMIT = 2000  # max_content_bytes of the test store (the default is 1 MiB; configurable)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
STATS = {"api_tried": 0, "api_rejected": 0, "cli_tried": 0, "cli_rejected": 0, "decoder_inputs": 0}
_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


class Store:
    """A small store shared by the examples, with its state fingerprint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mem = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), max_content_bytes=LIMIT)
        self.ids = self.mem.add_many(
            [{"content": f"known fact {i}", "tags": {"g": i}, "valid_from": T0} for i in range(5)]
        )

    def fingerprint(self) -> Any:
        eng = self.mem._engine
        wal = eng._wal
        versions = [
            (v.atom_id, v.version_id, v.content.inline, sorted(v.tags.items()), v.metadata, v.valid_from,
             v.valid_to, v.tx_from, v.tx_to)
            for aid in sorted(eng.table.atom_index)
            for v in self.mem.history(aid)
        ]
        return versions, eng.snapshot.last_seq, wal.size() if wal is not None else 0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(tmp_path_factory.mktemp("bad") / "s")
    yield s
    s.mem.close()


# ------------------------------------------------------------------------------- bad values
lone_surrogate = st.sampled_from(["\ud800", "a\udfffb", "\udc80tail"])
bad_vectors = st.one_of(
    st.integers(1, 20).filter(lambda n: n != DIM).map(lambda n: np.ones(n, np.float32)),
    st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda x: np.r_[np.ones(DIM - 1), x]),
    st.just(np.zeros(DIM)),
    st.just(np.ones((2, DIM))),
    st.just(np.ones((1, 1, DIM))),
    st.just(["a"] * DIM),
    st.just("not a vector" * 0 + "x"),  # a str where an array is expected (not for search)
    st.just({"a": 1}),
)
bad_content = st.one_of(
    st.just(""),
    st.text(alphabet=" \t\n\r\u00a0\u2003", min_size=1, max_size=5).filter(lambda s: not s.strip()),
    st.integers(LIMIT + 1, LIMIT + 50).map(lambda n: "x" * n),
    st.integers(LIMIT // 4 + 1, LIMIT // 2).map(lambda n: "😀" * n),  # 4 bytes each: over in bytes
    lone_surrogate,
    st.sampled_from([None, 5, b"bytes", ["list"], 3.5]),
)
naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
far = st.sampled_from([
    datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-14))),
])
bad_time = st.one_of(
    naive,
    naive.map(lambda d: d.isoformat()),  # a string without an offset
    far,
    st.sampled_from(["yesterday", "2024-13-01T00:00:00+00:00", "2024-01-01T25:00+00:00", "", "\x00", 12345,
                     "+275760-09-13T00:00:00Z"]),
)
bad_tags = st.one_of(
    st.sampled_from([[("a", 1)], "a=1", 5]),
    st.dictionaries(st.just("k"), st.one_of(st.just(None), st.lists(st.integers(), max_size=2),
                                            st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
                                            st.sampled_from([math.nan, math.inf]), st.just(b"b")), min_size=1),
    st.dictionaries(st.one_of(st.just(""), st.integers(), st.just("k" * 300), lone_surrogate), st.just(1),
                    min_size=1),
    st.dictionaries(st.just("k"), lone_surrogate, min_size=1),
)
bad_metadata = st.one_of(
    st.sampled_from([[1], "text", 7]),
    st.dictionaries(st.just("m"), st.sampled_from([math.nan, math.inf, object(), {1, 2}, b"x"]), min_size=1),
    st.dictionaries(st.just("m"), lone_surrogate, min_size=1),
    st.dictionaries(lone_surrogate, st.just(1), min_size=1),
)
unknown_id = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40).map(lambda s: "nope-" + s)
bad_id = st.one_of(st.just(""), st.just("i" * 300), lone_surrogate, st.sampled_from([None, 5, ["x"]]))
quality = st.one_of(st.floats(allow_nan=True).filter(lambda q: not 0 <= q <= 1), st.sampled_from(["1", True]))


def _interval(draw: Any) -> tuple[datetime, datetime]:
    a = draw(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
    return a, a - draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=900)))


@st.composite
def bad_calls(draw: Any, ids: list[str]) -> tuple[str, Callable[[aether.Memory], Any]]:
    """One API call that must be refused."""
    kind = draw(st.sampled_from([
        "vector", "content", "time", "interval", "unknown", "tags", "metadata", "atom_id", "quality",
        "modality", "many", "search_vec", "search_time", "search_tags", "during", "k", "correct_bad",
    ]))
    if kind == "vector":
        v = draw(bad_vectors)
        return kind, lambda m: m.add("ok text", vector=v)
    if kind == "content":
        c = draw(bad_content)
        return kind, lambda m: m.add(c)
    if kind == "time":
        t, field = draw(bad_time), draw(st.sampled_from(["valid_from", "valid_to"]))
        return kind, lambda m: m.add("ok text", **{field: t})
    if kind == "interval":
        a, b = _interval(draw)
        return kind, lambda m: m.add("ok text", valid_from=a, valid_to=b)
    if kind == "unknown":
        aid, op = draw(unknown_id), draw(st.sampled_from(["correct", "retract", "delete"]))
        if op == "correct":
            return kind, lambda m: m.correct(aid, "new text")
        return kind, lambda m: getattr(m, op)(aid)
    if kind == "tags":
        tg = draw(bad_tags)
        return kind, lambda m: m.add("ok text", tags=tg)
    if kind == "metadata":
        md = draw(bad_metadata)
        return kind, lambda m: m.add("ok text", metadata=md)
    if kind == "atom_id":
        op = draw(st.sampled_from(["add", "correct", "retract", "delete"]))
        aid = draw(bad_id.filter(lambda a: a is not None) if op == "add" else bad_id)  # None: a new id
        if op == "add":
            return kind, lambda m: m.add("ok text", atom_id=aid)
        return kind, lambda m: (m.correct(aid, "x") if op == "correct" else getattr(m, op)(aid))
    if kind == "quality":
        q = draw(quality)
        return kind, lambda m: m.add("ok text", quality_score=q)
    if kind == "modality":
        mo = draw(st.sampled_from(["video?", "", None, 3]))
        return kind, lambda m: m.add("ok text", modality=mo)
    if kind == "many":
        # One bad item among good ones: the whole transaction is refused.
        bad = draw(st.sampled_from([
            {"content": ""}, {"content": "ok", "tags": {"k": None}},
            {"content": "ok", "valid_from": datetime(2020, 1, 1)},
            {"nocontent": 1}, {"content": "ok", "unknown_key": 1}, 42, {"content": "ok", "vector": [1.0]},
        ]))
        pos = draw(st.integers(0, 3))
        items: list[Any] = [{"content": f"good {i}"} for i in range(3)]
        items.insert(pos, bad)
        vecs = draw(st.sampled_from([None, np.ones((2, DIM)), np.full((4, DIM), np.nan)]))
        if vecs is not None:
            items = [{"content": "a"}, {"content": "b"}, {"content": "c"}, {"content": "d"}]
        return kind, lambda m: m.add_many(items, vectors=vecs)
    if kind == "search_vec":
        v = draw(bad_vectors.filter(lambda x: not isinstance(x, str)))
        return kind, lambda m: m.search(v)
    if kind == "search_time":
        t, field = draw(bad_time), draw(st.sampled_from(["valid_at", "as_of"]))
        return kind, lambda m: m.search("query", **{field: t})
    if kind == "search_tags":
        tg = draw(bad_tags)
        return kind, lambda m: m.search("query", tags=tg)
    if kind == "during":
        a, b = _interval(draw)
        d = draw(st.sampled_from([(a, b), (a,), "x", (a, b, a)]))
        return kind, lambda m: m.search("query", valid_during=d)
    if kind == "k":
        k = draw(st.sampled_from([0, -1, 1.5, "3", True, None]))
        return kind, lambda m: m.search("query", k=k)
    aid = draw(st.sampled_from(ids))
    bad = draw(st.sampled_from(["content", "vector", "tags", "interval"]))
    if bad == "content":
        c = draw(bad_content.filter(lambda x: x is not None))
        return kind, lambda m: m.correct(aid, c)
    if bad == "vector":
        v = draw(bad_vectors)
        return kind, lambda m: m.correct(aid, "new", vector=v)
    if bad == "tags":
        tg = draw(bad_tags)
        return kind, lambda m: m.correct(aid, "new", tags=tg)
    a, b = _interval(draw)
    return kind, lambda m: m.correct(aid, "new", valid_from=a, valid_to=b)


@given(data=st.data())
@_SETTINGS
def test_bad_api_calls_raise_typed_errors_and_change_nothing(store: Store, data: st.DataObject) -> None:
    kind, call = data.draw(bad_calls(store.ids))
    before = store.fingerprint()
    STATS["api_tried"] += 1
    with pytest.raises(AetherError):
        call(store.mem)
    STATS["api_rejected"] += 1
    assert store.fingerprint() == before, kind


ODD_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], codec="utf-8"), min_size=1, max_size=60
).filter(lambda s: bool(s.strip()))


@given(text=ODD_TEXT, tag=ODD_TEXT)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_odd_but_valid_unicode_round_trips(store: Store, text: str, tag: str) -> None:
    """RTL, emoji, NUL, combining marks, private use: accepted and stored exactly."""
    atom = store.mem.add(text, tags={"t": tag}, metadata={"m": text}, valid_from=T0)
    got = store.mem.get(atom.atom_id, valid_at=T0)
    assert got is not None and got.content.inline == text and got.tags["t"] == tag and got.metadata["m"] == text
    assert [h.atom.atom_id for h in store.mem.search(text, k=50, valid_at=T0)].count(atom.atom_id) == 1


def test_odd_unicode_survives_reopen(tmp_path: Path) -> None:
    texts = ["שלום עולם", "مرحبا", "emoji 🚀👩‍👩‍👧", "nul\x00inside", "e\u0301\u0308", "\u202eRTL override",
             "\uffff\U0010ffff"]
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM)) as mem:
        ids = mem.add_many([{"content": t, "tags": {"t": t}, "valid_from": T0} for t in texts])
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM)) as mem:
        for aid, t in zip(ids, texts, strict=True):
            got = mem.get(aid, valid_at=T0)
            assert got is not None and got.content.inline == t and got.tags == {"t": t}
        assert len(mem.search("x", k=50, valid_at=T0, tags={"t": texts[2]})) == 1


def test_content_limit_is_configurable(tmp_path: Path) -> None:
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM), max_content_bytes=10) as mem:
        mem.add("x" * 10)
        with pytest.raises(aether.errors.InvalidContentError, match="max_content_bytes"):
            mem.add("x" * 11)
    with aether.open(embedder=aether.HashingEmbedder(dim=DIM)) as mem:  # default: 1 MiB
        mem.add("x" * (1 << 20))
        with pytest.raises(aether.errors.InvalidContentError):
            mem.add("x" * ((1 << 20) + 1))


# ------------------------------------------------------------------------------- the CLI and import
def _cli(*argv: str) -> tuple[int, str]:
    """Run the CLI in-process through its real entry point; returns (exit code, stderr)."""
    from aether.cli import main

    err = io.StringIO()
    old = sys.argv
    sys.argv = ["aether", *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    return code, err.getvalue()


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("cli") / "s"
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM)) as mem:
        mem.add_many([f"known {i}" for i in range(3)])
    yield path


def _disk_fingerprint(path: Path) -> Any:
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), read_only=True) as mem:
        eng = mem._engine
        return eng.snapshot.last_seq, [
            (v.atom_id, v.version_id, v.content.inline, v.tx_to) for a in sorted(eng.table.atom_index)
            for v in mem.history(a)
        ]


bad_line = st.one_of(
    st.text(max_size=30).filter(lambda s: s.strip() and not s.strip().startswith("{")),  # not JSON / not an object
    st.sampled_from(['{"content": "x"', '{"content": }', "[1, 2]", '"str"', "null", "{'content': 'x'}",
                     '{"content": "x", "tags": {"k": [1]}}', '{"content": ""}', '{"tags": {}}',
                     '{"content": "x", "valid_from": "2024-01-01T00:00:00"}',
                     '{"content": "x", "valid_from": "2024-02-01T00:00:00+00:00", '
                     '"valid_to": "2024-01-01T00:00:00+00:00"}',
                     '{"content": "x", "vector": [1, 2]}', '{"content": "x", "vector": [NaN, 1, 1, 1, 1, 1, 1, 1]}',
                     '{"content": "x", "quality_score": 7}', '{"content": "x", "metadata": [1]}',
                     '{"content": "\\ud800"}', '{"content": "x", "bogus": 1}']),
)


@given(lines=st.lists(st.sampled_from(['{"content": "fine"}', '{"content": "also fine", "tags": {"a": 1}}']),
                      max_size=3),
       bad=bad_line, pos=st.integers(0, 3), atomic=st.booleans())
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_cli_import_of_bad_jsonl(cli_store: Path, tmp_path_factory: pytest.TempPathFactory,
                                 lines: list[str], bad: str, pos: int, atomic: bool) -> None:
    """``--atomic``: a bad line fails the import and nothing is written. Default: the bad line is
    skipped and reported by its line number; exactly the good lines are written."""
    f = tmp_path_factory.mktemp("jsonl") / "in.jsonl"
    good = len(lines)
    lines = list(lines)
    at = min(pos, len(lines))
    lines.insert(at, bad.replace("\n", " ").replace("\r", " "))
    f.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    seq0, before = _disk_fingerprint(cli_store)
    STATS["cli_tried"] += 1
    code, err = _cli("import", str(cli_store), str(f), *(["--atomic"] if atomic else []))
    assert "Traceback" not in err
    seq1, after = _disk_fingerprint(cli_store)
    if atomic:
        assert code != 0 and "error:" in err, (code, err)
        assert (seq1, after) == (seq0, before)
    else:
        assert code == 0 and f"line {at + 1}" in err, (code, err)
        assert len(after) - len(before) == good
    STATS["cli_rejected"] += 1


@pytest.mark.parametrize("argv", [
    ["add", "{store}", "   "],
    ["add", "{store}", "x", "--valid-from", "2024-01-01T00:00:00"],
    ["add", "{store}", "x", "--valid-from", "2024-02-01T00:00:00+00:00", "--valid-to", "2024-01-01T00:00:00+00:00"],
    ["add", "{store}", "x", "--valid-from", "not a time"],
    ["add", "{store}", "x", "--metadata", "{bad json"],
    ["add", "{store}", "x", "--metadata", "[1, 2]"],
    ["add", "{store}", "x", "--tag", "novalue"],
    ["add", "{store}", "x", "--atom-id", ""],
    ["search", "{store}", "q", "--as-of", "2024-01-01"],
    ["search", "{store}", "q", "--valid-at", "garbage"],
    ["search", "{store}", "q", "-k", "0"],
    ["get", "{store}", "no-such-atom", "--as-of", "2024-01-01T00:00:00"],
    ["history", "{store}", "no-such-atom", "--json"],
    ["import", "{store}", "/nonexistent/file.jsonl"],
    ["stats", "{store}/nope"],
])
def test_cli_bad_arguments_give_a_one_line_error(cli_store: Path, argv: list[str]) -> None:
    before = _disk_fingerprint(cli_store)
    STATS["cli_tried"] += 1
    code, err = _cli(*[a.replace("{store}", str(cli_store)) for a in argv])
    assert "Traceback" not in err
    if argv[0] == "history" and code == 0:
        pass  # an unknown id may print an empty history: not an error, and nothing written
    elif argv[0] == "search" and "--as-of" in argv and code == 0:
        pass  # a bare date is accepted by the CLI (documented); nothing written
    else:
        assert code != 0, (argv, err)
        STATS["cli_rejected"] += 1
    assert _disk_fingerprint(cli_store) == before


# ------------------------------------------------------------------------------- decoder fuzzing
@given(data=st.binary(max_size=600))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_wal_scan_and_decode_raise_only_typed_errors(data: bytes) -> None:
    from aether.storage.wal import MAGIC, decode_payload, scan_frames

    STATS["decoder_inputs"] += 2
    for blob in (data, MAGIC + data):
        try:
            frames, _ = scan_frames(Path("fuzz.wal"), blob)
            for off, payload in frames:
                decode_payload(payload, Path("fuzz.wal"), off)
        except AetherError:
            pass
    with contextlib.suppress(AetherError):
        decode_payload(data, Path("fuzz.wal"), 0)


@st.composite
def wal_files(draw: Any) -> bytes:
    """Structurally plausible WAL files: valid frames around garbage, flips and cuts."""
    import struct

    import crc32c

    from aether.storage.wal import MAGIC

    def frame(payload: bytes) -> bytes:
        return struct.pack("<II", len(payload), crc32c.crc32c(payload)) + payload

    out = bytearray(MAGIC)
    for _ in range(draw(st.integers(0, 4))):
        hdr = json.dumps(draw(st.one_of(
            st.fixed_dictionaries({"seq": st.integers(-2, 5), "tx": st.integers(), "close": st.lists(
                st.lists(st.integers(), max_size=3), max_size=2)}),
            st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3),
        ))).encode()
        body = draw(st.binary(max_size=40))
        out += frame(struct.pack("<I", len(hdr)) + hdr + body)
    if out and draw(st.booleans()):
        i = draw(st.integers(0, len(out) - 1))
        out[i] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out)


@given(blob=wal_files())
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_structured_wal_records(blob: bytes) -> None:
    from aether.storage.wal import decode_payload, scan_frames

    STATS["decoder_inputs"] += 1
    try:
        frames, _ = scan_frames(Path("fuzz.wal"), blob)
        for off, payload in frames:
            header, _rows = decode_payload(payload, Path("fuzz.wal"), off)
            assert isinstance(header["seq"], int) and isinstance(header["tx"], int)
    except AetherError:
        pass


@given(data=st.binary(max_size=400) | st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")))
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_manifest_parse_raises_only_typed_errors(data: bytes) -> None:
    from aether.storage import manifest

    STATS["decoder_inputs"] += 1
    with contextlib.suppress(AetherError):
        manifest.parse(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@given(body=st.dictionaries(
    st.sampled_from(["format_version", "store_id", "model", "checkpoint", "segments", "closings", "index", "x"]),
    json_values, max_size=8))
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_manifest_with_valid_checksum(body: dict[str, Any]) -> None:
    """Even a correctly checksummed manifest of the wrong shape gives only typed errors on parse."""
    from aether.storage import checked_json, manifest

    doc = dict(body)
    doc["checksum"] = checked_json.checksum(body)
    STATS["decoder_inputs"] += 1
    with contextlib.suppress(AetherError):
        manifest.parse(json.dumps(doc).encode())


def test_manifest_parse_survives_deep_nesting() -> None:
    from aether.errors import CorruptionError
    from aether.storage import manifest

    with pytest.raises(CorruptionError):
        manifest.parse(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(CorruptionError):
        manifest.parse(b'{"checksum": 1, "a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")


def test_store_opening_garbage_files_gives_typed_errors(tmp_path: Path) -> None:
    """Not a store / not a manifest / a WAL that is not a WAL: typed errors at open."""
    p = tmp_path / "s"
    with aether.open(p, embedder=aether.HashingEmbedder(dim=DIM)) as mem:
        mem.add("x")
    (p / "wal" / ("9" * 20 + ".wal")).write_bytes(b"GARBAGE!" + os.urandom(64))
    with pytest.raises(AetherError):
        aether.open(p, embedder=aether.HashingEmbedder(dim=DIM))
    (p / "wal" / ("9" * 20 + ".wal")).unlink()
    (p / "MANIFEST.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(AetherError):
        aether.open(p, embedder=aether.HashingEmbedder(dim=DIM))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("hello")
    with pytest.raises(AetherError):
        aether.open(junk, embedder=aether.HashingEmbedder(dim=DIM))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nbad input: {STATS}")
