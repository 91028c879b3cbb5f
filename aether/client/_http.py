"""The sync client's HTTP transport: keep-alive connections of the standard library's ``http.client``.

httpx costs ~0.7 ms of CPU per request over loopback (its request and response models, the
connection pool's state machine); ``http.client`` with a reused connection costs ~0.1-0.2 ms, which
is most of what a remote vector search adds to an in-process one. The sync client uses this
transport unless a proxy applies to the server's URL (``HTTP_PROXY`` & co.), where it keeps httpx
(which honours proxies); the async client always uses ``httpx.AsyncClient``.

Connections are pooled (one per concurrent caller, so one client can be shared by threads). A pooled
connection the server has closed meanwhile (uvicorn drops idle ones after 5 s) is detected before
reuse (the socket is readable: EOF) and replaced. When the server closes it in the instant between
that check and the request, the request fails with no reply byte read (the server read none of it)
and is sent once more on a new connection.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from .. import errors as E

#: Idle connections kept per client (more concurrent callers open more; the extra ones are closed).
KEEP_IDLE = 64


class _OneSend:
    """Send a small request's headers and body in one ``send`` (``http.client`` sends them apart: two
    segments, and on a busy machine two wake-ups of the server for one request)."""

    _buffer: list[bytes]

    def _send_output(self, message_body: object = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and len(message_body) <= 1 << 16:
            self._buffer.extend((b"", b""))
            msg = b"\r\n".join(self._buffer) + message_body
            del self._buffer[:]
            self.send(msg)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _Conn(_OneSend, http.client.HTTPConnection):
    pass


class _TLSConn(_OneSend, http.client.HTTPSConnection):
    pass


@dataclass
class Reply:
    """What the client reads of a reply (the names of httpx's response)."""

    status_code: int
    content: bytes
    reason_phrase: str


def proxied(url: str) -> bool:
    """Whether the environment sets a proxy for ``url`` (then the client keeps httpx, which uses it)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class StdlibTransport:
    """A small pool of ``http.client`` connections to one server (``request`` as httpx's, the subset used)."""

    def __init__(self, base_url: str, *, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise E.InvalidInputError(f"not an http(s) URL: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._headers = {"Accept": "application/json", **headers}
        self._timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self._https else None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """A pooled connection the server has not closed (and ``True``), or a new one (and ``False``)."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                sock = conn.sock
                if sock is None:
                    continue
                try:
                    stale = bool(select.select([sock], [], [], 0)[0])  # EOF (or stray bytes): closed by the server
                except (OSError, ValueError):
                    stale = True
                if not stale:
                    return conn, True
                conn.close()
        if self._https:
            return _TLSConn(self._host, self._port, timeout=self._timeout, context=self._ssl), False
        return _Conn(self._host, self._port, timeout=self._timeout), False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < KEEP_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        target = self._base + path
        if params:
            target += "?" + urlencode(params)
        hdrs = {**self._headers, **(headers or {})}
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                try:
                    # One send of headers and body (see _OneSend; http.client sets TCP_NODELAY).
                    conn.request(method, target, body=content, headers=hdrs)
                except (BrokenPipeError, ConnectionResetError):
                    sent = False
                    raise
                sent = True
                resp = conn.getresponse()
                body = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                # A pooled connection the server closed as we reused it (its idle timeout won the race): the
                # request did not go out, or the server closed without a byte of reply, so it read none of
                # it; sent again, once, on a new connection.
                if reused and attempt == 0 and (not sent or isinstance(exc, http.client.RemoteDisconnected)):
                    continue
                raise E.RemoteError(f"the aether server at {self.url} closed the connection: "
                                    f"{type(exc).__name__}") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise E.RemoteError(
                    f"cannot reach the aether server at {self.url}: {type(exc).__name__}: {exc}") from None
        if resp.will_close:
            conn.close()
        else:
            self._release(conn)
        return Reply(resp.status, body, resp.reason)

    @property
    def url(self) -> str:
        scheme = "https" if self._https else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}{self._base}"

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
