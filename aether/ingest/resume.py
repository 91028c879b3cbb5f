"""Resuming an import: ``<store>/import/<key>.json`` records how far the file is done."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..storage._fs import write_atomic

if TYPE_CHECKING:
    from ..api import Memory

IMPORT_DIR = "import"


class Checkpoint:
    def __init__(self, store: Path | None, path: Path, fmt: str) -> None:
        st = path.stat()
        ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        name = hashlib.sha256(ident.encode()).hexdigest()[:24] + ".json"
        self.file = None if store is None else store / IMPORT_DIR / name
        self.doc: dict[str, Any] = {
            "file": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "format": fmt,
            "offset": 0, "line": 0, "imported": 0, "bad": [], "pending": None,
        }

    def load(self) -> None:
        if self.file is None or not self.file.exists():
            return
        try:
            doc = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return  # a damaged checkpoint: start over (rows carry no duplicate risk until the first commit)
        if doc.get("file") == self.doc["file"] and doc.get("size") == self.doc["size"]:
            self.doc.update(doc)

    def save(self) -> None:
        if self.file is None:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.file, json.dumps(self.doc, sort_keys=True).encode())

    def reset(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)


def landed(mem: Memory, pending: Mapping[str, Any]) -> bool:
    """Did the batch described by ``pending`` commit before the process died?"""
    eng = mem.engine
    t = eng.table
    code = t.atom_index.get(pending["atom_id"])
    if code is None:
        return False
    return any(int(t.tx_from[r]) > int(pending["tx_before"]) for r in t.atom_rows.get(code, ()))
