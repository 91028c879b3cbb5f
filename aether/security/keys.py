"""Master keys: 32 random bytes, given as bytes, as base64 text, in ``AETHER_KEY`` or in a key file.

A key file holds the base64 text of the key on one line and is created with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, StorageIOError

KEY_BYTES = 32
ENV_KEY = "AETHER_KEY"
ENV_KEY_FILE = "AETHER_KEY_FILE"


def generate_key() -> bytes:
    """A fresh master key: 32 bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """The base64 text form of a key (what ``AETHER_KEY`` and key files hold)."""
    return base64.b64encode(parse_key(key)).decode()


def parse_key(key: Any, *, what: str = "key") -> bytes:
    """A 32-byte master key from bytes or base64 text.

    Raises
    ------
    InvalidInputError
        If the value is not 32 bytes (or base64 text of 32 bytes).
    """
    if isinstance(key, bytearray | memoryview):
        key = bytes(key)
    if isinstance(key, str):
        try:
            raw = base64.b64decode(key.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError(f"{what} is not valid base64") from None
        key = raw
    if not isinstance(key, bytes):
        raise InvalidInputError(f"{what} must be 32 bytes or their base64 text")
    if len(key) != KEY_BYTES:
        raise InvalidInputError(f"{what} must be {KEY_BYTES} bytes (AES-256), got {len(key)}")
    return key


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file written by :func:`write_key_file` (or any file holding the base64 key)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise InvalidInputError(f"key file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read key file {p}: {exc}") from None
    return parse_key(text, what=f"key file {p}")


def write_key_file(
    path: str | os.PathLike[str], key: bytes | None = None, *, overwrite: bool = False
) -> bytes:
    """Write ``key`` (default: a new one) to ``path`` with mode 0600; returns the key.

    The file is created with 0600 from the start (never world-readable, even briefly).
    """
    key = generate_key() if key is None else parse_key(key)
    p = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:
        raise InvalidInputError(f"{p} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise StorageIOError(exc.errno, f"cannot create key file {p}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (encode_key(key) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def resolve_key(key: Any = None, key_file: str | os.PathLike[str] | None = None) -> bytes | None:
    """The master key to use: ``key``, else ``key_file``, else ``AETHER_KEY``, else ``AETHER_KEY_FILE``.

    Returns ``None`` when none is given (an unencrypted store).
    """
    if key is not None and key_file is not None:
        raise InvalidInputError("give key= or key_file=, not both")
    if key is not None:
        return parse_key(key)
    if key_file is not None:
        return read_key_file(key_file)
    env = os.environ.get(ENV_KEY)
    if env:
        return parse_key(env, what=ENV_KEY)
    env_file = os.environ.get(ENV_KEY_FILE)
    if env_file:
        return read_key_file(env_file)
    return None
