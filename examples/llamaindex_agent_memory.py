"""Agent memory through LlamaIndex: a VectorStoreIndex whose vector store remembers every version.

Runs offline, with no LLM: a scripted conversation plays the agent's side, and recall goes through
the index's retriever. The embedding model here is aether's deterministic hashing model wrapped as
a LlamaIndex ``BaseEmbedding`` so that the example is fast and self-contained; any LlamaIndex
embedding model works the same way (the store takes its dimension on the first insert).

    python examples/llamaindex_agent_memory.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

import aether
from aether.integrations.llamaindex import AetherVectorStore

_HASH = aether.HashingEmbedder(dim=256)


class HashingEmbedding(BaseEmbedding):
    """aether's hashing embedder as a LlamaIndex embedding model (texts that share words are close)."""

    def _get_text_embedding(self, text: str) -> list[float]:
        return _HASH.embed([text])[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


def fact(node_id: str, text: str, topic: str) -> TextNode:
    return TextNode(id_=node_id, text=text, metadata={"user": "sam", "topic": topic})


def recall(index: VectorStoreIndex, question: str, topic: str, **store_kwargs: object) -> str:
    retriever = index.as_retriever(
        similarity_top_k=1,
        filters=MetadataFilters(filters=[MetadataFilter(key="topic", value=topic)]),
        vector_store_kwargs=store_kwargs,
    )
    hits = retriever.retrieve(question)
    return hits[0].node.get_content() if hits else "(nothing)"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = AetherVectorStore(str(Path(tmp) / "agent-memory"))
        index = VectorStoreIndex(
            [], storage_context=StorageContext.from_defaults(vector_store=store), embed_model=HashingEmbedding()
        )

        print("user : My project is called Falcon and it ships in March.")
        index.insert_nodes([
            fact("sam:project", "Sam's project is called Falcon", "project"),
            fact("sam:deadline", "Falcon ships in March", "deadline"),
        ])
        checkpoint = store.last_commit

        print("user : Update -- the release slipped to May.")
        index.insert_nodes([fact("sam:deadline", "Falcon ships in May", "deadline")])  # same id: a correction

        print("user : Also, I prefer short answers.")
        index.insert_nodes([fact("sam:style", "Sam prefers short answers", "style")])

        print("user : Forget my project name, it is confidential.")
        store.delete_nodes(["sam:project"])

        deadline_now = recall(index, "when does Falcon ship", "deadline")
        deadline_then = recall(index, "when does Falcon ship", "deadline", as_of=checkpoint)
        project_now = recall(index, "what is the project called", "project")
        project_then = recall(index, "what is the project called", "project", as_of=checkpoint)
        style_then = recall(index, "how should I answer", "style", as_of=checkpoint)
        print(f"agent: the release is {deadline_now!r}; at the checkpoint I believed {deadline_then!r}")
        print(f"agent: the project name now -> {project_now!r}; at the checkpoint -> {project_then!r}")
        print(f"agent: answer style known at the checkpoint -> {style_then!r}")
        history = [v.content.inline for v in store.memory.history("sam:deadline")] if store.memory else []
        print(f"agent: every version of the deadline -> {history}")
        store.close()

    assert deadline_now == "Falcon ships in May" and deadline_then == "Falcon ships in March"
    assert project_now == "(nothing)" and project_then == "Sam's project is called Falcon"
    assert style_then == "(nothing)"
    assert history == ["Falcon ships in March", "Falcon ships in May"]
    print("ok")


if __name__ == "__main__":
    main()
