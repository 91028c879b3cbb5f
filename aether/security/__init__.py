"""Encryption at rest, key management, erasure by key destruction, tamper evidence.

* :mod:`.keys` — master keys (32 bytes; ``AETHER_KEY`` base64, key files with mode 0600);
* :mod:`.keyring` — per-subject data keys wrapped by the master key (``keys/keyring.json``);
* :mod:`.codec` — AES-256-GCM for whole files (store key) and for each row (subject key);
* :mod:`.chain` — the hash-chained transaction log (``log/``);
* :mod:`.erase` — erasure of a subject or an atom; :mod:`.rotate` — master-key rotation;
* :mod:`.verify` — ``aether verify``; :mod:`.engine_hooks` — the calls the engine makes.
"""

from __future__ import annotations

from .keys import generate_key, read_key_file, resolve_key, write_key_file

__all__ = ["generate_key", "read_key_file", "resolve_key", "write_key_file"]
