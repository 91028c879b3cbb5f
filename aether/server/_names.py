"""Namespaces: ``ROOT/<name>/`` is an ordinary aether store, opened on first use and owned by this process."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, StoreNotFoundError

#: A namespace name: lower-case letters, digits, ``_`` and ``-``, starting with a letter or digit, at most
#: 64 characters. No dot and no slash, so a name can never leave ROOT or collide with a file of the server.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def check_namespace(name: Any) -> str:
    """Validate a namespace name (the charset of :data:`NAME_RE`); raises ``InvalidInputError``."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise InvalidInputError(
            f"invalid namespace name {name!r}: use 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return name


class NamespaceLimit(InvalidInputError):
    """Internal marker: the server holds its most namespaces (reported as InvalidInputError, 409)."""


class Namespaces:
    """The stores under one root, opened lazily, each once, and closed together.

    Parameters
    ----------
    root
        Directory holding one store per namespace (created if missing).
    model
        Model of namespaces created by this server (``hashing:DIM`` or a name from ``models/``);
        ``None``: aether's default model. Existing namespaces keep the model they were created with.
    key_file
        Master key file for encrypted stores (every namespace uses the same key).
    open_kwargs
        Other keyword arguments of :func:`aether.open` (e.g. ``max_content_bytes``).
    max_namespaces
        Most namespaces under ``root`` (``None``: no limit); creating one more raises
        :class:`NamespaceLimit`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        model: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        open_kwargs: dict[str, Any] | None = None,
        max_namespaces: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.key_file = key_file
        self.open_kwargs = dict(open_kwargs or {})
        self.max_namespaces = max_namespaces
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()  # opening is rare; one lock keeps two first requests from racing
        self._closed = False

    # -------------------------------------------------------------------------------- lookup
    def path(self, name: str) -> Path:
        return self.root / check_namespace(name)

    def exists(self, name: str) -> bool:
        return name in self._open or self.path(name).is_dir()

    def is_open(self, name: str) -> bool:
        """Whether ``name`` is open (using it then opens nothing)."""
        return name in self._open

    def names(self) -> list[str]:
        """Every namespace on disk (sorted), opened or not."""
        on_disk = {p.name for p in self.root.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name)}
        return sorted(on_disk | set(self._open))

    def opened(self) -> dict[str, Any]:
        """The namespaces open right now (a copy)."""
        with self._lock:
            return dict(self._open)

    def get(self, name: str, *, create: bool = False, model: str | None = None) -> Any:
        """The open :class:`aether.Memory` of ``name``.

        Raises
        ------
        StoreNotFoundError
            The namespace does not exist and ``create`` is false.
        """
        mem = self._open.get(name)
        if mem is not None:
            return mem
        path = self.path(name)
        with self._lock:
            mem = self._open.get(name)
            if mem is not None:
                return mem
            if self._closed:
                from ..errors import StoreClosedError

                raise StoreClosedError("the server is shutting down")
            mem = self._open_store(name, path, create=create, model=model)
            self._open[name] = mem
            return mem

    def _open_store(self, name: str, path: Path, *, create: bool, model: str | None) -> Any:
        import aether

        kwargs: dict[str, Any] = dict(self.open_kwargs)
        if self.key_file is not None:
            kwargs["key_file"] = self.key_file
        if not path.is_dir():
            if not create:
                raise StoreNotFoundError(f"no namespace {name!r}")
            if self.max_namespaces is not None and len(self.names()) >= self.max_namespaces:
                raise NamespaceLimit(
                    f"cannot create namespace {name!r}: the server holds its limit of {self.max_namespaces} namespaces"
                )
            from ..embed import embedder_for

            chosen = model or self.model
            if chosen is not None:
                kwargs["embedder"] = embedder_for(chosen)
            return aether.open(path, create=True, **kwargs)
        if model is not None:
            from ..embed import embedder_for

            kwargs["embedder"] = embedder_for(model)  # a mismatch raises ModelMismatchError
        try:
            return aether.open(path, create=False, **kwargs)
        except StoreNotFoundError:
            raise StoreNotFoundError(f"namespace {name!r} is not an aether store") from None

    # -------------------------------------------------------------------------------- lifecycle
    def reopen(self) -> None:
        """Accept opens again after :meth:`close_all` (an app whose lifespan runs again)."""
        with self._lock:
            self._closed = False

    def close_all(self) -> list[tuple[str, BaseException]]:
        """Checkpoint and close every open store; returns the failures (each store is still tried)."""
        with self._lock:
            self._closed = True
            items = list(self._open.items())
            self._open.clear()
        failed: list[tuple[str, BaseException]] = []
        for name, mem in items:
            try:
                mem.close()
            except Exception as exc:  # keep closing the others; the caller logs each failure
                failed.append((name, exc))
        return failed
