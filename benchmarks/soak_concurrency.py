"""Concurrency soak: a writer killed at random moments, two read-only readers and ``verify`` in a loop.

Usage::

    .venv/bin/python benchmarks/soak_concurrency.py --minutes 20 [--seed 1] [--kills-per-store 25]

For a fixed time, on one store at a time:

* a **writer** process (``--role writer``) commits random adds, ``add_many`` batches,
  corrections, retractions, deletions, atom and subject erasures, and runs checkpoints (also
  automatic: a small ``checkpoint_bytes``), compactions (full and merge policy), re-indexes, and
  background index seals. It prints one JSON line per acknowledged transaction (and an intent
  line before each erasure, whose acknowledgement a kill can cut off);
* the parent SIGKILLs the writer after a random delay, checks every acknowledged transaction in
  the store (read-only, no repair), and starts the writer again;
* two **readers** (``--role reader``) ``refresh()``, ``search()``, ``get()`` and ``stats()`` in a
  loop (and reopen now and then); any exception that is not an ``AetherError`` is an *untyped
  error*; a refresh that moves back in transaction time is an *inconsistency*;
* a **verify** loop (``--role verify``) runs ``aether.verify`` over and over; a report with
  problems is a *false positive* (the store is healthy: the parent's checks and the final verify
  after a clean close say so); a *busy* report (a writer kept changing the files) is counted apart.

Every other store is encrypted (subject erasures destroy keys and purge at once there).
An *acknowledged* transaction is one whose API call returned (the writer printed its line in
full before the kill). It is *lost* if a check after a restart does not find it as of its
transaction time (an acknowledged erasure whose rows are visible again counts apart, as
*resurrected*); a store that no longer opens counts as lost too, and the soak goes on with a new
store. A writer that dies of an exception on its own (not the kill) is a *writer error*.

The report: kills, acknowledged transactions, lost ones, resurrected erasures, writer errors,
broken stores, untyped reader errors, inconsistencies, verify runs / busy / false positives.
Exits 1 unless lost, resurrected, writer errors, broken stores, untyped, inconsistent and false
positives are all 0. ``tests/test_reliability_soak.py`` runs a one-minute version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DIM = 16
SUBJECTS = [f"user{i}" for i in range(6)]
STOP_FILE = "STOP"


def _emb() -> Any:
    import aether

    return aether.HashingEmbedder(dim=DIM)


# ---------------------------------------------------------------------------------------- writer
def _writer(store: str) -> None:
    import aether
    from aether.index import load_recipe, use_recipe
    from tests.crash_child import _us, _when  # the crash harness's time helpers

    line = sys.stdin.readline()  # started ahead as a spare: imports done, waiting for its turn
    if not line.strip():
        return
    seed = int(line)
    rng = random.Random(seed)
    mem = aether.open(store, embedder=_emb(), checkpoint_bytes=16_384)
    # Small partitions sealed in the background: index publications race commits and compactions.
    use_recipe(mem._engine, load_recipe().with_overrides(
        partition_rows=96, tail_rows=32, background=True,
        tiers=[{"name": "flat", "max_rows": None, "factory": "Flat"}], planner={"exact_rows": 8},
    ))
    eng = mem._engine
    t = eng.table
    n = eng.snapshot.n
    live: dict[str, str] = {}  # atom -> subject, of atoms not erased
    for r in range(n):
        if not t.dead[r]:
            txt = t.text(r)
            live[txt["atom_id"]] = txt["subject"]
    out = sys.stdout

    def emit(rec: dict[str, Any]) -> None:
        out.write(json.dumps(rec) + "\n")
        out.flush()

    emit({"ready": eng.snapshot.last_seq})
    weights = {"add": 30, "many": 18, "correct": 14, "retract": 7, "delete": 4, "erase_atom": 3,
               "erase_subject": 1.5, "checkpoint": 4, "compact": 1.2, "merge": 1.2, "reindex": 0.4}
    kinds, w = list(weights), list(weights.values())
    i = 0
    while True:
        i += 1
        kind = rng.choices(kinds, w)[0]
        if kind not in ("add", "many", "checkpoint", "compact", "merge", "reindex") and not live:
            kind = "add"
        rec: dict[str, Any] = {"op": kind}
        if kind == "checkpoint":
            mem.checkpoint()
            continue
        if kind == "compact":
            mem.compact()
            continue
        if kind == "merge":
            mem.compact(merge_below=rng.choice([64, 512, 4096]))
            continue
        if kind == "reindex":
            mem.reindex(embedder=_emb())
            continue
        if kind == "add":
            vf = _when(rng)
            subject = rng.choice(SUBJECTS)
            content = f"fact {seed}-{i} " + rng.choice(["alpha", "beta", "gamma", "délta", "זה"])
            a = mem.add(content, tags={"kind": "single"}, valid_from=vf, subject=subject)
            live[a.atom_id] = subject
            rec.update(atom=a.atom_id, content=content, at=_us(vf), subject=subject)
        elif kind == "many":
            k = rng.randrange(2, 7)
            batch = f"{seed}-{i}"
            subject = rng.choice(SUBJECTS)
            ids = mem.add_many([
                {"content": f"batch {batch} item {j} " + "x" * rng.randrange(0, 200), "subject": subject,
                 "tags": {"batch": batch, "n": k}, "valid_from": _when(rng)}
                for j in range(k)
            ])
            live.update((a, subject) for a in ids)
            rec.update(batch=batch, n=k, ids=ids, subject=subject)
        elif kind == "correct":
            aid = rng.choice(list(live))
            vf = _when(rng)
            content = f"corrected {seed}-{i}"
            mem.correct(aid, content, valid_from=vf)
            rec.update(atom=aid, content=content, at=_us(vf), subject=live[aid])
        elif kind == "retract":
            aid = rng.choice(list(live))
            at = _when(rng)
            mem.retract(aid, at=at)
            rec.update(atom=aid, at=_us(at), subject=live[aid])
        elif kind == "delete":
            aid = rng.choice(list(live))
            mem.delete(aid)
            rec.update(atom=aid, subject=live[aid])
        elif kind == "erase_atom":
            aid = rng.choice(list(live))
            emit({"intent": "erase_atom", "atom": aid})
            mem.erase(atom_id=aid)
            live.pop(aid)
            rec.update(atom=aid)
        else:
            subject = rng.choice(SUBJECTS)
            emit({"intent": "erase_subject", "subject": subject})
            mem.erase(subject=subject)
            for gone in [x for x, s in live.items() if s == subject]:
                live.pop(gone)
            rec.update(subject=subject)
        snap = eng.snapshot
        rec.update(seq=snap.last_seq, tx=snap.last_tx)
        emit(rec)


# ---------------------------------------------------------------------------------------- reader
def _reader(store: str, seed: int, report: str) -> None:
    import numpy as np

    import aether

    rng = random.Random(seed)
    root = Path(store)
    stats: dict[str, Any] = {"refreshes": 0, "searches": 0, "opens": 0, "typed_errors": 0, "untyped_errors": 0,
                             "inconsistent": 0, "typed_kinds": {}, "samples": []}
    mem: Any = None
    last_seq = -1
    q = np.ones(DIM, np.float32)
    while not (root.parent / STOP_FILE).exists():
        try:
            if mem is None or rng.random() < 0.02:
                if mem is not None:
                    mem.close()
                mem = None
                mem = aether.open(store, embedder=_emb(), read_only=True)
                stats["opens"] += 1
                last_seq = -1
            mem.refresh()
            stats["refreshes"] += 1
            seq = mem.stats().transactions
            if seq < last_seq:
                stats["inconsistent"] += 1
                stats["samples"].append(f"refresh went back from seq {last_seq} to {seq}")
            last_seq = seq
            hits = mem.search(q if rng.random() < 0.5 else "fact alpha", k=5)
            stats["searches"] += 1
            if hits:
                mem.get(hits[0].atom.atom_id)
                mem.history(hits[0].atom.atom_id)
        except aether.AetherError as exc:
            stats["typed_errors"] += 1
            kinds = stats["typed_kinds"]
            kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
            time.sleep(0.01)
        except Exception:  # the point of the soak: anything untyped is a bug
            stats["untyped_errors"] += 1
            if len(stats["samples"]) < 10:
                stats["samples"].append(traceback.format_exc()[-1500:])
            mem = None
    if mem is not None:
        mem.close()
    Path(report).write_text(json.dumps(stats))


# ---------------------------------------------------------------------------------------- verify
def _verifier(store: str, report: str) -> None:
    import aether

    root = Path(store)
    stats: dict[str, Any] = {"runs": 0, "ok": 0, "busy": 0, "false_positives": 0, "errors": 0, "samples": []}
    while not (root.parent / STOP_FILE).exists():
        if not (root / "MANIFEST.json").exists():
            time.sleep(0.05)
            continue
        try:
            r = aether.verify(root, key=os.environ.get("SOAK_KEY") or None)
        except Exception:
            stats["errors"] += 1
            if len(stats["samples"]) < 10:
                stats["samples"].append(traceback.format_exc()[-1500:])
            continue
        stats["runs"] += 1
        time.sleep(0.02)  # leave the CPU to the writer now and then
        if r.ok:
            stats["ok"] += 1
        elif r.busy:
            stats["busy"] += 1
        else:
            stats["false_positives"] += 1
            if len(stats["samples"]) < 10:
                stats["samples"].append("; ".join(str(p) for p in r.problems)[:1500])
    Path(report).write_text(json.dumps(stats))


# ---------------------------------------------------------------------------------------- parent
class Store:
    """One store's acknowledged transactions, erasures and counters (checked after each kill)."""

    def __init__(self, path: Path, key: bytes | None) -> None:
        self.path = path
        self.key = key
        self.acks: list[dict[str, Any]] = []
        self.erasures: list[dict[str, Any]] = []  # acknowledged, or in flight at a kill
        self.seen_seq = 0
        self.lost = 0
        self.unacked_durable = 0
        #: acknowledged erasures whose rows were visible again after a restart
        self.resurrected = 0
        #: writer runs that died of an exception before their kill (a typed error on valid input)
        self.writer_errors = 0
        #: set when the store stopped opening (then no more kills are spent on it)
        self.broken = ""
        self.samples: list[str] = []

    def erased(self, a: dict[str, Any], atom: str, subject: str | None) -> bool:
        """Was ``atom`` (of ``subject``) erased by an erasure after ack ``a`` (or possibly, in flight)?"""
        for e in self.erasures:
            later = e.get("seq", 1 << 62) > a["seq"]
            if later and (e.get("atom") == atom or (subject and e.get("subject") == subject)):
                return True
        return False


def _ack_ok(st: Store, mem: Any, a: dict[str, Any]) -> bool:
    from tests.crash_child import _ack_present

    eng = mem._engine
    if a["op"] == "erase_atom":
        return not eng.atom_rows(a["atom"], eng.snapshot)
    if a["op"] == "erase_subject":
        return True  # checked by _erased_back; the acks of its atoms are excused below
    atoms = a.get("ids") or [a.get("atom")]
    if any(st.erased(a, x, a.get("subject")) for x in atoms):
        return True  # erased later: absent by design
    return bool(_ack_present(mem, a))


def _erased_back(mem: Any, a: dict[str, Any]) -> int:
    """Rows an acknowledged erasure removed that are visible again (0 when it held)."""
    import numpy as np

    from aether.security.erase import subject_rows

    eng = mem._engine
    t = eng.table
    if a["op"] == "erase_atom":
        return len(eng.atom_rows(a["atom"], eng.snapshot))
    rows = subject_rows(eng, a["subject"], eng.snapshot.n)
    return int(np.count_nonzero(~t.dead[rows] & (t.tx_from[rows] < a["tx"])))


def _check(st: Store, env: dict[str, str]) -> None:
    """Open the store read-only (no repair) and check every acknowledged transaction in it.

    A store that no longer opens counts as lost data (``st.broken``): the soak goes on with a
    fresh store instead of stopping.
    """
    import aether

    try:
        _check_open(st)
    except aether.AetherError as exc:
        st.broken = f"store no longer opens after a kill: {type(exc).__name__}: {exc}"
        st.lost += 1
        st.samples.append(st.broken)
        print(f"  {st.broken}", flush=True)


def _check_open(st: Store) -> None:
    import aether

    with aether.open(st.path, embedder=_emb(), read_only=True, key=st.key) as mem:
        snap = mem._engine.snapshot
        floor = max([st.seen_seq] + [a["seq"] for a in st.acks])
        if snap.last_seq not in (floor, floor + 1):
            st.lost += max(1, floor - snap.last_seq)
            print(f"  store at seq {snap.last_seq}, acknowledged/seen {floor}", flush=True)
        elif snap.last_seq > floor:
            st.unacked_durable += 1
        st.seen_seq = max(st.seen_seq, snap.last_seq)
        missing = [a for a in st.acks if not _ack_ok(st, mem, a)]
        if missing:
            st.lost = max(st.lost, len(missing))
            st.samples.append(f"lost: {missing[:3]}")
            print(f"  LOST {len(missing)}: {missing[:3]}", flush=True)
        back = [a for a in st.acks if a["op"] in ("erase_atom", "erase_subject") and _erased_back(mem, a)]
        if back:
            st.resurrected = max(st.resurrected, len(back))
            st.samples.append(f"erased rows back: {back[:3]}")
            print(f"  ERASED ROWS BACK after {len(back)} erasures: {back[:3]}", flush=True)


def _spawn(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env, cwd=str(REPO), **kw)


def run(minutes: float, seed: int, kills_per_store: int, max_run_s: float, out: Any = sys.stdout) -> dict[str, Any]:
    """Run the soak for ``minutes``; returns the totals (see the module docstring)."""
    from aether.security.keys import encode_key, generate_key

    rng = random.Random(seed)
    totals: dict[str, Any] = {"stores": 0, "kills": 0, "acknowledged": 0, "lost": 0, "unacked_committed": 0,
                              "reader_refreshes": 0, "reader_searches": 0, "reader_typed_errors": 0,
                              "resurrected_erasures": 0, "writer_errors": 0, "broken_stores": 0,
                              "reader_typed_kinds": {},
                              "untyped_reader_errors": 0, "inconsistent_reads": 0, "verify_runs": 0,
                              "verify_busy": 0, "verify_false_positives": 0, "verify_errors": 0, "samples": []}
    deadline = time.time() + minutes * 60
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="aether-soak-cc-") as tmp:
        s_i = 0
        while time.time() < deadline:
            work = Path(tmp) / f"w{s_i}"
            work.mkdir()
            key = generate_key() if (s_i + seed) % 2 else None  # every other store encrypted
            st = Store(work / "store", key)
            env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
            env.pop("AETHER_KEY_FILE", None)
            if key is not None:
                env["AETHER_KEY"] = env["SOAK_KEY"] = encode_key(key)
            else:
                env.pop("AETHER_KEY", None)
                env.pop("SOAK_KEY", None)
            side = [
                _spawn(["--role", "reader", str(st.path), str(rng.randrange(1 << 30)), str(work / f"r{j}.json")], env)
                for j in range(2)
            ] + [_spawn(["--role", "verify", str(st.path), "0", str(work / "v.json")], env)]
            kills = 0
            spare = _spare_writer(st, env)
            try:
                while kills < kills_per_store and time.time() < deadline and not st.broken:
                    proc, spare = spare, _spare_writer(st, env)
                    t_a = time.time()
                    killed = _one_kill(st, proc, rng, max_run_s)
                    t_b = time.time()
                    kills += killed
                    if st.writer_errors > 5:
                        st.broken = "the writer keeps failing on its own"
                    _check(st, env)
                    if os.environ.get("SOAK_TIMING"):
                        print(f"    kill {t_b - t_a:.2f}s check {time.time() - t_b:.2f}s", file=out, flush=True)
            finally:
                spare.kill()
                spare.wait()
                (work / STOP_FILE).write_text("stop")
                for p in side:
                    try:
                        p.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            # A clean close by one more writer run, then the store must verify clean.
            final = ""
            if not st.broken:
                w = _spawn(["--role", "close", str(st.path), "0", "0"], env, stdout=subprocess.DEVNULL)
                w.wait(timeout=300)
                final = _final_verify(st)
            totals["stores"] += 1
            totals["kills"] += kills
            totals["acknowledged"] += len(st.acks)
            totals["lost"] += st.lost
            totals["unacked_committed"] += st.unacked_durable
            totals["resurrected_erasures"] += st.resurrected
            totals["writer_errors"] += st.writer_errors
            totals["broken_stores"] += bool(st.broken)
            totals["samples"] += st.samples[:3]
            for j in range(2):
                r = _load(work / f"r{j}.json", {"untyped_errors": 1, "samples": ["reader died"]})
                totals["reader_refreshes"] += r.get("refreshes", 0)
                totals["reader_searches"] += r.get("searches", 0)
                totals["reader_typed_errors"] += r.get("typed_errors", 0)
                totals["untyped_reader_errors"] += r.get("untyped_errors", 0)
                totals["inconsistent_reads"] += r.get("inconsistent", 0)
                for k_, v_ in r.get("typed_kinds", {}).items():
                    totals["reader_typed_kinds"][k_] = totals["reader_typed_kinds"].get(k_, 0) + v_
                totals["samples"] += r.get("samples", [])[:3]
            v = _load(work / "v.json", {"errors": 1, "samples": ["verify loop died"]})
            totals["verify_runs"] += v.get("runs", 0)
            totals["verify_busy"] += v.get("busy", 0)
            totals["verify_false_positives"] += v.get("false_positives", 0)
            totals["verify_errors"] += v.get("errors", 0)
            totals["samples"] += v.get("samples", [])[:3]
            if final:
                totals["lost"] += 1
                totals["samples"].append("final verify: " + final)
            print(f"  store {s_i} ({'encrypted' if key else 'plain'}): {kills} kills, {len(st.acks)} acknowledged, "
                  f"lost {st.lost}; {time.time() - t0:.0f}s", file=out, flush=True)
            s_i += 1
    totals["elapsed_s"] = round(time.time() - t0)
    return totals


def _load(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return default


def _final_verify(st: Store) -> str:
    import aether

    r = aether.verify(st.path, key=st.key)
    return "" if r.ok else "; ".join(str(p) for p in r.problems)[:1500] or "busy"


def _spare_writer(st: Store, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return _spawn(["--role", "writer", str(st.path)], env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)


def _one_kill(st: Store, proc: subprocess.Popen[bytes], rng: random.Random, max_run_s: float) -> bool:
    """Let the (spare) writer ``proc`` run, SIGKILL it at a random moment, collect its acknowledgements.

    Returns whether the kill ended it (``False``: it had died on its own, counted in ``st``).
    """
    import threading

    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(f"{rng.randrange(1 << 30)}\n".encode())
    proc.stdin.flush()
    lines: list[bytes] = []
    first_ack = threading.Event()
    err: list[bytes] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if b'"op"' in line:
                first_ack.set()
        first_ack.set()  # it ended (died before committing): no point waiting

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    te = threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else b""), daemon=True)
    te.start()
    # The kill comes at a random moment once the writer is committing (its start-up is not the point).
    first_ack.wait(60)
    if proc.poll() is None:
        time.sleep(rng.uniform(0.0, max_run_s))
        proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    th.join(60)
    te.join(60)
    killed = proc.returncode == -signal.SIGKILL
    if not killed:
        # It died on its own (an exception on a valid operation): a bug, counted; what it had
        # acknowledged before is still checked.
        st.writer_errors += 1
        st.samples.append(f"writer exited with {proc.returncode} before the kill:\n{b''.join(err).decode()[-1500:]}")
    for raw in lines:
        line = raw.decode()
        if not line.endswith("\n") or '"ready"' in line:
            continue  # cut by the kill: never acknowledged
        rec = json.loads(line)
        if "intent" in rec:
            st.erasures.append({"atom": rec.get("atom"), "subject": rec.get("subject")})  # in flight: any seq
            continue
        if rec["op"] in ("erase_atom", "erase_subject"):
            st.erasures.pop()  # the intent it confirms: now with its seq
            st.erasures.append(rec)
        st.acks.append(rec)
    return killed


def _close_only(store: str) -> None:
    import aether

    aether.open(store, embedder=_emb()).close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", default="parent", choices=["parent", "writer", "reader", "verify", "close"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kills-per-store", type=int, default=25)
    ap.add_argument("--max-run-s", type=float, default=1.5, help="longest a writer runs before its kill")
    a = ap.parse_args()
    if a.role == "writer":
        _writer(a.args[0])
        return 0
    if a.role == "reader":
        _reader(a.args[0], int(a.args[1]), a.args[2])
        return 0
    if a.role == "verify":
        _verifier(a.args[0], a.args[2])
        return 0
    if a.role == "close":
        _close_only(a.args[0])
        return 0
    totals = run(a.minutes, a.seed, a.kills_per_store, a.max_run_s)
    samples = totals.pop("samples")
    print("soak:", " ".join(f"{k}={v}" for k, v in totals.items()))
    for s in samples[:10]:
        print("---", s)
    bad = totals["lost"] or totals["untyped_reader_errors"] or totals["inconsistent_reads"]
    bad = bad or totals["verify_false_positives"] or totals["verify_errors"]
    bad = bad or totals["resurrected_erasures"] or totals["writer_errors"] or totals["broken_stores"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
