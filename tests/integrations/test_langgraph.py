"""AetherStore against LangGraph's own InMemoryStore: the same operation sequences must give the same results.

LangGraph ships no conformance suite for ``BaseStore``, so this is a differential one: fixed sequences
covering what langgraph's ``test_store.py`` checks (batch order, get/put/delete, namespace listing with
prefixes, suffixes, wildcards, depth and paging, filters with every operator, vector search with
fields, per-put ``index``, pagination and unembedded items), then random sequences from hypothesis.

The reference is ``InMemoryStore`` with five artifacts of its implementation normalised, none of
which the Postgres store has either:

1. results that are not ranked by a query come in dict insertion order (and a namespace keeps its
   first position even after all its items are deleted); the reference sorts them as aether does,
   most recently updated first, then by namespace and key (the Postgres store also orders by
   ``updated_at`` descending);
2. ``list_namespaces`` lists namespaces whose items were all deleted, or that a ``get`` merely looked
   at; the reference lists namespaces that hold items;
3. an update keeps the previous value's vectors next to the new ones; the reference drops them;
4. two items of one batch that share a text make it raise (it pairs each distinct text's embedding
   with every place a text occurs); the reference gives each place its text's embedding;
5. items with equal texts get scores that differ by float noise, so their ties break at random; the
   reference compares scores to 9 decimals, so that ties break by its candidate order (1.).

Timestamps differ between stores by nature; they are checked separately (tz-aware, ``created_at``
kept on update, ``updated_at`` moving). The last part tests what only aether has: ``as_of`` replay,
TTL through valid time, persistence.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding
from langgraph.store import memory as lg_memory
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    SearchItem,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

import aether
import aether.integrations.langgraph as lg
from aether.integrations.langgraph import AetherStore

DIMS = 16


class Reference(InMemoryStore):
    """InMemoryStore with the five normalisations of the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seq: dict[tuple[tuple[str, ...], str], int] = {}
        self.batches = 0

    def batch(self, ops: Any) -> list[Any]:
        ops = list(ops)
        out = super().batch(ops)
        self._count(ops)
        return out

    async def abatch(self, ops: Any) -> list[Any]:
        ops = list(ops)
        out = await super().abatch(ops)
        self._count(ops)
        return out

    def _count(self, ops: list[Op]) -> None:
        self.batches += 1
        for op in ops:
            if isinstance(op, PutOp) and op.value is not None:
                self.seq[(op.namespace, op.key)] = self.batches

    def _filter_items(self, op: SearchOp) -> list[tuple[Item, list[list[float]]]]:
        # full candidate list (no early stop at offset + limit), ordered like aether: newest put first
        cands = super()._filter_items(op._replace(offset=0, limit=sys.maxsize))
        return sorted(cands, key=lambda c: (-self.seq[(c[0].namespace, c[0].key)], c[0].namespace, c[0].key))

    def _handle_list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        saved = self._data
        self._data = {ns: items for ns, items in saved.items() if items}
        try:
            return super()._handle_list_namespaces(op)
        finally:
            self._data = saved

    def _batch_search(self, ops: Any, queries: Any, results: Any) -> None:
        # Equal texts score equal up to float noise (numpy's matrix-vector product rounds rows
        # differently), which would break their ties at random: compare scores to 9 decimals.
        exact = lg_memory._cosine_similarity

        def rounded(X: list[float], Y: list[list[float]]) -> list[float]:
            return [round(v, 9) for v in exact(X, Y)]

        lg_memory._cosine_similarity = rounded
        try:
            super()._batch_search(ops, queries, results)
        finally:
            lg_memory._cosine_similarity = exact

    def _insertinmem_store(self, to_embed: Any, embeddings: list[list[float]]) -> None:
        # one embedding per distinct text, for every place the text occurs (InMemoryStore zips the
        # distinct texts' embeddings with all the places, and fails when two items share a text)
        for (_, places), vector in zip(to_embed.items(), embeddings, strict=True):
            for namespace, key, path in places:
                self._vectors[namespace][key][path] = vector

    def _extract_texts(self, put_ops: Any) -> Any:
        for namespace, key in put_ops:
            self._vectors[namespace].pop(key, None)
        return super()._extract_texts(put_ops)


def index_config(fields: list[str] | None = None) -> Any:
    cfg: dict[str, Any] = {"dims": DIMS, "embed": DeterministicFakeEmbedding(size=DIMS)}
    if fields is not None:
        cfg["fields"] = fields
    return cfg


def pair(fields: list[str] | None = None, *, indexed: bool = True) -> tuple[Reference, AetherStore]:
    if not indexed:
        return Reference(), AetherStore()
    return Reference(index=index_config(fields)), AetherStore(index=index_config(fields))


# ---------------------------------------------------------------------------- comparison


def _key(it: Item) -> tuple[Any, ...]:
    return (tuple(it.namespace), it.key, json.dumps(it.value, sort_keys=True))


def _check_times(it: Item) -> None:
    assert it.created_at.tzinfo is not None and it.updated_at.tzinfo is not None
    assert it.created_at <= it.updated_at


def same_result(op: Op, want: Any, got: Any) -> None:
    if isinstance(op, GetOp):
        assert (want is None) == (got is None), (op, want, got)
        if want is not None:
            assert _key(want) == _key(got)
            _check_times(got)
    elif isinstance(op, SearchOp):
        assert len(want) == len(got), (op, want, got)
        for w, g in zip(want, got, strict=True):
            assert isinstance(g, SearchItem)
            _check_times(g)
            assert (w.score is None) == (g.score is None), (op, w, g)
            if w.score is not None:
                assert g.score == pytest.approx(w.score, abs=1e-4), (op, w, g)

        # The same items in the same order: ties (items sharing a text) are broken by recency, then
        # namespace and key, in both stores.
        assert [_key(i) for i in want] == [_key(i) for i in got], (op, want, got)
    elif isinstance(op, ListNamespacesOp):
        assert want == got, (op, want, got)
    else:
        assert want is None and got is None


def run_both(ref: Reference, store: AetherStore, batches: list[list[Op]]) -> None:
    """Run every batch on both stores and compare each op's result."""
    for ops in batches:
        want = ref.batch(ops)
        got = store.batch(ops)
        assert len(want) == len(got)
        for op, w, g in zip(ops, want, got, strict=True):
            same_result(op, w, g)


def put(ns: tuple[str, ...], key: str, value: dict[str, Any] | None, index: Any = None) -> PutOp:
    return PutOp(ns, key, value, index=index)


def search(prefix: tuple[str, ...], **kw: Any) -> SearchOp:
    return SearchOp(prefix, kw.pop("filter", None), kw.pop("limit", 10), kw.pop("offset", 0), kw.pop("query", None))


def listing(
    prefix: tuple[str, ...] | None = None, suffix: tuple[str, ...] | None = None, **kw: Any
) -> ListNamespacesOp:
    conds = []
    if prefix:
        conds.append(MatchCondition("prefix", prefix))
    if suffix:
        conds.append(MatchCondition("suffix", suffix))
    return ListNamespacesOp(tuple(conds), kw.get("max_depth"), kw.get("limit", 100), kw.get("offset", 0))


# ---------------------------------------------------------------------------- fixed sequences


def test_batch_order_and_reads_see_the_state_before_the_batch() -> None:
    ref, store = pair(indexed=False)
    run_both(ref, store, [
        [put(("test", "foo"), "key1", {"data": "value1"}), put(("test", "bar"), "key2", {"data": "value2"})],
        [
            GetOp(("test", "foo"), "key1"),
            put(("test", "baz"), "key3", {"data": "value3"}),
            search(("test",)),
            listing(prefix=("test",)),
            GetOp(("test", "baz"), "key3"),  # not yet: the put is in this batch
            put(("test", "foo"), "key1", {"data": "first"}),
            put(("test", "foo"), "key1", {"data": "last"}),  # the last put per key wins
        ],
        [GetOp(("test", "baz"), "key3"), GetOp(("test", "foo"), "key1"), search(("test",)), listing()],
    ])
    assert store.get(("test", "foo"), "key1").value == {"data": "last"}  # type: ignore[union-attr]


def test_get_put_delete() -> None:
    ref, store = pair(indexed=False)
    run_both(ref, store, [
        [GetOp(("a",), "missing")],
        [put(("a",), "k", {"n": 1, "nested": {"x": [1, 2, {"y": None}]}, "s": "héllo ✓"})],
        [GetOp(("a",), "k"), GetOp(("a",), "other"), GetOp(("b",), "k")],
        [put(("a",), "k", {"n": 2})],
        [GetOp(("a",), "k")],
        [put(("a",), "k", None), put(("a",), "never", None)],  # deleting a missing key is not an error
        [GetOp(("a",), "k"), search(("a",)), listing()],
        [put(("a",), "k", {"n": 3})],  # a deleted key can be written again
        [GetOp(("a",), "k"), search(()), listing()],
    ])


def test_list_namespaces_prefix_suffix_wildcards_depth_paging() -> None:
    ref, store = pair(indexed=False)
    spaces = [("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f"), ("a", "c", "f"),
              ("b", "a", "f"), ("users", "123"), ("users", "456", "settings"), ("admin", "users", "789")]
    run_both(ref, store, [
        [put(ns, "k", {"ns": list(ns)}) for ns in spaces],
        [
            listing(),
            listing(prefix=("a", "b")),
            listing(prefix=("a", "b"), max_depth=3),
            listing(max_depth=1),
            listing(max_depth=2, limit=3, offset=1),
            listing(suffix=("f",)),
            listing(prefix=("a",), suffix=("f",)),
            listing(prefix=("a", "*", "f")),
            listing(prefix=("*", "b")),
            listing(suffix=("*", "f")),
            listing(prefix=("users",)),
            listing(suffix=("users", "*")),
            listing(prefix=("nope",)),
            listing(limit=2),
            listing(limit=2, offset=2),
            listing(limit=100, offset=100),
        ],
        [put(("a", "b", "c"), "k", None), put(("users", "123"), "k", None)],
        [listing(), listing(prefix=("a", "b"), max_depth=3), listing(prefix=("users",))],
    ])


def test_search_filters_every_operator_and_paging() -> None:
    ref, store = pair(indexed=False)
    docs = [
        ("k1", {"color": "red", "score": 4.5, "tags": ["x", "y"], "meta": {"lang": "en", "v": 1}}),
        ("k2", {"color": "blue", "score": 3.0, "tags": ["y"], "meta": {"lang": "fr", "v": 2}}),
        ("k3", {"color": "red", "score": 1.5, "tags": [], "meta": {"lang": "en", "v": 3}}),
        ("k4", {"color": "green", "score": 5.0, "tags": ["x", "y"], "meta": {"lang": "de", "v": 4}}),
    ]
    run_both(ref, store, [
        [put(("docs",), k, v) for k, v in docs[:2]],
        [put(("docs", "more"), k, v) for k, v in docs[2:]],
        [
            search(("docs",)),
            search(("docs",), filter={"color": "red"}),
            search(("docs",), filter={"color": {"$eq": "red"}}),
            search(("docs",), filter={"color": {"$ne": "red"}}),
            search(("docs",), filter={"score": {"$gt": 3.0}}),
            search(("docs",), filter={"score": {"$gte": 3.0}}),
            search(("docs",), filter={"score": {"$lt": 3.0}}),
            search(("docs",), filter={"score": {"$lte": 3.0}}),
            search(("docs",), filter={"score": {"$gt": 1.0, "$lt": 5.0}, "color": "red"}),
            search(("docs",), filter={"tags": ["x", "y"]}),
            search(("docs",), filter={"meta": {"lang": "en"}}),
            search(("docs",), filter={"meta": {"v": {"$gte": 2}}}),
            search(("docs",), filter={"missing": "x"}),
            search(("docs", "more")),
            search(("docs", "more"), filter={"color": "red"}),
            search(("docs",), limit=2),
            search(("docs",), limit=2, offset=2),
            search(("docs",), limit=1, offset=3),
            search(("docs",), limit=10, offset=10),
            search(("other",)),
            search(("docs",), query="ignored without an index"),
        ],
    ])


def test_vector_search_fields_index_argument_and_paging() -> None:
    ref, store = pair(["text"])
    run_both(ref, store, [
        [
            put(("docs",), "d1", {"text": "the quick brown fox", "kind": "a"}),
            put(("docs",), "d2", {"text": "a lazy dog sleeps", "kind": "b"}),
            put(("docs", "sub"), "d3", {"text": "quick thinking wins", "kind": "a"}),
            put(("docs",), "d4", {"other": "no text field here", "kind": "a"}),  # nothing to embed
            put(("docs",), "d5", {"text": "the quick brown fox", "kind": "c"}, index=False),  # not embedded
            put(("docs",), "d6", {"title": "fox", "body": ["red fox", "grey wolf"]}, index=["title", "body[*]"]),
        ],
        [
            search(("docs",), query="quick fox"),
            search(("docs",), query="the quick brown fox"),
            search(("docs",), query="lazy dog", limit=2),
            search(("docs",), query="lazy dog", limit=2, offset=2),
            search(("docs",), query="grey wolf", filter={"kind": "a"}),
            search(("docs", "sub"), query="quick"),
            search(("docs",), query="quick", limit=10, offset=4),
            search(("docs",), query="quick", limit=0),
            search(("docs",), filter={"kind": "a"}),  # no query: unranked
            search(("nothing",), query="quick"),
        ],
        [put(("docs",), "d1", {"text": "sleeping cats", "kind": "a"}), put(("docs",), "d2", None)],
        [search(("docs",), query="sleeping cats"), search(("docs",), query="quick fox", limit=3)],
        [put(("docs",), "d6", {"title": "only a title now"}, index=["title", "body[*]"])],
        [search(("docs",), query="grey wolf"), search(("docs",), query="only a title now", limit=2)],
    ])


def test_vector_search_whole_value_and_nested_paths() -> None:
    for fields in (None, ["$"], ["meta.title", "sections[*].text", "sections[-1].note"]):
        ref, store = pair(fields)
        run_both(ref, store, [
            [
                put(("n",), "a", {"meta": {"title": "Bitemporal databases"},
                                  "sections": [{"text": "valid time"}, {"text": "transaction time", "note": "xt"}]}),
                put(("n",), "b", {"meta": {"title": "Vector search"}, "sections": [{"text": "HNSW graphs"}]}),
                put(("n",), "c", {"meta": {"title": "Cooking"}, "sections": []}),
            ],
            [search(("n",), query=q) for q in ("transaction time", "HNSW graphs", "Cooking", "xt")],
        ])


def test_vector_search_ties_across_a_page_boundary() -> None:
    ref, store = pair(["text"])
    same = {"text": "shared words"}
    pages: list[Op] = [search(("t",), query="shared words", limit=lim, offset=off) for lim in (1, 2, 3)
                       for off in (0, 1, 3)]
    run_both(ref, store, [
        [put(("t",), "old1", same), put(("t", "x"), "old2", same), put(("t",), "other", {"text": "different"})],
        [put(("t",), "mid", same)],
        [put(("t", "y"), "new1", same), put(("t",), "new2", same)],
        [*pages, search(("t",), query="shared words", limit=2, filter={"text": "shared words"})],
    ])


def test_non_ascii_and_odd_keys() -> None:
    ref, store = pair(["text"])
    run_both(ref, store, [
        [put(("ünï", "çødé"), "ключ/with spaces", {"text": "日本語のテキスト", "emoji": "🚀"}),
         put(("ünï",), "", {"text": "empty key"}), put(("ünï",), "a\x00b", {"text": "nul in key"})],
        [GetOp(("ünï", "çødé"), "ключ/with spaces"), GetOp(("ünï",), ""), GetOp(("ünï",), "a\x00b"),
         search(("ünï",), query="日本語"), listing()],
    ])


# ---------------------------------------------------------------------------- random sequences

NAMESPACES = [("a",), ("a", "b"), ("a", "c"), ("b",), ("a", "b", "c")]
PREFIXES = [(), ("a",), ("a", "b"), ("b",), ("c",)]
PATTERNS = [("a",), ("*",), ("a", "*"), ("*", "b"), ("c",), ("b",)]
TEXTS = ["red apple", "green apple", "blue sky", "deep blue sea", "apple pie"]

values = st.fixed_dictionaries(
    {"n": st.integers(0, 5), "c": st.sampled_from(["red", "blue"])},
    optional={"text": st.sampled_from(TEXTS), "m": st.fixed_dictionaries({"x": st.integers(0, 2)})},
)
filters = st.one_of(
    st.none(),
    st.none(),
    st.fixed_dictionaries({"c": st.sampled_from(["red", "blue"])}),
    st.builds(lambda op, v: {"n": {op: v}}, st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
              st.integers(0, 5)),
    st.fixed_dictionaries({"m": st.fixed_dictionaries({"x": st.integers(0, 2)})}),
)
puts = st.builds(put, st.sampled_from(NAMESPACES), st.sampled_from(["k0", "k1", "k2"]),
                 st.one_of(values, values, values, st.none()),  # mostly writes, some deletes
                 st.sampled_from([None, None, False, ["text"], ["c"], ["text", "c"]]))
reads = st.one_of(
    st.builds(GetOp, st.sampled_from(NAMESPACES), st.sampled_from(["k0", "k1", "k2", "k3"])),
    st.builds(lambda p, f, lim, off, q: SearchOp(p, f, lim, off, q), st.sampled_from(PREFIXES), filters,
              st.integers(0, 5), st.sampled_from([0, 0, 1, 3]), st.one_of(st.none(), st.sampled_from(TEXTS))),
    st.builds(lambda p, s, d, lim, off: listing(p, s, max_depth=d, limit=lim, offset=off),
              st.one_of(st.none(), st.sampled_from(PATTERNS)), st.one_of(st.none(), st.sampled_from(PATTERNS)),
              st.one_of(st.none(), st.integers(1, 3)), st.integers(1, 4), st.integers(0, 2)),
)
sequences = st.tuples(
    st.lists(puts, min_size=2, max_size=8),  # a first batch that fills the store
    st.lists(st.lists(st.one_of(puts, reads, reads), min_size=1, max_size=5), min_size=1, max_size=8),
).map(lambda t: [t[0], *t[1]])


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(batches=sequences, indexed=st.booleans(), fields=st.sampled_from([["text"], ["$"]]))
def test_random_sequences_match_in_memory_store(batches: list[list[Op]], indexed: bool, fields: list[str]) -> None:
    note(f"batches = {batches!r}")  # the falsifying example, readable (the strategy's repr is not)
    ref, store = pair(fields, indexed=indexed)
    try:
        run_both(ref, store, batches)
        # and the whole final state, through the public methods
        final: list[Op] = [search(p, limit=100) for p in PREFIXES]
        final += [search((), query=t, limit=100) for t in TEXTS]
        final += [search((), filter={"n": {op: v}}, limit=100)
                  for op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte") for v in (1, 3)]
        run_both(ref, store, [[*final, listing(), listing(max_depth=1)]])
    finally:
        store.close()


# ---------------------------------------------------------------------------- validation and errors


def test_namespace_validation() -> None:
    store = AetherStore()
    for bad in (("a.b",), ("",), ("a", 1)):
        with pytest.raises(InvalidNamespaceError):
            store.batch([GetOp(bad, "k")])  # type: ignore[arg-type]
        with pytest.raises(InvalidNamespaceError):
            store.batch([SearchOp(bad)])  # type: ignore[arg-type]
    with pytest.raises(InvalidNamespaceError):
        store.batch([PutOp((), "k", {"v": 1})])
    with pytest.raises(InvalidNamespaceError):
        store.put(("langgraph", "x"), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.list_namespaces(prefix=("a.b",))
    with pytest.raises(InvalidNamespaceError):  # nothing of a batch runs when one op is invalid
        store.batch([PutOp(("ok",), "k", {"v": 1}), GetOp(("bad.label",), "k")])
    assert store.get(("ok",), "k") is None


def test_bad_values_and_filters_raise_aether_errors() -> None:
    store = AetherStore()
    with pytest.raises(aether.InvalidInputError):
        store.put(("a",), "k", {"when": datetime.now(UTC)})  # not JSON
    with pytest.raises(aether.InvalidInputError):
        store.put(("a",), "k", {"x": float("nan")})
    with pytest.raises(aether.InvalidInputError):
        store.batch([PutOp(("a",), "k", ["not", "a", "mapping"])])  # type: ignore[arg-type]
    store.put(("a",), "k", {"x": 1})
    with pytest.raises(ValueError, match=r"\$regex"):
        store.search(("a",), filter={"x": {"$regex": "1"}})
    with pytest.raises(aether.InvalidInputError):
        store.search(("a",), limit=-1)
    assert store.get(("a",), "k").value == {"x": 1}  # type: ignore[union-attr]


def test_index_dims_must_match_the_store() -> None:
    with pytest.raises(aether.ConfigError):
        AetherStore(index={"embed": DeterministicFakeEmbedding(size=8)})
    mem = aether.open(embedder=aether.HashingEmbedder(dim=32))
    with pytest.raises(aether.ConfigError):
        AetherStore(memory=mem, index={"dims": 16, "embed": DeterministicFakeEmbedding(size=16)})
    mem.close()


# ---------------------------------------------------------------------------- timestamps, async, persistence


def test_timestamps_created_kept_updated_moves() -> None:
    store = AetherStore()
    store.put(("a",), "k", {"v": 1})
    first = store.get(("a",), "k")
    assert first is not None and first.created_at == first.updated_at
    assert first.updated_at.tzinfo is not None and first.updated_at.utcoffset() == timedelta(0)
    assert first.updated_at == store.last_commit
    store.put(("a",), "k", {"v": 2})
    second = store.get(("a",), "k")
    assert second is not None and second.value == {"v": 2}
    assert second.created_at == first.created_at and second.updated_at > first.updated_at
    store.delete(("a",), "k")
    store.put(("a",), "k", {"v": 3})
    third = store.get(("a",), "k")
    assert third is not None and third.created_at > second.updated_at  # a new item after a delete


def test_async_methods_match_sync() -> None:
    async def main() -> None:
        ref = Reference(index=index_config(["text"]))
        store = AetherStore(index=index_config(["text"]))
        for s in (ref, store):
            await s.aput(("a", "b"), "k1", {"text": "red apple"})
            await s.aput(("a",), "k2", {"text": "blue sky"})
        for coro_ref, coro_store, op in (
            (ref.aget(("a", "b"), "k1"), store.aget(("a", "b"), "k1"), GetOp(("a", "b"), "k1")),
            (ref.asearch(("a",), query="apple"), store.asearch(("a",), query="apple"), search(("a",), query="x")),
            (ref.alist_namespaces(), store.alist_namespaces(), listing()),
        ):
            same_result(op, await coro_ref, await coro_store)
        await store.adelete(("a",), "k2")
        assert await store.aget(("a",), "k2") is None
        got = await store.abatch([GetOp(("a", "b"), "k1"), PutOp(("a",), "k3", {"text": "x"}), GetOp(("a",), "k3")])
        assert got[0] is not None and got[1] is None and got[2] is None

    asyncio.run(main())


def test_async_embedding_function_is_awaited() -> None:
    fake = DeterministicFakeEmbedding(size=DIMS)

    async def embed(texts: list[str]) -> list[list[float]]:
        return fake.embed_documents(texts)

    cfg: Any = {"dims": DIMS, "embed": embed, "fields": ["text"]}
    store = AetherStore(index=cfg)

    async def main() -> list[SearchItem]:
        await store.aput(("a",), "k1", {"text": "red apple"})
        await store.aput(("a",), "k2", {"text": "blue sky"})
        return await store.asearch(("a",), query="blue sky")

    hits = asyncio.run(main())
    assert [h.key for h in hits] == ["k2", "k1"] and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_persists_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "lg"
    with AetherStore(path, index=index_config(["text"])) as store:
        store.put(("users", "alice"), "prefs", {"text": "likes dark mode"})
        store.put(("users", "bob"), "prefs", {"text": "likes light mode"})
        created = store.get(("users", "alice"), "prefs")
    with AetherStore(path, index=index_config(["text"])) as store:
        again = store.get(("users", "alice"), "prefs")
        assert again is not None and again.value == {"text": "likes dark mode"}
        assert again.created_at == created.created_at  # type: ignore[union-attr]
        assert store.search(("users",), query="likes dark mode")[0].key == "prefs"
        assert store.list_namespaces() == [("users", "alice"), ("users", "bob")]
    with AetherStore(path) as plain:  # reopened without an index: key-value access still works
        assert plain.get(("users", "bob"), "prefs") is not None


def test_the_stores_own_model_embeds_without_embed() -> None:
    mem = aether.open(embedder=aether.HashingEmbedder(dim=32))
    store = AetherStore(memory=mem, index={"dims": 32, "fields": ["text"]})
    store.put(("m",), "1", {"text": "alpha beta gamma"})
    store.put(("m",), "2", {"text": "delta epsilon"})
    hits = store.search(("m",), query="delta epsilon")
    assert [h.key for h in hits] == ["2", "1"] and hits[0].score is not None
    store.close()
    assert mem.get(lg._item_id(("m",), "1")) is not None  # the given memory is not closed by the store
    mem.close()


# ---------------------------------------------------------------------------- as of


def test_as_of_replays_what_the_store_knew() -> None:
    store = AetherStore(index=index_config(["text"]))
    store.put(("agent", "facts"), "city", {"text": "Alice lives in Paris"})
    t1 = store.get(("agent", "facts"), "city").updated_at  # type: ignore[union-attr]
    store.put(("agent", "facts"), "city", {"text": "Alice lives in Lyon"})
    store.put(("agent", "todo"), "t1", {"text": "book a train"})
    t2 = store.last_commit
    assert t2 is not None
    store.delete(("agent", "todo"), "t1")

    then = store.as_of(t1)
    assert then.get(("agent", "facts"), "city").value == {"text": "Alice lives in Paris"}  # type: ignore[union-attr]
    assert [h.value["text"] for h in then.search(("agent",), query="where does Alice live")] == [
        "Alice lives in Paris"
    ]
    assert then.list_namespaces() == [("agent", "facts")]
    assert then.last_commit == t1
    mid = store.as_of(t2.isoformat())
    assert mid.get(("agent", "todo"), "t1") is not None
    assert mid.list_namespaces() == [("agent", "facts"), ("agent", "todo")]
    assert store.get(("agent", "todo"), "t1") is None
    assert store.list_namespaces() == [("agent", "facts")]
    now = store.get(("agent", "facts"), "city")
    assert now is not None and now.value == {"text": "Alice lives in Lyon"}
    with pytest.raises(aether.ReadOnlyError):
        then.put(("agent", "facts"), "city", {"text": "rewrite history"})
    with pytest.raises(aether.ReadOnlyError):
        then.delete(("agent", "facts"), "city")
    with pytest.raises(aether.NaiveDatetimeError):
        store.as_of(datetime(2024, 1, 1))
    with pytest.raises(aether.InvalidInputError):
        store.as_of("yesterday")
    before_anything = store.as_of(t1 - timedelta(microseconds=1))
    assert before_anything.search(()) == [] and before_anything.list_namespaces() == []


# ---------------------------------------------------------------------------- TTL


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    """Valid-time "now" of the store, stepped by the test (transaction times stay real)."""
    now = [datetime.now(UTC)]
    monkeypatch.setattr(lg, "_utcnow", lambda: now[0])
    yield now


def test_ttl_expires_and_reads_refresh(clock: list[datetime]) -> None:
    t0 = clock[0]
    store = AetherStore()
    assert store.supports_ttl
    store.put(("s",), "k", {"v": 1}, ttl=1.0)  # one minute
    store.put(("s",), "forever", {"v": 0})
    put_at = store.get(("s",), "k", refresh_ttl=False).updated_at  # type: ignore[union-attr]
    clock[0] = t0 + timedelta(seconds=50)
    assert store.get(("s",), "k", refresh_ttl=False) is not None  # no refresh: still expires at t0 + 60 s
    clock[0] = t0 + timedelta(seconds=70)
    assert store.get(("s",), "k") is None
    assert [i.key for i in store.search(("s",))] == ["forever"]
    assert store.as_of(put_at).get(("s",), "k") is not None  # history keeps it

    store.put(("s",), "k", {"v": 2}, ttl=1.0)  # expires at t0 + 130 s
    clock[0] = t0 + timedelta(seconds=100)
    got = store.get(("s",), "k")  # refreshes: now expires at t0 + 160 s
    assert got is not None and got.value == {"v": 2}
    clock[0] = t0 + timedelta(seconds=150)
    found = store.search(("s",), filter={"v": 2})  # refreshes: t0 + 210 s
    assert [i.key for i in found] == ["k"]
    assert found[0].updated_at == got.updated_at  # a refresh is not an update
    clock[0] = t0 + timedelta(seconds=205)
    assert store.list_namespaces() == [("s",)]
    assert store.get(("s",), "k", refresh_ttl=False) is not None
    clock[0] = t0 + timedelta(seconds=215)
    assert store.get(("s",), "k") is None
    store.delete(("s",), "forever")
    assert store.list_namespaces() == []  # expired items are not listed


def test_ttl_config_default_and_refresh_off(clock: list[datetime]) -> None:
    t0 = clock[0]
    store = AetherStore(ttl={"default_ttl": 2.0, "refresh_on_read": False})
    store.put(("s",), "k", {"v": 1})
    store.put(("s",), "keep", {"v": 1}, ttl=None)  # an explicit None: no expiry
    clock[0] = t0 + timedelta(seconds=100)
    assert store.get(("s",), "k") is not None  # read without refresh (the config's default)
    clock[0] = t0 + timedelta(seconds=130)
    assert store.get(("s",), "k") is None
    assert store.get(("s",), "keep") is not None
    store.put(("s",), "r", {"v": 1})
    clock[0] = t0 + timedelta(seconds=200)
    assert store.get(("s",), "r", refresh_ttl=True) is not None  # an explicit refresh
    clock[0] = t0 + timedelta(seconds=300)
    assert store.get(("s",), "r") is not None  # refreshed at 200 s: expires at 320 s
    clock[0] = t0 + timedelta(seconds=330)
    assert store.get(("s",), "r") is None


def test_ttl_with_an_index_texts_of_an_expired_item_do_not_count(clock: list[datetime]) -> None:
    t0 = clock[0]
    store = AetherStore(index=index_config())
    store.put(("s",), "k", {"a": "red apple", "b": "blue sky"}, index=["a", "b"], ttl=1.0)
    store.put(("s",), "other", {"a": "green apple"}, index=["a"])
    hit = store.search(("s",), query="blue sky", refresh_ttl=False)[0]
    assert hit.key == "k" and hit.score == pytest.approx(1.0, abs=1e-5)
    clock[0] = t0 + timedelta(seconds=90)  # expired, its texts still in the store
    assert [h.key for h in store.search(("s",), query="blue sky")] == ["other"]
    store.put(("s",), "k", {"a": "deep blue sea"}, index=["a"])  # a new item: one text, not "blue sky"
    ref = Reference(index=index_config())
    ref.put(("s",), "k", {"a": "deep blue sea"}, index=["a"])
    ref.put(("s",), "other", {"a": "green apple"}, index=["a"])
    want = ref.search(("s",), query="blue sky")
    got = store.search(("s",), query="blue sky")
    assert [(h.key, round(h.score or 0, 4)) for h in got] == [(h.key, round(h.score or 0, 4)) for h in want]
