"""The single-writer lock: an ``flock`` on ``LOCK`` in the store directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..errors import StoreLockedError
from ._fs import io_errors


class WriterLock:
    """Exclusive, non-blocking, released by the kernel when the process dies (no stale locks)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        with io_errors("open lock", self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StoreLockedError(
                f"store {self.path.parent} is open for writing by another process"
                + (f" (pid {holder})" if holder else "")
                + "; open it with read_only=True to read"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
