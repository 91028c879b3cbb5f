"""Fixtures and collection hooks for the framework adapters' tests.

The LangChain standard suite (``langchain_tests``) declares plain ``async def`` tests and expects
``asyncio_mode = "auto"``. The project runs pytest-asyncio in strict mode, so the coroutine tests of
the modules listed below get the ``asyncio`` marker here, at collection, before pytest-asyncio
decides which items it runs.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Generator
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Test modules whose unmarked coroutine tests run under asyncio (strict mode elsewhere).
_AUTO_ASYNCIO_MODULES = ("test_langchain", "test_llamaindex")


def _wants_asyncio(collector: Any, obj: Any) -> bool:
    module = getattr(collector, "module", None)
    name = getattr(module, "__name__", "").rpartition(".")[2]
    return name.startswith(_AUTO_ASYNCIO_MODULES) and inspect.iscoroutinefunction(obj)


# trylast: this wrapper runs inside pytest-asyncio's, so the marker is on the items before its
# wrapper converts marked coroutine functions into asyncio test items.
@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: Any) -> Generator[None, Any, None]:
    outcome = yield
    if not _wants_asyncio(collector, obj):
        return
    result = outcome.get_result()
    items = result if isinstance(result, list) else [result]
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and item.get_closest_marker("asyncio") is None
            and item.get_closest_marker("anyio") is None
        ):
            item.add_marker(pytest.mark.asyncio)
