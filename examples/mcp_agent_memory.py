"""Agent memory through MCP: remember, correct, forget and recall "as of" an earlier moment.

Runs offline, with no LLM: a scripted conversation plays the agent's side and calls the memory
server's tools through a real MCP client (connected in-process here; a desktop assistant or an IDE
agent reaches the same tools through ``aether mcp STORE`` over stdio or HTTP). The store uses aether's
deterministic hashing embedder so that the example is fast; drop ``embedder=`` to use the bundled
all-MiniLM-L6-v2 model.

    python examples/mcp_agent_memory.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import mcp

import aether
from aether.integrations.mcp import build_server


async def tool(client: mcp.Client, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    if result.is_error:
        raise RuntimeError(f"{name} failed: {result.content}")
    assert result.structured_content is not None
    return result.structured_content


def best(recalled: dict[str, Any]) -> str:
    hits = recalled["hits"]
    return hits[0]["content"] if hits else "(nothing)"


async def conversation(memory: aether.Memory) -> None:
    async with mcp.Client(build_server(memory)) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        print(f"tools: {', '.join(names)}")

        print("user : I have lived in Paris since 2024. My manager is Dana.")
        home = await tool(client, "remember", content="Sam lives in Paris", tags={"user": "sam"},
                          valid_from="2024-01-01")
        await tool(client, "remember", content="Sam's manager is Dana", tags={"user": "sam"})
        first_turn = home["tx_time"]  # what the agent knew after the first turn

        print("user : Correction -- I moved to Berlin in March.")
        await tool(client, "correct", atom_id=home["atom_id"], content="Sam lives in Berlin",
                   valid_from="2025-03-01")

        print("user : I was on a Lisbon trip in January; it is over now.")
        trip = await tool(client, "remember", content="Sam is on a trip to Lisbon", tags={"user": "sam"},
                          valid_from="2025-01-05")
        await tool(client, "forget", atom_id=trip["atom_id"], at="2025-01-20")

        question = "where does Sam live?"
        now = await tool(client, "recall", query=question, k=1, tags={"user": "sam"})
        then = await tool(client, "recall", query=question, k=1, tags={"user": "sam"}, as_of=first_turn)
        in_2024 = await tool(client, "recall", query=question, k=1, tags={"user": "sam"}, valid_at="2024-06-01")
        jan = await tool(client, "recall", query="Sam trip Lisbon", k=1, valid_at="2025-01-10")
        trips = await tool(client, "recall", query="Sam trip Lisbon", k=5, tags={"user": "sam"})
        print(f"{question} (now)                  : {best(now)}")
        print(f"{question} (as of the first turn) : {best(then)}")
        print(f"{question} (valid at 2024-06-01)  : {best(in_2024)}")
        print(f"trip to Lisbon? (valid at 2025-01-10)       : {best(jan)}")
        print(f"trip to Lisbon? (now)                       : "
              f"{'still on it' if 'Sam is on a trip to Lisbon' in [h['content'] for h in trips['hits']] else 'over'}")
        versions = (await tool(client, "history", atom_id=home["atom_id"]))["versions"]
        print(f"history of Sam's home: {len(versions)} versions")
        for v in versions:
            status = "believed" if v["tx_to"] is None else "superseded"
            print(f"  {v['content']:<20} valid {v['valid_from'][:10]} -> {(v['valid_to'] or 'open')[:10]:<10}  "
                  f"({status})")
        assert best(now) == "Sam lives in Berlin" and best(then) == "Sam lives in Paris"
        assert best(in_2024) == "Sam lives in Paris" and best(jan) == "Sam is on a trip to Lisbon"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, aether.open(
        Path(tmp) / "agent-memory", embedder=aether.HashingEmbedder(dim=256)
    ) as memory:
        asyncio.run(conversation(memory))


if __name__ == "__main__":
    main()
