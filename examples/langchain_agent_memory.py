"""Agent memory through LangChain: store, correct, forget and recall "as of" an earlier moment.

Runs offline, with no LLM: a scripted conversation plays the agent's side. The embedding here is
aether's deterministic hashing model wrapped as a LangChain ``Embeddings`` so that the example is
fast and self-contained; pass any LangChain embeddings instead (``HuggingFaceEmbeddings``,
``OpenAIEmbeddings``...), or none to use the store's bundled all-MiniLM-L6-v2 model.

    python examples/langchain_agent_memory.py
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from langchain_core.embeddings import Embeddings

import aether
from aether.integrations.langchain import AetherVectorStore


class HashingEmbeddings(Embeddings):
    """aether's hashing embedder as LangChain embeddings (texts that share words are close)."""

    def __init__(self, dim: int = 256) -> None:
        self._inner = aether.HashingEmbedder(dim=dim)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._inner.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self._inner.embed([text])[0].tolist()


def recall(store: AetherVectorStore, question: str, **when: object) -> str:
    docs = store.similarity_search(question, k=1, filter={"user": "sam"}, **when)
    return docs[0].page_content if docs else "(nothing)"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "agent-memory")
        store = AetherVectorStore(path, embedding=HashingEmbeddings())

        print("user : I live in Paris, and I drink green tea every morning.")
        store.add_texts(
            ["Sam lives in Paris", "Sam drinks green tea every morning"],
            metadatas=[{"user": "sam", "topic": "home"}, {"user": "sam", "topic": "drink"}],
            ids=["sam:home", "sam:drink"],
        )
        checkpoint = store.last_commit  # what the agent knew after the first turn

        print("user : Correction -- I actually moved to Berlin.")
        store.add_texts(["Sam lives in Berlin"], metadatas=[{"user": "sam", "topic": "home"}], ids=["sam:home"])

        print("user : Next week I am in Tokyo for a conference.")
        next_week = datetime.now(UTC) + timedelta(days=7)
        store.add_texts(
            ["Sam is in Tokyo for a conference"], metadatas=[{"user": "sam", "topic": "travel"}],
            ids=["sam:travel"], valid_from=next_week, valid_to=next_week + timedelta(days=5),
        )

        print("user : Please forget my drink preference.")
        store.delete(["sam:drink"])

        now_home = recall(store, "where does Sam live")
        then_home = recall(store, "where does Sam live", as_of=checkpoint)
        now_drink = store.similarity_search("what does Sam drink", k=1, filter={"topic": "drink"})
        then_drink = recall(store, "what does Sam drink", as_of=checkpoint)
        travel_now = store.similarity_search("where is Sam", k=3, filter={"topic": "travel"})
        travel_then = store.similarity_search(
            "where is Sam", k=1, filter={"topic": "travel"}, valid_at=next_week + timedelta(days=1)
        )
        print(f"agent: Sam lives -> {now_home!r}; before the correction I believed {then_home!r}")
        print(f"agent: Sam's drink now -> {[d.page_content for d in now_drink]}; before -> {then_drink!r}")
        print(f"agent: trips true today -> {len(travel_now)}; next week -> {travel_then[0].page_content!r}")
        store.close()

        # The memory is a store on disk: a new process (here, a new object) recalls the same.
        store = AetherVectorStore(path, embedding=HashingEmbeddings())
        retriever = store.as_retriever(search_kwargs={"k": 1, "filter": {"topic": "home"}, "as_of": checkpoint})
        replay = retriever.invoke("where does Sam live")[0].page_content
        print(f"agent: replaying the first turn after a restart -> {replay!r}")
        store.close()

    assert now_home == "Sam lives in Berlin" and then_home == "Sam lives in Paris"
    assert now_drink == [] and then_drink == "Sam drinks green tea every morning"
    assert travel_now == [] and travel_then[0].page_content == "Sam is in Tokyo for a conference"
    assert replay == "Sam lives in Paris"
    print("ok")


if __name__ == "__main__":
    main()
