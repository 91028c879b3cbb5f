"""The sync client's stdlib transport: keep-alive reuse, stale connections, threads, one send, proxies."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

import aether
from aether.client import RemoteMemory
from aether.client._http import StdlibTransport, _Conn

STATS = {"path": "n", "model": "hashing:8", "dim": 8, "atoms_current": 1, "atoms_total": 1, "versions": 1,
         "transactions": 1, "last_commit": None, "segments": 0, "wal_bytes": 0, "disk_bytes": 0}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    close_after: bool = False
    seen: ClassVar[list[tuple[str, str, bytes, int]]] = []

    def _reply(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        self.seen.append((self.command, self.path, body, id(self.connection)))
        out = json.dumps(STATS).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        if self.close_after:  # drop the connection without saying so (as an idle timeout does)
            self.close_connection = True

    do_GET = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"seen": [], "close_after": False})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_connections_are_reused_and_stale_ones_replaced(fake: tuple[str, type[_Handler]]) -> None:
    url, handler = fake
    with aether.connect(url, namespace="n") as mem:
        assert isinstance(mem._http, StdlibTransport)
        for _ in range(3):
            assert mem.stats().atoms_current == 1
        assert len({conn for *_, conn in handler.seen}) == 1  # one keep-alive connection
        handler.close_after = True
        for _ in range(3):  # each reply closes the connection: the next request must not fail on it
            assert mem.stats().dim == 8
        assert len(handler.seen) == 6


def test_a_connection_closed_after_the_staleness_check_is_retried_once(
    fake: tuple[str, type[_Handler]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import select

    url, handler = fake
    handler.close_after = True
    # The check sees nothing (the server's close has not arrived yet): the request goes out on a closed
    # connection, fails without a reply byte, and is sent once more on a new connection.
    monkeypatch.setattr("aether.client._http.select.select", lambda r, w, x, t: ([], [], []))
    assert select.select is not None
    with aether.connect(url, namespace="n") as mem:
        for _ in range(4):
            assert mem.stats().atoms_current == 1
    assert len(handler.seen) == 4  # each request reached the server exactly once


def test_one_client_shared_by_threads(fake: tuple[str, type[_Handler]]) -> None:
    url, handler = fake
    errors: list[BaseException] = []
    with aether.connect(url, namespace="n", api_key="secret") as mem:

        def work() -> None:
            try:
                for _ in range(10):
                    mem.stats()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors and len(handler.seen) == 40


def test_small_requests_go_out_in_one_send(fake: tuple[str, type[_Handler]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = fake
    sends: list[int] = []
    orig = _Conn.send

    def counting(self: Any, data: Any) -> None:
        sends.append(len(data))
        orig(self, data)

    monkeypatch.setattr(_Conn, "send", counting)
    t = StdlibTransport(url, headers={"Authorization": "Bearer k"}, timeout=10)
    r = t.request("POST", "/x", content=b'{"k": 1}', headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and len(sends) == 1
    assert handler.seen[-1][2] == b'{"k": 1}'
    big = b"x" * (1 << 17)  # a bulk body: headers, then the body as is (no copy)
    t.request("POST", "/x", content=big)
    assert len(sends) == 3 and handler.seen[-1][2] == big
    r = t.request("GET", "/y", params={"a": "1 2"})
    assert handler.seen[-1][1] == "/y?a=1+2"
    t.close()


def test_a_proxy_in_the_environment_keeps_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "")
    mem = RemoteMemory("http://example.invalid:8765", namespace="n")
    assert isinstance(mem._http, httpx.Client)
    mem.close()
    monkeypatch.setenv("NO_PROXY", "example.invalid")
    mem = RemoteMemory("http://example.invalid:8765", namespace="n")
    assert isinstance(mem._http, StdlibTransport)
    mem.close()


def test_bad_urls_and_dead_servers_are_typed_errors() -> None:
    from ._server_util import free_port

    with pytest.raises(aether.errors.InvalidInputError):
        aether.connect("ftp://127.0.0.1:1", namespace="n")
    with aether.connect(f"http://127.0.0.1:{free_port()}", timeout=2) as mem, \
            pytest.raises(aether.errors.RemoteError, match="cannot reach"):
        mem.stats()
