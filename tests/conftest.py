"""Shared fixtures: tmp_path stores with the deterministic hashing embedder and a fake clock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import settings

import aether

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The suite is deterministic by default: property tests replay the same examples on every run, so
# CI never fails on an example that happened to be drawn once. To explore new random examples:
# HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest tests/...
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

DIM = 32
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class FakeClock:
    """Microsecond clock that advances only when told (tx times are then predictable)."""

    def __init__(self, start: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> None:
        self.now = int(start.timestamp() * 1_000_000)

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


@pytest.fixture
def embedder() -> aether.HashingEmbedder:
    return aether.HashingEmbedder(dim=DIM)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def mem(store_path: Path, embedder: aether.HashingEmbedder) -> Iterator[aether.Memory]:
    m = aether.open(store_path, embedder=embedder)
    yield m
    m.close()


@pytest.fixture
def memory_mem(embedder: aether.HashingEmbedder) -> Iterator[aether.Memory]:
    m = aether.open(embedder=embedder)
    yield m
    m.close()
