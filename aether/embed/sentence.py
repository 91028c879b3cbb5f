"""The default embedder: a sentence-transformers model loaded offline from a packaged copy."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._resources import model_manifest
from ..errors import ConfigError, EmbeddingError, MissingDependencyError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
log = logging.getLogger("aether.embed")


class SentenceTransformerEmbedder:
    """A sentence-transformers model named by a manifest in ``models/``.

    The model is loaded on first use, never downloaded: its weights come from the
    Python package the manifest names (``HF_HUB_OFFLINE=1`` is set while loading).

    Parameters
    ----------
    model
        A model name from ``models/`` (default ``all-MiniLM-L6-v2``).
    batch_size
        Texts per forward pass.
    device
        Torch device; ``None`` lets sentence-transformers choose.
    backend
        ``"torch"`` (sentence-transformers), ``"onnx"`` (ONNX Runtime over a graph exported locally
        from the same weights, cached under ``$AETHER_CACHE_DIR`` or ``~/.cache/aether``), or
        ``"auto"`` (the default, overridable by ``$AETHER_EMBED_BACKEND``): ONNX when onnxruntime is
        installed and the export matches the torch model, torch otherwise. Both give the same
        vectors to float32 rounding, so they share one model identity and a store written with one
        is searched with the other. ``"onnx-int8"``: the ONNX graph with 8-bit weights (about twice
        the throughput on a CPU with VNNI; vectors within cosine ~0.995 of the float model's). It is
        never chosen by ``"auto"`` and has its own model identity (``...:int8:dim=N``), so a store
        written with it must be opened with it (``aether.open`` rebuilds it from the manifest).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        batch_size: int = 64,
        device: str | None = None,
        backend: str | None = None,
    ) -> None:
        self.manifest: dict[str, Any] = model_manifest(model)
        self.batch_size = batch_size
        self.device = device
        chosen = (backend or os.environ.get("AETHER_EMBED_BACKEND") or "auto").lower()
        if chosen not in _BACKENDS:
            raise ConfigError(f"unknown embedding backend {chosen!r}; choose one of {', '.join(_BACKENDS)}")
        if chosen == "auto" and device not in (None, "cpu"):
            chosen = "torch"  # ONNX Runtime runs here on the CPU only
        self.requested_backend = chosen
        self.backend: str | None = None  # the one in use, known once the model is loaded
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def identity(self) -> str:
        # The int8 graph gives different vectors, so it is a different model for a store; torch and
        # the float ONNX graph agree to rounding and share one identity.
        variant = ":int8" if self.requested_backend == "onnx-int8" else ""
        return f"sentence-transformers:{self.name}{variant}:dim={self.dim}"

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def model_path(self) -> str:
        """Filesystem path of the packaged weights."""
        module_name = self.manifest["module"]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise MissingDependencyError(
                f"model {self.name!r} needs the package {self.manifest['package']!r}: "
                f"pip install {self.manifest['package']}"
            ) from exc
        return str(module.get_model_path())

    def _load(self) -> Any:
        with self._lock:
            if self._model is None and self.requested_backend in ("auto", "onnx", "onnx-int8"):
                self._model = self._load_onnx()
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                # Loading bars from transformers would clutter CLI output and logs.
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                try:
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except ImportError:  # pragma: no cover
                    pass
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:  # pragma: no cover - a core dependency
                    raise MissingDependencyError("pip install sentence-transformers") from exc
                try:
                    model = SentenceTransformer(self.model_path(), device=self.device)
                except Exception as exc:
                    raise EmbeddingError(f"could not load model {self.name!r}: {exc}") from exc
                if self.manifest.get("max_seq_length"):
                    model.max_seq_length = int(self.manifest["max_seq_length"])
                self._model = model
                self.backend = "torch"
            return self._model

    def _load_onnx(self) -> Any:
        from ._onnx import OnnxSentenceModel

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        quantized = self.requested_backend == "onnx-int8"
        try:
            model = OnnxSentenceModel(
                self.model_path(), max_seq_length=int(self.manifest.get("max_seq_length") or 512), quantized=quantized
            )
        except (MissingDependencyError, EmbeddingError) as exc:
            if self.requested_backend != "auto":  # never torch in place of int8: other vectors, other identity
                raise
            log.info("embedding with torch: the ONNX backend is unavailable (%s)", exc)
            return None
        self.backend = self.requested_backend if quantized else "onnx"
        return model

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        batch = [prefix + t for t in texts] if prefix else list(texts)
        try:
            if self.backend in ("onnx", "onnx-int8"):
                return np.ascontiguousarray(model.encode(batch, batch_size=self.batch_size), dtype=np.float32)
            vecs = model.encode(
                batch,
                batch_size=self.batch_size,
                normalize_embeddings=bool(self.manifest.get("normalize", True)),
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise EmbeddingError(f"embedding with {self.name!r} failed: {exc}") from exc
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.manifest.get("document_prefix", ""))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.manifest.get("query_prefix", ""))
