"""ONNX Runtime backend for the packaged sentence-transformers model.

The ONNX graph is exported locally from the packaged weights (never downloaded), once, into a
cache directory keyed by a digest of the weights, and checked against the torch model on probe
sentences before it is adopted. Tokenisation uses the model's own ``tokenizer.json`` (the same fast
tokenizer sentence-transformers uses), pooling and normalisation follow the model's module list, so
the vectors equal the torch backend's to float32 rounding (tested).

Why: on two cores a single query spends ~15 ms in torch's eager forward pass; ONNX Runtime's fused
graph runs the same arithmetic with a fraction of the per-call overhead.

The int8 variant (``quantized=True``) is the same graph with its MatMul weights dynamically quantized to
8 bits, per output channel (activations are quantized per call). Its vectors are close to, not equal
to, the float model's (cosine ~0.995), so it carries its own model identity: a store written with it is
searched with it. It is derived locally from the verified float graph and checked on probe sentences.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbeddingError, MissingDependencyError

log = logging.getLogger("aether.embed")

# Bumped when the export recipe changes, so that old cached graphs are not reused.
_EXPORT_VERSION = 1
# Largest absolute difference per vector component from the torch model that an export may show:
# float32 rounding of a reordered sum is ~1e-7; anything near 1e-3 would be a different model.
MAX_DEVIATION = 1e-4
#: Smallest cosine between an int8 graph's vector and the float graph's on any probe sentence; a
#: quantization that falls below it (a broken recipe, not rounding) is refused.
MIN_INT8_COSINE = 0.98
#: Padded tokens per ONNX Runtime call (texts x the batch's longest text): 16 texts of 256 tokens.
TOKENS_PER_BATCH = 4096
_PROBES = (
    "Alice moved from Paris to Lyon in June.",
    "what is the capital of France?",
    "The quick brown fox jumps over the lazy dog " * 8,
    "x",
)


def cache_root() -> Path:
    """Where exported model files live: ``$AETHER_CACHE_DIR``, else ``$XDG_CACHE_HOME/aether``."""
    env = os.environ.get("AETHER_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aether"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weights_file(model_dir: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).is_file():
            return model_dir / name
    raise EmbeddingError(f"no model weights under {model_dir}")


def _pooling(model_dir: Path) -> tuple[str, bool]:
    """The pooling mode and whether the model normalises, read from its module list."""
    modules = json.loads((model_dir / "modules.json").read_text())
    types = [m.get("type", "") for m in modules]
    normalize = any(t.endswith("Normalize") for t in types)
    pool_dirs = [m["path"] for m in modules if m.get("type", "").endswith("Pooling")]
    if len(pool_dirs) != 1 or len(types) - normalize != 2:
        raise EmbeddingError("only Transformer + Pooling (+ Normalize) models have an ONNX backend")
    cfg = json.loads((model_dir / pool_dirs[0] / "config.json").read_text())
    if cfg.get("pooling_mode_mean_tokens"):
        mode = "mean"
    elif cfg.get("pooling_mode_cls_token"):
        mode = "cls"
    else:
        raise EmbeddingError(f"pooling {cfg} has no ONNX backend")
    if sum(bool(v) for k, v in cfg.items() if k.startswith("pooling_mode")) != 1:
        raise EmbeddingError(f"combined pooling {cfg} has no ONNX backend")
    return mode, normalize


def _export(model_dir: Path, out: Path) -> None:
    """Export the transformer to ONNX (token ids -> last hidden state) with dynamic batch and length."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:  # pragma: no cover - core dependencies
        raise MissingDependencyError("exporting the model needs torch and transformers") from exc

    base = AutoModel.from_pretrained(str(model_dir)).eval()

    class _Graph(torch.nn.Module):
        # Keyword arguments: the positional order of forward() changed between transformers releases.
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    dummy = torch.ones((2, 8), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings():  # the tracer's warnings are about shapes we make dynamic
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Graph(base),
            (dummy, torch.ones_like(dummy), torch.zeros_like(dummy)),
            str(out),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={n: axes for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
            opset_version=17,
            dynamo=False,
        )


class OnnxSentenceModel:
    """The packaged model run by ONNX Runtime: tokenise, run the graph, pool, normalise.

    Parameters
    ----------
    model_dir
        The sentence-transformers model folder (packaged weights).
    max_seq_length
        Tokens per text after truncation (the model manifest's value).
    threads
        ONNX Runtime intra-op threads; ``None`` uses every core.
    quantized
        Run the int8 variant of the graph (see the module docstring).
    """

    def __init__(
        self, model_dir: str | Path, *, max_seq_length: int, threads: int | None = None, quantized: bool = False
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("the ONNX backend needs onnxruntime: pip install 'aether[onnx]'") from exc
        self.model_dir = Path(model_dir)
        self.pooling, self.normalize = _pooling(self.model_dir)
        self.max_seq_length = max_seq_length
        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok.enable_truncation(max_seq_length)
        tok.no_padding()  # encode() pads each batch to its own width
        pad_id = tok.token_to_id("[PAD]")
        self._pad_id = 0 if pad_id is None else pad_id
        self._tok = tok
        self.quantized = quantized
        path = self._cached_graph()
        if quantized:
            path = self._quantized_graph(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EmbeddingError(f"could not load the ONNX graph {path}: {exc}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _cached_graph(self) -> Path:
        weights = _weights_file(self.model_dir)
        key = hashlib.sha256(f"{_file_digest(weights)}:{_EXPORT_VERSION}".encode()).hexdigest()[:24]
        folder = cache_root() / "onnx" / f"{self.model_dir.name}-{key}"
        graph, sidecar = folder / "model.onnx", folder / "model.json"
        if graph.is_file() and sidecar.is_file():
            try:
                recorded = json.loads(sidecar.read_text()).get("sha256")
            except (OSError, ValueError):
                recorded = None
            if recorded == _file_digest(graph):
                return graph
            log.warning("cached ONNX graph %s is damaged; exporting it again", graph)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=folder)
        except OSError as exc:  # a typed error, so that backend="auto" falls back to torch
            raise EmbeddingError(f"cannot write the ONNX cache {folder} (set AETHER_CACHE_DIR): {exc}") from exc
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _export(self.model_dir, tmp)
            self._verify(tmp)
            digest = _file_digest(tmp)
            os.replace(tmp, graph)  # atomic: a concurrent exporter or a crash never leaves half a graph
            side_tmp = folder / f".{os.getpid()}.json"
            side_tmp.write_text(json.dumps({"sha256": digest, "source": str(weights), "export": _EXPORT_VERSION}))
            os.replace(side_tmp, sidecar)
        except EmbeddingError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"exporting {self.model_dir.name} to ONNX failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return graph

    def _quantized_graph(self, graph: Path) -> Path:
        """The int8 graph derived from the verified float ``graph``, built once beside it."""
        folder = graph.parent
        out, sidecar = folder / "model.int8.onnx", folder / "model.int8.json"
        source = _file_digest(graph)
        if out.is_file() and sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                meta = {}
            if meta.get("source") == source and meta.get("sha256") == _file_digest(out):
                return out
            log.warning("cached int8 ONNX graph %s is damaged or stale; quantizing again", out)
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError as exc:  # pragma: no cover - part of onnxruntime
            raise MissingDependencyError("int8 quantization needs onnxruntime: pip install 'aether[onnx]'") from exc
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=".quant-", suffix=".onnx", dir=folder)
        except OSError as exc:
            raise EmbeddingError(f"cannot write the ONNX cache {folder} (set AETHER_CACHE_DIR): {exc}") from exc
        os.close(fd)
        tmp = Path(tmp_name)
        # onnxruntime's quantizer logs a pre-processing hint on the root logger at WARNING on every
        # call; it does not apply to a transformer graph and would reach every caller's log.
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(str(graph), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise EmbeddingError(f"quantizing {self.model_dir.name} to int8 failed: {exc}") from exc
        finally:
            logging.disable(logging.NOTSET)
        try:
            self._check_int8(graph, tmp)
            digest = _file_digest(tmp)
            os.replace(tmp, out)
            side_tmp = folder / f".{os.getpid()}.int8.json"
            side_tmp.write_text(json.dumps({"sha256": digest, "source": source, "export": _EXPORT_VERSION}))
            os.replace(side_tmp, sidecar)
        finally:
            tmp.unlink(missing_ok=True)
        return out

    def _check_int8(self, graph: Path, quantized: Path) -> None:
        """Refuse an int8 graph whose probe vectors drift from the float graph's beyond rounding."""
        import onnxruntime as ort

        ref_session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self._session = ref_session
        self._inputs = {i.name for i in ref_session.get_inputs()}
        ref = self.encode(_PROBES, batch_size=len(_PROBES))
        self._session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
        got = self.encode(_PROBES, batch_size=len(_PROBES))
        cos = np.sum(ref * got, axis=1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
        worst = float(cos.min())
        if not worst >= MIN_INT8_COSINE:
            raise EmbeddingError(f"the int8 graph's vectors drift from the float model's (cosine {worst:.4f})")

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        if self.pooling == "cls":
            vecs = hidden[:, 0, :]
        else:
            m = mask[..., None].astype(np.float32)
            vecs = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        if self.normalize:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.asarray(vecs, dtype=np.float32)

    def encode(self, texts: Sequence[str], *, batch_size: int) -> np.ndarray:
        """Embed ``texts``, returned in input order.

        Texts are tokenised once, sorted by token count and run in batches of at most
        ``batch_size`` texts and :data:`TOKENS_PER_BATCH` padded tokens: short texts go in wide
        batches, long ones in narrow batches (attention's memory grows with the square of the
        length, and a wide batch of long texts ran at 0.4x the speed of a narrow one).
        """
        n = len(texts)
        if n == 0:
            return np.zeros((0, 0), dtype=np.float32)
        enc = self._tok.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=n)
        order = np.argsort(lengths, kind="stable")
        out: np.ndarray | None = None
        start = 0
        while start < n:
            stop = start + 1
            # Sorted ascending, so the last text of a batch sets its padded width.
            while (
                stop < n
                and stop - start < batch_size
                and (stop - start + 1) * lengths[order[stop]] <= TOKENS_PER_BATCH
            ):
                stop += 1
            rows = order[start:stop]
            width = int(lengths[rows[-1]])
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, r in enumerate(rows):
                e = enc[r]
                ids[j, : len(e.ids)] = e.ids
                mask[j, : len(e.ids)] = 1
            vecs = self._run(ids, mask)
            if out is None:
                out = np.empty((n, vecs.shape[1]), dtype=np.float32)
            out[rows] = vecs
            start = stop
        assert out is not None
        return out

    def _verify(self, graph: Path) -> None:
        """Refuse a fresh export whose vectors differ from the torch model's on the probe sentences."""
        import onnxruntime as ort
        from sentence_transformers import SentenceTransformer

        self._session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        ours = self.encode(_PROBES, batch_size=len(_PROBES))
        torch_model = SentenceTransformer(str(self.model_dir), device="cpu")
        torch_model.max_seq_length = self.max_seq_length
        theirs = torch_model.encode(list(_PROBES), normalize_embeddings=self.normalize, convert_to_numpy=True)
        worst = float(np.abs(ours - np.asarray(theirs, dtype=np.float32)).max())
        if not worst < MAX_DEVIATION:
            raise EmbeddingError(f"the ONNX export deviates from the torch model by {worst:.2e}; not used")
