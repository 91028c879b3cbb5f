"""A property-based sweep of the server's OpenAPI schema with schemathesis (in-process ASGI): no 500, ever.

Every operation gets a bounded number of generated requests (valid and schema-violating ones) against a
namespace that holds data; each answer must be < 500 and, when it is an error, the JSON error body.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest.importorskip("schemathesis")
import schemathesis

import aether
from aether.server import create_app

# The schema is loaded at import (parametrize needs it), so the stores live in a temp dir made here.
ROOT = Path(tempfile.mkdtemp(prefix="aether-schema-"))
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)
EXAMPLES = int(os.environ.get("AETHER_SCHEMA_EXAMPLES", "25"))


def _app() -> object:
    with aether.open(ROOT / "default", embedder=aether.HashingEmbedder(dim=64)) as mem:
        first = mem.add("Alice lives in Paris", tags={"user": "alice"}, valid_from="2023-01-01T00:00:00Z",
                        atom_id="alice")
        mem.add_many([f"note {i}" for i in range(20)])
        mem.correct(first.atom_id, "Alice lives in Lyon", valid_from="2024-06-01T00:00:00Z")
    # no keys: every request is allowed (the sweep is about inputs; auth has its own tests)
    return create_app(ROOT, model="hashing:64", api_key="", keys_file=ROOT / "no-keys.json", max_batch=50,
                      max_queries=20)


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    if "ns" in (case.path_parameters or {}):
        case.path_parameters["ns"] = "default"  # one namespace with data, not thousands of new stores
    if (case.path_parameters or {}).get("atom_id") == "":
        case.path_parameters["atom_id"] = "alice"
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
    if response.status_code >= 400:
        doc = json.loads(response.text)
        assert set(doc) == {"error"} and {"type", "message"} <= set(doc["error"]), response.text
