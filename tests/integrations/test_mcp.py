"""The MCP memory server: tools, schemas, as-of semantics and errors through a real ``mcp.Client``.

Most tests connect in-process (``mcp.Client(server)``); the last two spawn the real ``aether mcp``
entry point, once over stdio and once over streamable HTTP on a free loopback port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import anyio
import mcp
from mcp import StdioServerParameters

import aether
from aether.integrations.mcp import build_server

DIM = 32
AETHER_BIN = Path(sys.executable).parent / "aether"
BASE_TOOLS = {"remember", "recall", "correct", "forget", "history", "payload"}

Body = Callable[[mcp.Client], Awaitable[None]]


@pytest.fixture
def mem() -> Iterator[aether.Memory]:
    m = aether.open(embedder=aether.HashingEmbedder(dim=DIM))
    yield m
    m.close()


def run_client(target: Any, body: Body, *, timeout: float = 60) -> None:
    """Connect ``mcp.Client(target)`` and run ``body(client)``, bounded in time."""

    async def main() -> None:
        with anyio.fail_after(timeout):
            async with mcp.Client(target) as client:
                await body(client)

    anyio.run(main)


async def call(c: mcp.Client, tool: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured result."""
    res = await c.call_tool(tool, args)
    assert not res.is_error, res.content
    assert res.structured_content is not None
    return res.structured_content


async def fails(c: mcp.Client, tool: str, **args: Any) -> str:
    """Call a tool that must fail with a tool error; return the error text."""
    res = await c.call_tool(tool, args)
    assert res.is_error, res.structured_content
    text = " ".join(getattr(b, "text", "") for b in res.content)
    assert text
    return text


def hints_of(tool: mcp.types.Tool) -> mcp.types.ToolAnnotations:
    assert tool.annotations is not None
    return tool.annotations


def contents(result: dict[str, Any]) -> list[str]:
    return [h["content"] for h in result["hits"]]


# ---------------------------------------------------------------------------- listing


def test_tools_are_listed_with_schemas_and_annotations(mem: aether.Memory) -> None:
    async def body(c: mcp.Client) -> None:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert set(tools) == BASE_TOOLS  # no erase unless allowed
        for t in tools.values():
            assert t.description and len(t.description) > 40  # written for a model to read
            assert t.input_schema["type"] == "object"
            assert t.output_schema is not None and t.output_schema.get("type") == "object"
            assert t.annotations is not None
        props = tools["remember"].input_schema["properties"]
        assert tools["remember"].input_schema["required"] == ["content"]
        assert {"content", "tags", "valid_from", "valid_to", "subject"} <= set(props)
        recall = tools["recall"].input_schema
        assert recall["required"] == ["query"]
        assert recall["properties"]["k"]["default"] == 10 and recall["properties"]["k"]["minimum"] == 1
        assert {"valid_at", "as_of", "tags", "mode"} <= set(recall["properties"])
        assert tools["correct"].input_schema["required"] == ["atom_id", "content"]
        assert tools["forget"].input_schema["required"] == ["atom_id"]
        out = tools["recall"].output_schema
        assert out is not None and set(out["properties"]) >= {"hits", "as_of"}
        ann = {n: hints_of(t) for n, t in tools.items()}
        assert ann["recall"].read_only_hint and ann["recall"].idempotent_hint
        assert ann["history"].read_only_hint and ann["history"].idempotent_hint
        for name in ("remember", "correct", "forget"):
            assert ann[name].read_only_hint is False and ann[name].destructive_hint is False

    run_client(build_server(mem), body)


def test_erase_is_offered_only_when_allowed(mem: aether.Memory) -> None:
    async def body(c: mcp.Client) -> None:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert set(tools) == BASE_TOOLS | {"erase"}
        assert hints_of(tools["erase"]).destructive_hint is True
        assert hints_of(tools["erase"]).read_only_hint is False

    run_client(build_server(mem, allow_erase=True), body)


# ---------------------------------------------------------------------------- every tool


def test_remember_recall_with_tags_and_valid_time(mem: aether.Memory) -> None:
    async def body(c: mcp.Client) -> None:
        paris = await call(c, "remember", content="Alice lives in Paris", tags={"user": "alice"},
                           valid_from="2023-01-01", valid_to="2024-06-01T00:00:00Z", subject="alice")
        await call(c, "remember", content="Bob lives in Rome", tags={"user": "bob"})
        assert paris["tx_time"].endswith("+00:00")
        got = await call(c, "recall", query="where does alice live", valid_at="2023-06-01")
        assert got["valid_at"] == "2023-06-01"
        assert contents(got) == ["Alice lives in Paris"]  # Bob's fact starts now, not in 2023
        hit = got["hits"][0]
        assert hit["atom_id"] == paris["atom_id"] and hit["tags"] == {"user": "alice"}
        assert hit["valid_from"] == "2023-01-01T00:00:00+00:00"
        assert hit["valid_to"] == "2024-06-01T00:00:00+00:00"
        assert hit["tx_time"] == paris["tx_time"] and isinstance(hit["score"], float)
        now = await call(c, "recall", query="where does alice live")
        assert contents(now) == ["Bob lives in Rome"]  # Alice's Paris fact ended in 2024
        only_bob = await call(c, "recall", query="lives", tags={"user": "alice"})
        assert only_bob["hits"] == []
        one = await call(c, "recall", query="lives", k=1, valid_at="2023-06-01", mode="dense")
        assert len(one["hits"]) == 1

    run_client(build_server(mem), body)


def test_recall_as_of_an_earlier_tx_time_does_not_see_a_later_correction(mem: aether.Memory) -> None:
    async def body(c: mcp.Client) -> None:
        first = await call(c, "remember", content="The launch is on Monday", tags={"topic": "launch"})
        before = await call(c, "recall", query="when is the launch")
        assert before["as_of"] == first["tx_time"]  # an answer names the commit it reflects
        fixed = await call(c, "correct", atom_id=first["atom_id"], content="The launch moved to Friday")
        assert fixed["atom_id"] == first["atom_id"] and fixed["tx_time"] > first["tx_time"]
        assert contents(await call(c, "recall", query="when is the launch")) == ["The launch moved to Friday"]
        old = await call(c, "recall", query="when is the launch", as_of=first["tx_time"])
        assert contents(old) == ["The launch is on Monday"]
        assert old["as_of"] == first["tx_time"]
        # the tx_time the recall reported earlier works as as_of too
        assert contents(await call(c, "recall", query="launch", as_of=before["as_of"])) == ["The launch is on Monday"]
        assert contents(await call(c, "recall", query="launch", as_of=fixed["tx_time"])) == [
            "The launch moved to Friday"
        ]
        # correct keeps the tags unless new ones are given
        hit = (await call(c, "recall", query="launch"))["hits"][0]
        assert hit["tags"] == {"topic": "launch"}
        await call(c, "correct", atom_id=first["atom_id"], content="The launch is on Saturday", tags={"topic": "x"})
        assert (await call(c, "recall", query="launch"))["hits"][0]["tags"] == {"topic": "x"}

    run_client(build_server(mem), body)


def test_correct_with_a_past_valid_from(mem: aether.Memory) -> None:
    async def body(c: mcp.Client) -> None:
        a = await call(c, "remember", content="Carol works at Acme", valid_from="2020-01-01")
        await call(c, "correct", atom_id=a["atom_id"], content="Carol works at Initech", valid_from="2022-01-01")
        assert contents(await call(c, "recall", query="Carol", valid_at="2021-01-01")) == ["Carol works at Acme"]
        assert contents(await call(c, "recall", query="Carol", valid_at="2023-01-01")) == ["Carol works at Initech"]

    run_client(build_server(mem), body)


def test_forget_and_history(mem: aether.Memory) -> None:
    async def body(c: mcp.Client) -> None:
        a = await call(c, "remember", content="Dave is on vacation", valid_from="2024-01-01")
        gone = await call(c, "forget", atom_id=a["atom_id"], at="2024-02-01")
        assert gone["atom_id"] == a["atom_id"] and gone["at"] == "2024-02-01"
        assert gone["tx_time"] > a["tx_time"]
        assert (await call(c, "recall", query="Dave vacation"))["hits"] == []
        assert contents(await call(c, "recall", query="Dave", valid_at="2024-01-15")) == ["Dave is on vacation"]
        # as of before the forget, the fact was still believed open-ended
        assert contents(await call(c, "recall", query="Dave", as_of=a["tx_time"])) == ["Dave is on vacation"]
        h = await call(c, "history", atom_id=a["atom_id"])
        assert h["atom_id"] == a["atom_id"]
        versions = h["versions"]
        assert [v["tx_from"] for v in versions] == sorted(v["tx_from"] for v in versions)
        assert versions[0]["tx_from"] == a["tx_time"] and versions[0]["tx_to"] == gone["tx_time"]
        assert versions[0]["valid_to"] is None
        current = [v for v in versions if v["tx_to"] is None]
        assert len(current) == 1 and current[0]["valid_to"] == "2024-02-01T00:00:00+00:00"
        assert current[0]["content"] == "Dave is on vacation"

    run_client(build_server(mem), body)


def test_erase_removes_all_time(mem: aether.Memory) -> None:
    async def body(c: mcp.Client) -> None:
        a = await call(c, "remember", content="Eve's phone is 555-0100", subject="eve")
        b = await call(c, "remember", content="Eve likes tea", subject="eve")
        keep = await call(c, "remember", content="Frank likes coffee", subject="frank")
        res = await call(c, "erase", atom_id=a["atom_id"])
        assert res["erased_versions"] == 1
        assert "AtomNotFoundError" in await fails(c, "history", atom_id=a["atom_id"])
        res = await call(c, "erase", subject="eve")
        assert res["erased_versions"] == 1
        after = await call(c, "recall", query="likes", as_of=b["tx_time"])
        assert contents(after) == []  # not even as of before the erasure
        assert contents(await call(c, "recall", query="likes")) == ["Frank likes coffee"]
        assert (await call(c, "history", atom_id=keep["atom_id"]))["versions"]
        await fails(c, "erase")  # neither subject nor atom_id
        await fails(c, "erase", subject="eve", atom_id=keep["atom_id"])  # both

    run_client(build_server(mem, allow_erase=True), body)


# ---------------------------------------------------------------------------- errors


def test_bad_arguments_are_tool_errors_and_the_server_keeps_serving(mem: aether.Memory) -> None:
    async def body(c: mcp.Client) -> None:
        a = await call(c, "remember", content="Gina plays chess")
        assert "NaiveDatetimeError" in await fails(c, "recall", query="x", valid_at="2024-01-01T10:00:00")
        assert "ISO-8601" in await fails(c, "recall", query="x", as_of="last tuesday")
        assert "not a valid date" in await fails(c, "remember", content="y", valid_from="2024-02-30")
        assert "InvalidIntervalError" in await fails(
            c, "remember", content="y", valid_from="2024-02-01", valid_to="2024-01-01"
        )
        assert "InvalidContentError" in await fails(c, "remember", content="   ")
        assert "InvalidTagError" in await fails(c, "remember", content="y", tags={"": "empty key"})
        assert "AtomNotFoundError" in await fails(c, "correct", atom_id="no-such-atom", content="z")
        assert "AtomNotFoundError" in await fails(c, "forget", atom_id="no-such-atom")
        assert "AtomNotFoundError" in await fails(c, "history", atom_id="no-such-atom")
        await fails(c, "recall", query="x", k=0)  # schema: k >= 1
        await fails(c, "recall", query="x", k="many")
        await fails(c, "recall", query="x", mode="fuzzy")
        await fails(c, "remember")  # content is required
        await fails(c, "remember", content=42)
        await fails(c, "erase", subject="anyone")  # not offered by this server
        await fails(c, "no_such_tool")
        # nothing was written by the failed calls, and the server still answers
        assert contents(await call(c, "recall", query="chess", k=10)) == ["Gina plays chess"]
        assert len((await call(c, "history", atom_id=a["atom_id"]))["versions"]) == 1

    run_client(build_server(mem), body)


def test_a_read_only_view_refuses_writes(mem: aether.Memory) -> None:
    mem.add("Hana speaks Japanese")
    view = mem.view()

    async def body(c: mcp.Client) -> None:
        assert "ReadOnlyError" in await fails(c, "remember", content="Hana speaks French")
        assert contents(await call(c, "recall", query="Hana")) == ["Hana speaks Japanese"]

    run_client(build_server(view), body)


# ---------------------------------------------------------------------------- real transports


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_stdio_subprocess_through_the_aether_entry_point(tmp_path: Path) -> None:
    store = tmp_path / "store"
    params = StdioServerParameters(
        command=str(AETHER_BIN), args=["mcp", str(store), "--model", f"hashing:{DIM}"], env=_env()
    )
    seen: dict[str, Any] = {}

    async def body(c: mcp.Client) -> None:
        assert {t.name for t in (await c.list_tools()).tools} == BASE_TOOLS
        a = await call(c, "remember", content="Ivan lives in Oslo")
        await call(c, "correct", atom_id=a["atom_id"], content="Ivan lives in Bergen")
        assert contents(await call(c, "recall", query="Ivan", as_of=a["tx_time"])) == ["Ivan lives in Oslo"]
        assert "NaiveDatetimeError" in await fails(c, "recall", query="Ivan", valid_at="2024-01-01T00:00:00")
        seen["id"] = a["atom_id"]

    run_client(params, body, timeout=90)
    # the server process closed the store cleanly: the memory is on disk
    with aether.open(store, read_only=True) as m:
        got = m.get(seen["id"])
        assert got is not None and got.content.inline == "Ivan lives in Bergen"
        assert m.embedder.identity == aether.HashingEmbedder(dim=DIM).identity


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"aether mcp exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"aether mcp did not listen on {port} within {timeout}s")


def test_streamable_http_subprocess_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    cmd = [str(AETHER_BIN), "mcp", str(tmp_path / "store"), "--model", f"hashing:{DIM}",
           "--transport", "streamable-http", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc, timeout=60)

        async def body(c: mcp.Client) -> None:
            assert {t.name for t in (await c.list_tools()).tools} == BASE_TOOLS
            a = await call(c, "remember", content="Judy likes jazz", tags={"user": "judy"})
            await call(c, "forget", atom_id=a["atom_id"])
            assert contents(await call(c, "recall", query="Judy")) == []
            assert contents(await call(c, "recall", query="Judy", as_of=a["tx_time"])) == ["Judy likes jazz"]
            await fails(c, "recall", query="Judy", k=-1)

        run_client(f"http://127.0.0.1:{port}/mcp", body, timeout=60)
        assert proc.poll() is None  # errors did not bring the server down
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# Documentation addresses (never this machine's), so that even the unfixed command could not bind them.
@pytest.mark.parametrize("host", ["192.0.2.10", "2001:db8::1"])
def test_streamable_http_refuses_a_non_loopback_host(tmp_path: Path, host: str) -> None:
    # Review finding: `aether mcp --transport streamable-http --host 0.0.0.0` served the write tools (and
    # erase with --allow-erase) to anyone who could reach the port: this endpoint has no API keys.
    store = tmp_path / "store"
    cmd = [str(AETHER_BIN), "mcp", str(store), "--model", f"hashing:{DIM}", "--transport", "streamable-http",
           "--host", host, "--port", str(_free_port())]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "loopback" in res.stderr and "aether serve" in res.stderr, res.stderr[-2000:]
    assert not store.exists()  # refused before anything was opened or bound
