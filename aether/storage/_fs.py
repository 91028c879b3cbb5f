"""Small filesystem helpers: durable writes and atomic replacement.

All file I/O of the store goes through these functions so that fault-injection tests
can patch one place, and so that every OSError becomes a typed ``StorageIOError``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import StorageIOError


@contextlib.contextmanager
def io_errors(what: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``OSError`` into a ``StorageIOError`` that names the operation and file."""
    try:
        yield
    except StorageIOError:
        raise
    except OSError as exc:
        raise StorageIOError(exc.errno, f"{what} failed for {os.fspath(path)}: {exc.strerror or exc}") from exc


def fsync_fd(fd: int) -> None:
    """fsync one file descriptor (patched by fault-injection tests)."""
    os.fsync(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or file creation in ``path`` durable."""
    with io_errors("fsync directory", path):
        fd = os.open(path, os.O_RDONLY)
        try:
            fsync_fd(fd)
        finally:
            os.close(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Atomic rename (patched by fault-injection tests)."""
    with io_errors("rename", dst):
        os.replace(src, dst)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with io_errors("write", tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            fsync_fd(fh.fileno())
    replace(tmp, path)
    fsync_dir(path.parent)
