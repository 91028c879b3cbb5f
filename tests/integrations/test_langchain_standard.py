"""LangChain's own conformance suite for vector stores, unmodified, sync and async."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import VectorStoreIntegrationTests

from aether.integrations.langchain import AetherVectorStore


class TestAetherVectorStoreStandard(VectorStoreIntegrationTests):
    """Every test of ``VectorStoreIntegrationTests`` against a fresh in-memory store."""

    @pytest.fixture
    def vectorstore(self) -> Iterator[AetherVectorStore]:
        store = AetherVectorStore(embedding=self.get_embeddings())
        try:
            yield store
        finally:
            store.close()
