"""The remote client: :func:`connect` to an ``aether serve`` server (``pip install 'aether[client]'``: httpx).

>>> mem = aether.connect("http://127.0.0.1:8765", api_key="aek_...", namespace="team")  # doctest: +SKIP
>>> mem.search("where does alice live?", valid_at="2023-06-01T00:00:00Z")              # doctest: +SKIP

The object has the methods and return types of :class:`aether.Memory`; :class:`AsyncRemoteMemory`
is its ``async`` twin. Errors are the :class:`aether.AetherError` subclasses the server reported.
"""

from __future__ import annotations

from ._async import AsyncRemoteMemory
from ._sync import RemoteMemory, RemoteView


def connect(
    url: str, *, api_key: str | None = None, namespace: str = "default", timeout: float = 60.0
) -> RemoteMemory:
    """Connect to a namespace of an aether server.

    Parameters
    ----------
    url
        The server, e.g. ``http://127.0.0.1:8765``.
    api_key
        An API key (``aether keys add``); sent as ``Authorization: Bearer``.
    namespace
        The namespace (one store on the server); a write creates it if the server allows.
    timeout
        Seconds per request.

    Returns
    -------
    RemoteMemory
        No request is made until the first call.
    """
    return RemoteMemory(url, api_key=api_key, namespace=namespace, timeout=timeout)


def connect_async(
    url: str, *, api_key: str | None = None, namespace: str = "default", timeout: float = 60.0
) -> AsyncRemoteMemory:
    """The ``async`` twin of :func:`connect` (``async with aether.connect_async(...) as mem``)."""
    return AsyncRemoteMemory(url, api_key=api_key, namespace=namespace, timeout=timeout)


__all__ = ["AsyncRemoteMemory", "RemoteMemory", "RemoteView", "connect", "connect_async"]
