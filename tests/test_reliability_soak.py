"""The one-minute version of ``benchmarks/soak_concurrency.py`` (the long run: ``--minutes 20``).

A writer process killed with SIGKILL at random moments and restarted, two read-only reader
processes and a ``verify`` loop on the same store: nothing acknowledged is lost, readers see
only typed errors and never go back in time, ``verify`` never calls the store damaged.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_soak_one_minute() -> None:
    spec = importlib.util.spec_from_file_location("soak_concurrency", REPO / "benchmarks" / "soak_concurrency.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    log = io.StringIO()
    totals = soak.run(1.0, 20261203, 6, 1.0, out=log)
    samples = totals.pop("samples")
    print(log.getvalue(), totals)
    detail = f"{totals}\n" + "\n---\n".join(samples[:5])
    assert totals["kills"] >= 3, detail
    assert totals["acknowledged"] > 0, detail
    assert totals["lost"] == 0 and totals["broken_stores"] == 0, detail
    assert totals["resurrected_erasures"] == 0 and totals["writer_errors"] == 0, detail
    assert totals["untyped_reader_errors"] == 0, detail
    assert totals["inconsistent_reads"] == 0, detail
    assert totals["verify_false_positives"] == 0 and totals["verify_errors"] == 0, detail
    assert totals["reader_refreshes"] > 0 and totals["verify_runs"] > 0, detail
