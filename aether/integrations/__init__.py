"""Adapters that put an aether store behind an agent framework's own interface.

Each submodule is an optional extra and imports its framework lazily:

* ``aether.integrations.mcp`` -- an MCP memory server (``pip install 'aether[mcp]'``);
* ``aether.integrations.langchain`` -- a LangChain ``VectorStore`` (``aether[langchain]``);
* ``aether.integrations.langgraph`` -- a LangGraph ``BaseStore`` (``aether[langgraph]``);
* ``aether.integrations.llamaindex`` -- a LlamaIndex vector store (``aether[llamaindex]``).

They use only the public facade (``aether.open``, ``Memory``, ``View``), never engine internals.
"""
