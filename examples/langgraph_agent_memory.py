"""Agent memory through LangGraph: a graph's long-term store in aether, replayed "as of" an earlier turn.

Runs offline, with no LLM: a scripted conversation drives a one-node LangGraph graph whose node
writes what the user says into the graph's store (injected as ``store``) and recalls the most relevant
memory. The store is :class:`aether.integrations.langgraph.AetherStore` on disk, embedding with the
aether store's own model (the deterministic hashing embedder here, so that the example is fast;
drop ``embedder=`` to use the bundled all-MiniLM-L6-v2, or give ``index={"embed": ...}`` any LangChain
embeddings). ``store.as_of(t)`` then shows what the agent knew at any earlier write.

    python examples/langgraph_agent_memory.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

import aether
from aether.integrations.langgraph import AetherStore

USER = ("memories", "sam")


class Turn(TypedDict, total=False):
    remember: dict[str, str]  # key -> fact to store (a known key is an update)
    forget: list[str]  # keys to delete
    question: str
    answer: str


def agent(turn: Turn, *, store: BaseStore) -> Turn:
    # LangGraph passes the graph's store (the AetherStore given to compile) as ``store``
    for key, fact in turn.get("remember", {}).items():
        store.put(USER, key, {"text": fact})
    for key in turn.get("forget", []):
        store.delete(USER, key)
    hits = store.search(USER, query=turn["question"], limit=1) if turn.get("question") else []
    return {"answer": hits[0].value["text"] if hits else "(nothing)"}


def build(store: AetherStore) -> Any:
    graph = StateGraph(Turn)
    graph.add_node("agent", agent)  # type: ignore[call-overload]  # mypy matches none of its overloads, even for a plain node
    graph.add_edge(START, "agent")
    graph.add_edge("agent", END)
    return graph.compile(store=store)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        memory = aether.open(Path(tmp) / "agent-memory", embedder=aether.HashingEmbedder(dim=256))
        store = AetherStore(memory=memory, index={"dims": 256, "fields": ["text"]})
        app = build(store)
        script: list[tuple[str, Turn]] = [
            ("I live in Paris and I drink green tea.",
             {"remember": {"home": "Sam lives in Paris", "drink": "Sam drinks green tea"}}),
            ("Where do I live?", {"question": "where does Sam live"}),
            ("I moved to Berlin, and I am learning the cello.",
             {"remember": {"home": "Sam lives in Berlin", "hobby": "Sam is learning the cello"}}),
            ("I quit tea.", {"forget": ["drink"]}),
            ("Where do I live now?", {"question": "where does Sam live"}),
            ("What am I learning?", {"question": "what is Sam learning"}),
        ]
        checkpoints = []
        for said, turn in script:
            out = app.invoke(turn)
            checkpoints.append(store.last_commit)
            print(f"user : {said}")
            if turn.get("question"):
                print(f"agent: {out['answer']}")

        first = checkpoints[0]
        assert first is not None
        then = store.as_of(first)
        home_then = then.get(USER, "home")
        home_now = store.get(USER, "home")
        assert home_then is not None and home_now is not None
        print(f"as of turn 1, home        : {home_then.value['text']}")
        print(f"now, home                 : {home_now.value['text']} (created {home_now.created_at:%H:%M:%S}, "
              f"updated {home_now.updated_at:%H:%M:%S})")
        print(f"as of turn 1, keys        : {sorted(i.key for i in then.search(USER))}")
        print(f"now, keys                 : {sorted(i.key for i in store.search(USER))}")
        print(f"namespaces                : {store.list_namespaces()}")
        assert home_then.value["text"] == "Sam lives in Paris" and home_now.value["text"] == "Sam lives in Berlin"
        assert then.get(USER, "drink") is not None and store.get(USER, "drink") is None
        memory.close()


if __name__ == "__main__":
    main()
