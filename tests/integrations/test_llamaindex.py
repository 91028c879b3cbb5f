"""The LlamaIndex vector store: round trips, every filter operator against a Python reference,
the three query modes, bitemporal corrections and as-of reads, and an end-to-end index."""

from __future__ import annotations

import importlib
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import aether
from aether.integrations.llamaindex import AetherVectorStore

DIM = 16
_HASH = aether.HashingEmbedder(dim=DIM)


class HashEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model with aether's deterministic hashing vectors (shared words are close)."""

    def _get_query_embedding(self, query: str) -> list[float]:
        return [float(x) for x in _HASH.embed([query])[0]]

    def _get_text_embedding(self, text: str) -> list[float]:
        return [float(x) for x in _HASH.embed([text])[0]]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


KINDS = ["cat", "dog", "bird"]
WORDS = ["purring", "barking", "singing", "sleeping", "running", "eating"]


def make_nodes(n: int = 30, seed: int = 7) -> list[TextNode]:
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        kind = KINDS[i % 3]
        text = f"the {kind} is {rng.choice(WORDS)} and {rng.choice(WORDS)} today"
        metadata: dict[str, Any] = {"kind": kind, "year": 2000 + rng.randrange(10), "score": round(rng.random(), 3)}
        if i % 4:  # some nodes lack the key: NE / NIN must still match them, EQ / GT must not
            metadata["color"] = rng.choice(["red", "green", "blue"])
        node = TextNode(
            text=text, id_=f"node-{i}", metadata=metadata, embedding=[float(x) for x in _HASH.embed([text])[0]],
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{i % 5}")},
        )
        nodes.append(node)
    return nodes


@pytest.fixture
def store() -> Iterator[AetherVectorStore]:
    s = AetherVectorStore()
    yield s
    s.close()


def same_node(a: Any, b: Any) -> bool:
    """Equal apart from the embedding (a store returns nodes without their vectors)."""
    da, db = a.model_dump(), b.model_dump()
    da.pop("embedding")
    db.pop("embedding")
    return bool(da == db)


def query_vec(text: str) -> list[float]:
    return [float(x) for x in _HASH.embed([text])[0]]


def test_round_trip_add_query_delete(store: AetherVectorStore) -> None:
    nodes = make_nodes()
    assert store.query(VectorStoreQuery(query_embedding=query_vec("x"), similarity_top_k=3)).ids == []
    assert store.add(nodes) == [n.node_id for n in nodes]
    assert store.memory is not None and store.memory.embedder.dim == DIM
    target = nodes[4]
    res = store.query(VectorStoreQuery(query_embedding=target.embedding, similarity_top_k=3))
    assert res.ids is not None and res.nodes is not None and res.similarities is not None
    assert res.ids[0] == target.node_id
    assert res.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert res.similarities == sorted(res.similarities, reverse=True)
    assert same_node(res.nodes[0], target)
    assert res.nodes[0].ref_doc_id == "doc-4"
    by_id = {n.node_id: n for n in nodes}
    assert all(same_node(n, by_id[n.node_id]) for n in store.get_nodes([n.node_id for n in nodes]))

    before = store.last_commit
    store.delete("doc-4")
    gone = {n.node_id for n in nodes if n.ref_doc_id == "doc-4"}
    left = {n.node_id for n in store.get_nodes()}
    assert left == {n.node_id for n in nodes} - gone
    res = store.query(VectorStoreQuery(query_embedding=target.embedding, similarity_top_k=len(nodes)))
    assert not gone & set(res.ids or [])
    # A retraction, not an erase: the store as of before the delete still has the document.
    res = store.query(VectorStoreQuery(query_embedding=target.embedding, similarity_top_k=1), as_of=before)
    assert res.ids == [target.node_id]

    store.delete_nodes([nodes[0].node_id, "no-such-node"])
    assert nodes[0].node_id not in {n.node_id for n in store.get_nodes()}
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="kind", value="dog")]))
    assert {n.metadata["kind"] for n in store.get_nodes()} <= {"cat", "bird"}
    store.clear()
    assert store.get_nodes() == []
    assert store.query(VectorStoreQuery(query_embedding=target.embedding, similarity_top_k=5)).ids == []


def _f(key: str, op: FilterOperator, value: Any) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


def _get(m: dict[str, Any], key: str) -> Any:
    return m.get(key)


# (filter, the same condition written out in Python). Missing keys match only NE and NIN.
CASES: list[tuple[MetadataFilter, Callable[[dict[str, Any]], bool]]] = [
    (_f("kind", FilterOperator.EQ, "cat"), lambda m: m["kind"] == "cat"),
    (_f("year", FilterOperator.EQ, 2003), lambda m: m["year"] == 2003),
    (_f("color", FilterOperator.EQ, "red"), lambda m: _get(m, "color") == "red"),
    (_f("kind", FilterOperator.NE, "dog"), lambda m: m["kind"] != "dog"),
    (_f("color", FilterOperator.NE, "blue"), lambda m: _get(m, "color") != "blue"),
    (_f("year", FilterOperator.GT, 2005), lambda m: m["year"] > 2005),
    (_f("score", FilterOperator.GT, 0.5), lambda m: m["score"] > 0.5),
    (_f("year", FilterOperator.GTE, 2005), lambda m: m["year"] >= 2005),
    (_f("year", FilterOperator.LT, 2004), lambda m: m["year"] < 2004),
    (_f("score", FilterOperator.LTE, 0.25), lambda m: m["score"] <= 0.25),
    (_f("year", FilterOperator.LTE, 2004), lambda m: m["year"] <= 2004),
    (_f("kind", FilterOperator.IN, ["cat", "bird"]), lambda m: m["kind"] in ("cat", "bird")),
    (_f("year", FilterOperator.IN, [2001, 2002, 2009]), lambda m: m["year"] in (2001, 2002, 2009)),
    (_f("color", FilterOperator.NIN, ["red", "green"]), lambda m: _get(m, "color") not in ("red", "green")),
    (_f("year", FilterOperator.NIN, [2000, 2001]), lambda m: m["year"] not in (2000, 2001)),
    (_f("ref_doc_id", FilterOperator.EQ, "doc-2"), lambda m: m["_doc"] == "doc-2"),
    (_f("missing", FilterOperator.EQ, "x"), lambda m: False),
]


def _reference(nodes: list[TextNode], cond: Callable[[dict[str, Any]], bool]) -> set[str]:
    return {n.node_id for n in nodes if cond({**n.metadata, "_doc": n.ref_doc_id})}


@pytest.fixture(scope="module")
def filled() -> Iterator[tuple[AetherVectorStore, SimpleVectorStore, list[TextNode]]]:
    nodes = make_nodes(40)
    ours = AetherVectorStore()
    ours.add(nodes)
    simple = SimpleVectorStore()
    simple.add(nodes)
    yield ours, simple, nodes
    ours.close()


def _ids(store: Any, filters: MetadataFilters, k: int, **kw: Any) -> set[str]:
    q = VectorStoreQuery(query_embedding=query_vec("the cat is sleeping"), similarity_top_k=k, filters=filters)
    return set(store.query(q, **kw).ids or [])


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c[0].key}{c[0].operator.value}{c[0].value}" for c in CASES])
def test_each_filter_operator_matches_python_reference(
    filled: tuple[AetherVectorStore, SimpleVectorStore, list[TextNode]], i: int
) -> None:
    ours, simple, nodes = filled
    flt, cond = CASES[i]
    expected = _reference(nodes, cond)
    filters = MetadataFilters(filters=[flt])
    assert _ids(ours, filters, len(nodes)) == expected
    assert _ids(simple, filters, len(nodes)) == expected  # LlamaIndex's own store agrees with the reference
    assert {n.node_id for n in ours.get_nodes(filters=filters)} == expected
    # With a small k the store must still find k matches (it fetches deeper past filtered-out nodes).
    assert len(_ids(ours, filters, 3)) == min(3, len(expected))
    assert _ids(ours, filters, 3) <= expected


@pytest.mark.parametrize("condition", [FilterCondition.AND, FilterCondition.OR])
def test_filter_combinations_and_nesting(
    filled: tuple[AetherVectorStore, SimpleVectorStore, list[TextNode]], condition: FilterCondition
) -> None:
    ours, simple, nodes = filled
    rng = random.Random(3)
    for _ in range(12):
        picked = rng.sample(range(len(CASES)), 3)
        filters = MetadataFilters(filters=[CASES[j][0] for j in picked], condition=condition)
        combine = all if condition == FilterCondition.AND else any
        expected = _reference(nodes, lambda m, p=picked, c=combine: c(CASES[j][1](m) for j in p))  # type: ignore[misc]
        assert _ids(ours, filters, len(nodes)) == expected
        assert _ids(simple, filters, len(nodes)) == expected
    # Nested: (kind == cat OR kind == bird) AND year > 2004; SimpleVectorStore cannot nest.
    nested = MetadataFilters(filters=[
        MetadataFilters(filters=[CASES[0][0], _f("kind", FilterOperator.EQ, "bird")], condition=FilterCondition.OR),
        CASES[5][0],
    ])
    expected = _reference(nodes, lambda m: m["kind"] in ("cat", "bird") and m["year"] > 2005)
    assert _ids(ours, nested, len(nodes)) == expected


def test_doc_ids_and_node_ids_restrict_queries(
    filled: tuple[AetherVectorStore, SimpleVectorStore, list[TextNode]],
) -> None:
    ours, _, nodes = filled
    q = VectorStoreQuery(query_embedding=query_vec("dog"), similarity_top_k=len(nodes), doc_ids=["doc-1", "doc-3"])
    assert set(ours.query(q).ids or []) == {n.node_id for n in nodes if n.ref_doc_id in ("doc-1", "doc-3")}
    q = VectorStoreQuery(query_embedding=query_vec("dog"), similarity_top_k=2, node_ids=["node-5", "node-9", "x"])
    assert set(ours.query(q).ids or []) == {"node-5", "node-9"}


def test_text_search_and_hybrid_modes(filled: tuple[AetherVectorStore, SimpleVectorStore, list[TextNode]]) -> None:
    pytest.importorskip("tantivy")
    ours, _, nodes = filled
    k = len(nodes)
    text = "barking"
    kw = ours.query(VectorStoreQuery(query_str=text, mode=VectorStoreQueryMode.TEXT_SEARCH, similarity_top_k=k))
    assert set(kw.ids or []) == {n.node_id for n in nodes if text in n.text}
    vec = query_vec("the bird is singing")
    dense = ours.query(VectorStoreQuery(query_embedding=vec, similarity_top_k=5))

    def hybrid(alpha: float) -> Any:
        return ours.query(VectorStoreQuery(
            query_str=text, query_embedding=vec, mode=VectorStoreQueryMode.HYBRID, alpha=alpha, similarity_top_k=5,
        ))

    assert hybrid(1.0).ids == dense.ids  # all weight on the dense half
    assert set(hybrid(0.0).ids or []) <= set(kw.ids or [])  # all weight on BM25: only keyword matches lead
    mixed = hybrid(0.5)
    assert mixed.similarities is not None and mixed.similarities == sorted(mixed.similarities, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in mixed.similarities)


def test_adapter_hybrid_equals_aether_hybrid() -> None:
    """For a store of precomputed vectors the adapter fuses the halves itself; it must give what aether's
    own weighted hybrid gives on a store whose model embeds the same vectors."""
    pytest.importorskip("tantivy")
    nodes = make_nodes(40)
    pre = AetherVectorStore()
    own = AetherVectorStore(embedder=aether.HashingEmbedder(dim=DIM))
    pre.add(nodes)
    own.add(nodes)
    for text, alpha in [("barking today", 0.5), ("the cat is purring", 0.3), ("eating", 0.8)]:
        q = VectorStoreQuery(query_str=text, query_embedding=query_vec(text), mode=VectorStoreQueryMode.HYBRID,
                             alpha=alpha, similarity_top_k=8)
        a, b = pre.query(q), own.query(q)
        assert a.similarities is not None and b.similarities is not None
        assert a.similarities == pytest.approx(b.similarities, abs=1e-6)
        assert a.ids == b.ids
    pre.close()
    own.close()


def test_corrections_and_as_of(store: AetherVectorStore) -> None:
    node = TextNode(text="Alice lives in Paris", id_="alice-home", embedding=query_vec("Alice lives in Paris"),
                    metadata={"user": "alice"})
    store.add([node])
    before = store.last_commit
    moved = TextNode(text="Alice lives in Berlin", id_="alice-home", embedding=query_vec("Alice lives in Berlin"),
                     metadata={"user": "alice"})
    store.add([moved])
    q = VectorStoreQuery(query_embedding=query_vec("where does Alice live"), similarity_top_k=5)
    now = store.query(q)
    assert now.ids == ["alice-home"] and now.nodes is not None and now.nodes[0].get_content() == "Alice lives in Berlin"
    then = store.query(q, as_of=before)
    assert then.nodes is not None and then.nodes[0].get_content() == "Alice lives in Paris"
    assert [n.get_content() for n in store.get_nodes(["alice-home"], as_of=before)] == ["Alice lives in Paris"]
    mem = store.memory
    assert mem is not None and len(mem.history("alice-home")) == 2


def test_persistent_store_reopens_and_checks_dimension(tmp_path: Path) -> None:
    path = str(tmp_path / "li")
    nodes = make_nodes(6)
    s = AetherVectorStore(path)
    assert s.memory is None  # nothing created until the first add fixes the dimension
    s.add(nodes)
    s.close()
    s2 = AetherVectorStore(path)
    assert s2.memory is not None
    assert {n.node_id for n in s2.get_nodes()} == {n.node_id for n in nodes}
    bad = TextNode(text="wrong size", id_="bad", embedding=[1.0, 0.0, 0.0])
    with pytest.raises(aether.InvalidInputError):
        s2.add([bad])
    with pytest.raises(aether.InvalidInputError):
        s2.add([TextNode(text="not embedded", id_="raw")])
    with pytest.raises(aether.InvalidInputError):  # ragged dimensions in one add
        s2.add([nodes[0], TextNode(text="short", id_="short", embedding=[1.0, 2.0])])
    with pytest.raises(aether.InvalidInputError):
        s2.query(VectorStoreQuery(query_embedding=query_vec("x"), mode=VectorStoreQueryMode.SVM))
    s2.close()


def test_vector_store_index_end_to_end_with_mock_embedding() -> None:
    docs = [
        Document(text="Alice moved to Berlin in 2024.", doc_id="alice", metadata={"user": "alice"}),
        Document(text="Bob prefers tea over coffee.", doc_id="bob", metadata={"user": "bob"}),
        Document(text="Carol is learning Rust.", doc_id="carol", metadata={"user": "carol"}),
    ]
    store = AetherVectorStore()
    index = VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=MockEmbedding(embed_dim=8)
    )
    assert store.memory is not None and store.memory.embedder.dim == 8
    retriever = index.as_retriever(similarity_top_k=3)
    got = retriever.retrieve("who moved?")
    assert {r.node.get_content() for r in got} == {d.text for d in docs}
    assert {r.node.ref_doc_id for r in got} == {"alice", "bob", "carol"}
    # A query engine with the mock LLM (no network): its retriever goes through the store.
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=2)
    response = engine.query("what is Carol learning?")
    assert len(response.source_nodes) == 2
    # Deleting a document through the index retracts its nodes in the store.
    index.delete_ref_doc("bob")
    assert "bob" not in {r.node.ref_doc_id for r in index.as_retriever(similarity_top_k=3).retrieve("tea")}
    store.close()


def test_vector_store_index_retrieves_by_meaning_and_as_of() -> None:
    store = AetherVectorStore()
    index = VectorStoreIndex.from_documents(
        [Document(text="The meeting is on Monday", doc_id="meeting"),
         Document(text="The cat sleeps on the sofa", doc_id="cat")],
        storage_context=StorageContext.from_defaults(vector_store=store), embed_model=HashEmbedding(),
    )
    before = store.last_commit
    index.insert(Document(text="The meeting moved to Friday", doc_id="meeting2"))
    top = index.as_retriever(similarity_top_k=1).retrieve("meeting moved to Friday")
    assert top[0].node.ref_doc_id == "meeting2"
    # vector_store_kwargs reach the store's query: as of before the insert, it was not known.
    past = index.as_retriever(similarity_top_k=3, vector_store_kwargs={"as_of": before})
    assert {r.node.ref_doc_id for r in past.retrieve("meeting moved to Friday")} == {"meeting", "cat"}
    store.close()


def test_missing_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_index.core.vector_stores.types", None)
    monkeypatch.delitem(sys.modules, "aether.integrations.llamaindex")
    with pytest.raises(aether.MissingDependencyError, match=r"aether\[llamaindex\]"):
        importlib.import_module("aether.integrations.llamaindex")
