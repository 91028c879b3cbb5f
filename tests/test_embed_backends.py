"""The packaged model on its two backends: torch (sentence-transformers) and ONNX Runtime.

Real model, real export: the ONNX graph is built from the packaged weights into a temporary cache.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.embed import SentenceTransformerEmbedder

pytest.importorskip("onnxruntime")

TEXTS = [
    "Alice moved from Paris to Lyon in June 2024.",
    "Bob's favourite programming language is Rust.",
    "The Helios project reached general availability in March.",
    "short",
    "A much longer memory " + "about a meeting that ran over time and covered many topics " * 12,
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("aether-cache")


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return SentenceTransformerEmbedder(backend="torch").embed(TEXTS)


@pytest.fixture
def onnx_embedder(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> SentenceTransformerEmbedder:
    monkeypatch.setenv("AETHER_CACHE_DIR", str(cache_dir))
    return SentenceTransformerEmbedder(backend="onnx")


def test_onnx_vectors_equal_torch(onnx_embedder: SentenceTransformerEmbedder, torch_vectors: np.ndarray) -> None:
    got = onnx_embedder.embed(TEXTS)
    assert onnx_embedder.backend == "onnx"
    assert got.shape == torch_vectors.shape and got.dtype == np.float32
    assert np.abs(got - torch_vectors).max() < 1e-4
    # Order is kept although batches are sorted by length inside.
    one_by_one = np.vstack([onnx_embedder.embed([t]) for t in TEXTS])
    assert np.abs(one_by_one - got).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_same_identity_so_stores_are_interchangeable(
    onnx_embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    torch_emb = SentenceTransformerEmbedder(backend="torch")
    assert onnx_embedder.identity == torch_emb.identity
    with aether.open(tmp_path / "s", embedder=torch_emb) as mem:
        mem.add("Alice lives in Lyon")
        mem.add("Bob plays the cello")
    with aether.open(tmp_path / "s", embedder=onnx_embedder) as mem:
        hits = mem.search("where does alice live?", k=1, mode="dense")
        assert hits[0].atom.content.inline == "Alice lives in Lyon"


def test_export_is_cached_and_a_damaged_cache_is_rebuilt(
    onnx_embedder: SentenceTransformerEmbedder, cache_dir: Path, torch_vectors: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    onnx_embedder.embed(["warm"])
    graphs = list(cache_dir.glob("onnx/*/model.onnx"))
    assert len(graphs) == 1
    before = graphs[0].stat().st_mtime_ns
    again = SentenceTransformerEmbedder(backend="onnx")
    again.embed(["reuse"])
    assert graphs[0].stat().st_mtime_ns == before  # reused, not exported again
    data = bytearray(graphs[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    graphs[0].write_bytes(bytes(data))
    rebuilt = SentenceTransformerEmbedder(backend="onnx")
    assert np.abs(rebuilt.embed(TEXTS) - torch_vectors).max() < 1e-4
    assert graphs[0].stat().st_mtime_ns != before


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(aether.ConfigError, match="backend"):
        SentenceTransformerEmbedder(backend="tpu")


def test_auto_falls_back_to_torch_without_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, torch_vectors: np.ndarray
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    auto = SentenceTransformerEmbedder(backend="auto")
    assert np.abs(auto.embed(TEXTS) - torch_vectors).max() < 1e-6
    assert auto.backend == "torch"
    explicit = SentenceTransformerEmbedder(backend="onnx")
    with pytest.raises(aether.MissingDependencyError, match=r"aether\[onnx\]"):
        explicit.embed(["x"])


def test_an_unwritable_cache_is_an_embedding_error_and_auto_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review finding: a cache folder that cannot be created (read-only home, a file in the way) raised a raw
    # OSError from the ONNX loader, which backend="auto" did not catch, so the default model did not load.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("AETHER_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(aether.EmbeddingError, match="ONNX cache"):
        SentenceTransformerEmbedder(backend="onnx")._load()
    auto = SentenceTransformerEmbedder(backend="auto")
    assert auto._load_onnx() is None  # the torch path is taken next; it is tested above


@pytest.fixture(scope="module")
def int8_embedder(cache_dir: Path) -> Iterator[SentenceTransformerEmbedder]:
    mp = pytest.MonkeyPatch()
    mp.setenv("AETHER_CACHE_DIR", str(cache_dir))
    emb = SentenceTransformerEmbedder(backend="onnx-int8")
    emb.embed(["load"])
    yield emb
    mp.undo()


def test_int8_vectors_are_close_to_torch_not_equal(
    int8_embedder: SentenceTransformerEmbedder, torch_vectors: np.ndarray, cache_dir: Path
) -> None:
    got = int8_embedder.embed(TEXTS)
    assert int8_embedder.backend == "onnx-int8"
    assert got.shape == torch_vectors.shape and got.dtype == np.float32
    cos = np.sum(got * torch_vectors, axis=1)
    assert cos.min() > 0.98  # quantization noise, not a different model
    assert np.abs(got - torch_vectors).max() > 1e-4  # really the quantized graph, not the float one
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert len(list(cache_dir.glob("onnx/*/model.int8.onnx"))) == 1


def test_int8_has_its_own_identity_and_is_rebuilt_from_the_manifest(
    int8_embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    float_emb = SentenceTransformerEmbedder(backend="torch")
    assert int8_embedder.identity == float_emb.identity.replace(":dim=", ":int8:dim=")
    with aether.open(tmp_path / "s", embedder=int8_embedder) as mem:
        mem.add("Alice lives in Lyon")
        mem.add("Bob plays the cello")
    with pytest.raises(aether.ModelMismatchError, match="int8"):
        aether.open(tmp_path / "s", embedder=float_emb)
    with aether.open(tmp_path / "s") as mem:  # no embedder: the recorded one, int8, is rebuilt
        hits = mem.search("where does alice live?", k=1, mode="dense")
        assert hits[0].atom.content.inline == "Alice lives in Lyon"


def test_a_damaged_int8_cache_is_quantized_again(
    int8_embedder: SentenceTransformerEmbedder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AETHER_CACHE_DIR", str(cache_dir))
    graph = next(cache_dir.glob("onnx/*/model.int8.onnx"))
    before = int8_embedder.embed(TEXTS)
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    again = SentenceTransformerEmbedder(backend="onnx-int8")
    assert np.abs(again.embed(TEXTS) - before).max() < 1e-5
