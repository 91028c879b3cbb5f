"""The LangChain vector store beyond the standard suite: corrections and as-of, retraction, valid
time, filters as tags, modes, MMR, relevance scores, retrievers, persistence and errors."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.vectorstores.utils import maximal_marginal_relevance

import aether
from aether.integrations.langchain import AetherVectorStore, LangChainEmbedder, _mmr

_HASH = aether.HashingEmbedder(dim=64)


class HashEmbeddings(Embeddings):
    """LangChain embeddings with aether's hashing vectors: texts sharing words are close."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _HASH.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return _HASH.embed([text])[0].tolist()


@pytest.fixture
def store() -> Iterator[AetherVectorStore]:
    s = AetherVectorStore(embedding=HashEmbeddings())
    yield s
    s.close()


def test_a_rewrite_by_id_is_a_correction_visible_as_of(store: AetherVectorStore) -> None:
    store.add_texts(["Alice lives in Paris"], metadatas=[{"user": "alice"}], ids=["alice-home"])
    before = store.last_commit
    store.add_documents([Document(id="alice-home", page_content="Alice lives in Berlin", metadata={"user": "alice"})])
    now = store.similarity_search("where does Alice live", k=5)
    assert [d.page_content for d in now] == ["Alice lives in Berlin"]
    then = store.similarity_search("where does Alice live", k=5, as_of=before)
    assert [d.page_content for d in then] == ["Alice lives in Paris"]
    # A correction rewrites the whole valid period: no valid time still shows the old text now.
    versions = store.memory.history("alice-home")
    assert len(versions) == 2 and versions[1].valid_from == versions[0].valid_from


def test_delete_retracts_but_history_remains(store: AetherVectorStore) -> None:
    store.add_texts(["the cat sleeps", "the dog barks"], ids=["cat", "dog"])
    before = store.last_commit
    assert store.delete(["cat", "never-added", ""]) is True
    assert [d.id for d in store.similarity_search("cat", k=5)] == ["dog"]
    assert store.get_by_ids(["cat"]) == []
    assert {d.id for d in store.similarity_search("cat", k=5, as_of=before)} == {"cat", "dog"}
    store.delete()  # None: retract everything current
    assert store.similarity_search("dog", k=5) == []


def test_valid_time_and_valid_at(store: AetherVectorStore) -> None:
    store.add_texts(
        ["the office was in Lyon"], ids=["office"],
        valid_from=datetime(2019, 1, 1, tzinfo=UTC), valid_to=datetime(2022, 1, 1, tzinfo=UTC),
    )
    assert store.similarity_search("office", k=3) == []  # not true now
    past = store.similarity_search("office", k=3, valid_at=datetime(2020, 6, 1, tzinfo=UTC))
    assert [d.id for d in past] == ["office"]
    past = store.similarity_search("office", k=3, valid_at="2021-06-01T00:00:00+00:00")
    assert [d.id for d in past] == ["office"]
    # A fact only true in the future is deleted too.
    soon = datetime.now(UTC) + timedelta(days=7)
    store.add_texts(["the office moves to Nantes"], ids=["move"], valid_from=soon)
    assert [d.id for d in store.similarity_search("office moves", k=3, valid_at=soon + timedelta(days=1))] == ["move"]
    store.delete(["move"])
    assert store.similarity_search("office moves", k=3, valid_at=soon + timedelta(days=1)) == []


def test_filter_maps_to_tags_and_metadata_round_trips(store: AetherVectorStore) -> None:
    meta = [
        {"user": "alice", "n": 1, "nested": {"a": [1, 2]}},
        {"user": "bob", "n": 2, "ok": True},
        {"user": "alice", "n": 3, "score": 0.5},
    ]
    ids = store.add_texts(["tea with milk", "tea with lemon", "coffee black"], metadatas=meta)
    got = store.similarity_search("tea", k=5, filter={"user": "alice"})
    assert {d.id for d in got} == {ids[0], ids[2]}
    assert {d.id: d.metadata for d in got} == {ids[0]: meta[0], ids[2]: meta[2]}
    assert [d.id for d in store.similarity_search("tea", k=5, filter={"user": "alice", "n": 3})] == [ids[2]]
    assert [d.id for d in store.similarity_search("tea", k=5, tags={"ok": True})] == [ids[1]]
    assert store.similarity_search("tea", k=5, filter={"user": "carol"}) == []
    with pytest.raises(aether.InvalidInputError):
        store.similarity_search("tea", filter={"n": {"$gt": 1}})
    with pytest.raises(aether.InvalidInputError):
        store.similarity_search("tea", not_an_option=1)


def test_aether_fields_option() -> None:
    s = AetherVectorStore(embedding=HashEmbeddings(), aether_fields=True)
    s.add_texts(["a fact"], metadatas=[{"k": "v"}], ids=["f"])
    (doc,) = s.get_by_ids(["f"])
    assert doc.metadata["k"] == "v"
    fields = doc.metadata["_aether"]
    assert fields["tx_to"] is None and fields["valid_to"] is None
    assert datetime.fromisoformat(fields["tx_from"]) == s.last_commit
    s.close()


def test_scores_relevance_and_vector_search(store: AetherVectorStore) -> None:
    store.add_texts(["red apples are sweet", "green apples are sour", "the train leaves at noon"])
    scored = store.similarity_search_with_score("red apples are sweet", k=3)
    assert scored[0][0].page_content == "red apples are sweet"
    assert scored[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    rel = store.similarity_search_with_relevance_scores("red apples are sweet", k=3)
    assert all(0.0 <= r <= 1.0 for _, r in rel)
    assert rel[0][1] == pytest.approx(1.0, abs=1e-5)
    high = store.similarity_search_with_relevance_scores("red apples are sweet", k=3, score_threshold=0.99)
    assert [d.page_content for d, _ in high] == ["red apples are sweet"]
    vec = HashEmbeddings().embed_query("the train leaves at noon")
    assert store.similarity_search_by_vector(vec, k=1)[0].page_content == "the train leaves at noon"


def test_keyword_and_hybrid_modes(store: AetherVectorStore) -> None:
    pytest.importorskip("tantivy")
    store.add_texts(["invoice 4711 was paid", "the invoice is late", "weather is sunny"], ids=["a", "b", "c"])
    kw = store.similarity_search("4711", k=3, mode="keyword")
    assert [d.id for d in kw] == ["a"]
    hy = store.similarity_search("invoice 4711", k=2, mode="hybrid", fusion="weighted", dense_weight=0.5)
    assert hy[0].id == "a"
    with pytest.raises(aether.InvalidInputError):
        store.similarity_search_with_relevance_scores("invoice", k=2, mode="keyword")


def test_aether_ranking_options_pass_through(store: AetherVectorStore) -> None:
    now = datetime.now(UTC)
    store.add_texts(["standup at nine"], ids=["new"], valid_from=now - timedelta(days=1))
    store.add_texts(["standup at nine"], ids=["old"], valid_from=now - timedelta(days=60))
    # Equally similar; the recency blend puts the fact that started to hold more recently first.
    assert [d.id for d in store.similarity_search("standup", k=2, ranking="recent")] == ["new", "old"]
    assert len(store.similarity_search("standup", k=2, diversity=0.5)) == 2


def test_mmr_matches_langchain_reference_and_diversifies(store: AetherVectorStore) -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=16)
    q /= np.linalg.norm(q)
    vecs = rng.normal(size=(12, 16))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for lam in (0.0, 0.3, 0.5, 1.0):
        assert _mmr(q, vecs, 5, lam) == maximal_marginal_relevance(q, vecs.tolist(), lambda_mult=lam, k=5)

    store.add_texts(["cats purr at night", "cats purr at night", "cats chase mice"], ids=["c1", "c2", "c3"])
    plain = store.similarity_search("cats purr", k=2)
    assert {d.id for d in plain} == {"c1", "c2"}  # the two duplicates
    diverse = store.max_marginal_relevance_search("cats purr", k=2, fetch_k=3, lambda_mult=0.2)
    assert diverse[0].id in {"c1", "c2"} and diverse[1].id == "c3"
    assert store.max_marginal_relevance_search("cats", k=3, lambda_mult=1.0)[0].page_content.startswith("cats")


async def test_async_paths_and_retriever(store: AetherVectorStore) -> None:
    await store.aadd_texts(["paris is in france", "berlin is in germany"], ids=["p", "b"])
    assert [d.id for d in await store.asimilarity_search("paris france", k=1)] == ["p"]
    retriever = store.as_retriever(search_kwargs={"k": 1, "filter": None})
    assert [d.id for d in retriever.invoke("berlin germany")] == ["b"]
    before = store.last_commit
    await store.adelete(["b"])
    past = store.as_retriever(search_kwargs={"k": 2, "as_of": before})
    assert {d.id for d in await past.ainvoke("berlin")} == {"p", "b"}
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 1, "fetch_k": 2})
    assert len(mmr.invoke("paris")) == 1


def test_from_texts_persistence_and_model_check(tmp_path: Path) -> None:
    path = str(tmp_path / "lc")
    emb = DeterministicFakeEmbedding(size=6)
    s = AetherVectorStore.from_texts(["one", "two"], emb, metadatas=[{"i": 1}, {"i": 2}], ids=["1", "2"], path=path)
    assert s.memory.embedder.dim == 6
    s.close()
    s = AetherVectorStore(path, embedding=emb)
    assert [d.metadata for d in s.get_by_ids(["1", "2"])] == [{"i": 1}, {"i": 2}]
    s.close()
    with pytest.raises(aether.ModelMismatchError):
        AetherVectorStore(path, embedding=DeterministicFakeEmbedding(size=8))
    with pytest.raises(aether.ConfigError, match="pass embedding="):
        AetherVectorStore(path)  # aether cannot rebuild a LangChain model from its name
    # memory= shares an open store; the adapter does not close it.
    mem = aether.open(path, embedder=LangChainEmbedder(emb))
    s = AetherVectorStore(memory=mem, embedding=emb)
    assert s.similarity_search("one", k=1)[0].id == "1"
    s.close()
    assert mem.get("1") is not None
    with pytest.raises(aether.ModelMismatchError):
        AetherVectorStore(memory=mem, embedding=HashEmbeddings())
    mem.close()


def test_bad_input_raises_aether_errors(store: AetherVectorStore) -> None:
    with pytest.raises(aether.InvalidInputError):
        store.add_texts(["a", "b"], metadatas=[{}])
    with pytest.raises(aether.InvalidInputError):
        store.add_texts(["a"], ids=["x", "y"])
    with pytest.raises(aether.InvalidContentError):
        store.add_texts(["   "])
    with pytest.raises(aether.InvalidInputError):
        store.add_texts(["a"], metadatas=[{"when": datetime.now(UTC)}])  # not JSON
    with pytest.raises(aether.InvalidInputError):
        AetherVectorStore(embedding="not an embedding")  # type: ignore[arg-type]
    with pytest.raises(aether.InvalidInputError):
        store.max_marginal_relevance_search("a", k=0)


def test_missing_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_core.vectorstores", None)
    monkeypatch.delitem(sys.modules, "aether.integrations.langchain")
    with pytest.raises(aether.MissingDependencyError, match=r"aether\[langchain\]"):
        importlib.import_module("aether.integrations.langchain")


def test_without_embedding_the_store_uses_its_own_model() -> None:
    """End to end with the bundled all-MiniLM-L6-v2 model (offline): real semantic recall and MMR."""
    s = AetherVectorStore()
    s.add_texts(["Alice lives in Paris", "Bob's favourite food is sushi", "The quarterly report is due Friday"],
                ids=["home", "food", "work"])
    assert s.memory.embedder.identity.startswith("sentence-transformers:")
    assert s.similarity_search("where is Alice's home?", k=1)[0].id == "home"
    assert s.similarity_search("when is the deadline for the report?", k=1)[0].id == "work"
    assert s.max_marginal_relevance_search("what does Bob like to eat?", k=2)[0].id == "food"
    # The store's model is offered to LangChain as Embeddings, with the store's vectors.
    vec = s.embeddings.embed_query("what does Bob like to eat?")
    assert len(vec) == s.memory.embedder.dim
    assert s.similarity_search_by_vector(vec, k=1)[0].id == "food"
    assert len(s.embeddings.embed_documents(["a", "b"])) == 2
    s.close()
