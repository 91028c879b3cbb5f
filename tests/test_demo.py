"""The shipped demo: its data set loads from the package, and its answers change with valid and transaction time."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

import aether
from aether.demo import Answer, DemoResult, load_dataset, run_demo
from aether.errors import StoreError

# Questions whose answers a hashing (word-overlap) embedder also gets right; the real model gets all.
HASHING_SAFE = {"platform-lead", "platform-lead-corrected", "bob-home", "bob-home-corrected", "helios-staff",
                "security-lead", "headcount", "berlin-office"}


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def _ok(a: Answer) -> bool:
    content = a.content or ""
    return (a.expect is None or a.expect in content) and (a.expect_not is None or a.expect_not not in content)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, str]:
    console = _quiet()
    path = tmp_path_factory.mktemp("demo") / "demo-store"
    result = run_demo(path, embedder=aether.HashingEmbedder(dim=64), console=console)
    assert isinstance(console.file, io.StringIO)
    return result, console.file.getvalue()


def test_dataset_ships_in_the_package() -> None:
    data = load_dataset()
    ops = [op for phase in data["phases"] for op in phase["ops"]]
    assert 40 <= len(ops) <= 80
    assert {op["op"] for op in ops} == {"add", "correct", "retract", "delete"}
    labels = {p["label"] for p in data["phases"]}
    for q in data["questions"]:
        assert {pt["as_of"] for pt in q["at"]} <= labels | {"latest"}


def test_phases_are_separate_transactions(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    times = list(result.phases.values())
    assert list(result.phases) == ["import", "hr-audit", "news"]
    assert times == sorted(times) and len(set(times)) == 3
    with aether.open(result.path, read_only=True) as mem:
        stats = mem.stats()
        assert stats.transactions >= 3
        assert stats.model == "hashing:v1:dim=64"
        # the corrected atom has superseded and current versions
        hist = mem.history("bob-home")
        assert any(a.tx_to is not None for a in hist) and any(a.tx_to is None for a in hist)


def test_answers_differ_by_valid_time(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    for qid in ("platform-lead", "bob-home", "headcount"):
        answers = [a for a in result.answers_for(qid) if a.as_of_label == "latest"]
        assert len({a.valid_at for a in answers}) >= 2
        assert len({a.content for a in answers}) == len(answers), answers
    lead = result.answers_for("platform-lead")
    assert "Alice" in (lead[0].content or "") and "Carol" in (lead[1].content or "")


def test_answers_differ_by_as_of(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    for qid in ("platform-lead-corrected", "bob-home-corrected", "security-lead", "helios-staff", "berlin-office"):
        answers = result.answers_for(qid)
        past = next(a for a in answers if a.as_of_label != "latest")
        now = next(a for a in answers if a.as_of_label == "latest")
        assert past.valid_at == now.valid_at and past.as_of is not None and now.as_of is None
        assert past.content != now.content, (qid, past, now)
    bob = result.answers_for("bob-home-corrected")
    assert "Lisbon" in (bob[0].content or "") and "Porto" in (bob[1].content or "")


def test_expected_answers_with_hashing(demo: tuple[DemoResult, str]) -> None:
    result, out = demo
    wrong = [a for a in result.answers if a.question_id in HASHING_SAFE and not _ok(a)]
    assert not wrong
    assert "Who leads the platform team?" in out and "Bob Silva lives in Porto." in out


def test_reset_rules(demo: tuple[DemoResult, str], tmp_path: Path) -> None:
    result, _ = demo
    with pytest.raises(StoreError, match="--reset"):
        run_demo(result.path, embedder=aether.HashingEmbedder(dim=64), console=_quiet())
    other = tmp_path / "not-a-store"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(StoreError, match="not an aether store"):
        run_demo(other, reset=True, embedder=aether.HashingEmbedder(dim=64), console=_quiet())
    assert (other / "keep.txt").exists()
    again = run_demo(result.path, reset=True, embedder=aether.HashingEmbedder(dim=64), console=_quiet())
    assert [a.content for a in again.answers] == [a.content for a in result.answers]


@pytest.mark.slow
def test_demo_with_the_real_model(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo-store", console=_quiet())  # default model: all-MiniLM-L6-v2, offline
    wrong = [(a.question, a.valid_at, a.as_of_label, a.content, a.expect) for a in result.answers if not _ok(a)]
    assert not wrong
