"""Small filesystem helpers: durable writes and atomic replacement.

All file I/O of the store goes through these functions so that fault-injection tests
can patch one place, and so that every OSError becomes a typed ``StorageIOError``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import StorageIOError


@contextlib.contextmanager
def io_errors(what: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``OSError`` into a ``StorageIOError`` that names the operation and file."""
    try:
        yield
    except StorageIOError:
        raise
    except OSError as exc:
        raise StorageIOError(
            exc.errno, f"{what} failed for {os.fspath(path)}: {exc.strerror or exc}"
        ) from exc


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


def write_all(fh: BinaryIO, data: bytes) -> None:
    """Write ``data`` to a buffered binary file and flush it to the OS (patched by fault-injection tests)."""
    fh.write(data)
    fh.flush()


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Atomic rename (patched by fault-injection tests)."""
    with io_errors("rename", dst):
        os.replace(src, dst)


def tree_bytes(root: str | os.PathLike[str]) -> int:
    """Bytes of every file under ``root``, counting what exists when each file is looked at.

    Another process (the writer, when this is a reader) may delete or rename files while we walk:
    a file gone between listing and ``stat`` counts as zero, and never raises.
    """
    total = 0
    for top, _dirs, files in os.walk(root):  # os.walk ignores folders that vanish meanwhile
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(top, name), follow_symlinks=False).st_size
    return total


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with io_errors("write", tmp), open(tmp, "wb") as fh:
            write_all(fh, data)
            fsync_fd(fh.fileno())
        with io_errors("rename", path):
            replace(tmp, path)
    except BaseException:
        # A failed write leaves the old file in place; do not leave a half-written temporary too.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
