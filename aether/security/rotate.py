"""Master-key rotation: re-wrap every data key under a new master key; no data file changes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, SecurityError
from ..storage import manifest as mf
from ..storage.lock import WriterLock
from .keyring import Keyring
from .keys import parse_key


def rotate_key(path: str | os.PathLike[str], old_key: Any, new_key: Any) -> int:
    """Re-wrap the keyring of the store at ``path`` from ``old_key`` to ``new_key``.

    Takes the writer lock (the store must not be open for writing elsewhere). The keyring file is
    replaced atomically: a crash leaves either the old or the new wrapping, never a mix.

    Returns
    -------
    int
        The number of data keys re-wrapped (the store key included).

    Raises
    ------
    WrongKeyError
        ``old_key`` does not open the store.
    SecurityError
        The store is not encrypted.
    StoreLockedError
        The store is open for writing.
    """
    old = parse_key(old_key, what="old key")
    new = parse_key(new_key, what="new key")
    if old == new:
        raise InvalidInputError("the new key equals the old key")
    root = Path(path)
    body = mf.load(root)
    if (body.get("encryption") or {}).get("mode", "none") == "none":
        raise SecurityError(f"the store at {root} is not encrypted; there is no key to rotate")
    lock = WriterLock(root)
    lock.acquire()
    try:
        ring = Keyring.load(root, body["store_id"], old)
        ring.rewrap(new)
        return len(ring._keys)
    finally:
        lock.release()
