"""SmolLM2 as one object: a flat dict of parameters keyed by HF names, and the passes over it.

`forward` runs the whole network over token ids (for training and for prefilling a KV
cache), `decode_step` adds one token to the cache, `logits` is the full forward plus the
tied LM head. Lesson: lessons/07_forward/README.md.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import kernels
from .config import ModelConfig
from .layers import (BLOCK_NAMES, block_backward, block_forward, block_weights, embedding_backward,
                     embedding_forward, linear_forward, rmsnorm_backward, rmsnorm_forward, rope_tables)
from .quant import Int8Weight


@dataclass
class KVCache:
    """Keys and values of every layer for the positions seen so far (run state, not parameters).

    Keys are stored transposed, so a new query's scores q.k_j run along contiguous memory.
    """
    kt: np.ndarray  # (L,B,KV,D,Tmax)
    v: np.ndarray  # (L,B,KV,Tmax,D)
    length: int = 0  # P: positions filled

    @property
    def capacity(self) -> int:
        return self.v.shape[3]


@functools.cache
def _blas_pools():
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController().select(user_api="blas")


def single_blas_thread():
    """A context in which BLAS runs on one thread (for like-for-like timings; decoding itself
    uses every BLAS thread: on an idle 2-core machine two threads stream the weights 1.7x faster)."""
    return _blas_pools().limit(limits=1)


class ContextLengthError(ValueError):
    """A prompt (plus the tokens to generate) does not fit the context or the KV cache."""


class Model:
    """SmolLM2-135M (or any config of its family) over a flat parameter dict."""

    def __init__(self, config: ModelConfig, params: dict[str, np.ndarray], tokenizer=None):
        self.config, self.params, self.tokenizer = config, params, tokenizer
        self.dtype = params["model.embed_tokens.weight"].dtype
        self.cos, self.sin = rope_tables(config.head_dim, config.max_position_embeddings,
                                         config.rope_theta, self.dtype)  # (Tmax, D/2)
        self.blocks = [block_weights(params, i) for i in range(config.num_hidden_layers)]
        self.int8 = all(isinstance(w, Int8Weight) for w in params.values() if getattr(w, "ndim", 2) == 2)

    @classmethod
    def from_folder(cls, path: str | Path, dtype=np.float32) -> "Model":
        """An HF folder (config.json, model.safetensors, tokenizer.json) -> Model; float32 weights are not copied."""
        from .quant import is_int8_folder, read_int8_params
        from .tokenizer import Tokenizer
        from .weights import WeightsError, check_params, read_safetensors
        path = Path(path)
        try:
            config = ModelConfig.from_json(path / "config.json")
        except (OSError, ValueError, TypeError) as e:
            raise WeightsError(f"{path / 'config.json'} is not a usable model config ({e}).") from e
        if is_int8_folder(path):  # an int8 checkpoint (python -m nanoagent.quantize): int8 weights as stored
            params = read_int8_params(path, config)
        else:
            params = check_params(read_safetensors(path / "model.safetensors"), config, path / "model.safetensors")
            params = {k: v if v.dtype == dtype else v.astype(dtype) for k, v in params.items()}
        tokenizer = Tokenizer.from_file(path / "tokenizer.json") if (path / "tokenizer.json").exists() else None
        return cls(config, params, tokenizer)

    # ---- forward -------------------------------------------------------------------------
    def forward(self, ids, kv: KVCache | None = None, keep_caches: bool = True):
        """ids (B,T) -> final-normed hidden states h (B,T,C) and the caches for backward.

        With a KV cache holding P positions, ids are positions P..P+T-1 and are appended to it.
        Inference passes keep_caches=False: each layer's activations are dropped as soon as the
        next layer has them (keeping them costs about 1.5 MB per token).
        """
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None]
        B, T = ids.shape
        cfg = self.config
        P = kv.length if kv is not None else 0
        if P + T > (kv.capacity if kv is not None else cfg.max_position_embeddings):
            raise ContextLengthError(f"{P + T} tokens do not fit the context of "
                                     f"{kv.capacity if kv is not None else cfg.max_position_embeddings}")
        cos, sin = self.cos[P:P + T], self.sin[P:P + T]  # (T, D/2)
        x, c_emb = embedding_forward(ids, self.params["model.embed_tokens.weight"])  # (B,T,C)
        block_caches = []
        for i, w in enumerate(self.blocks):
            layer_kv = (kv.kt[i], kv.v[i], P) if kv is not None else None
            x, c = block_forward(x, w, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rms_norm_eps,
                                 cos, sin, layer_kv)
            block_caches.append(c if keep_caches else None)
        if kv is not None:
            kv.length = P + T
        h, c_norm = rmsnorm_forward(x, self.params["model.norm.weight"], cfg.rms_norm_eps)
        return h, (c_emb, block_caches, c_norm)

    def lm_head(self, h):
        """h (...,C) -> logits (...,V) through the tied embedding (float or int8)."""
        return linear_forward(h, self.params["model.embed_tokens.weight"])[0]

    def logits(self, ids) -> np.ndarray:
        """ids (T,) -> logits (T,V): one full forward over one sequence."""
        h, _ = self.forward(np.asarray(ids).reshape(1, -1), keep_caches=False)
        return self.lm_head(h[0])

    # ---- backward (training) ---------------------------------------------------------------
    def backward(self, dh, caches, grads: dict[str, np.ndarray] | None = None, free_caches: bool = False):
        """dh (B,T,C), the gradient of the loss w.r.t. `forward`'s h -> grads, keyed like `params`.

        Runs every layer's backward in reverse. `grads` may already hold gradients (the tied LM
        head's in 'model.embed_tokens.weight', or earlier micro-batches when accumulating): this
        pass adds into them. `free_caches` drops each block's cache once used, so activation
        memory shrinks while the gradients grow (the caller must not need `caches` afterwards).
        Lesson: lessons/11_backward/README.md.
        """
        grads = {} if grads is None else grads

        def add(name, g):
            if name in grads:
                grads[name] += g  # accumulate: micro-batches (or the tied head) add up
            else:
                grads[name] = g

        c_emb, block_caches, c_norm = caches
        dx, d_norm = rmsnorm_backward(dh, c_norm)
        add("model.norm.weight", d_norm)
        for i in reversed(range(len(block_caches))):
            dx, dw = block_backward(dx, block_caches[i])
            if free_caches:
                block_caches[i] = None
            for name, g in zip(BLOCK_NAMES, dw):
                add(f"model.layers.{i}.{name}", g)
        name = "model.embed_tokens.weight"
        grads[name] = embedding_backward(dx, c_emb, grads.get(name))  # adds into the head's gradient if present
        return grads

    def own_params(self) -> "Model":
        """Copy every parameter into a writable array of its own, so an optimizer can update it in place.

        The loader's arrays are read-only views of the memory-mapped file; training needs its own.
        """
        for name, a in self.params.items():
            self.params[name] = np.array(a, dtype=self.dtype, order="C", copy=True)
        self.blocks = [block_weights(self.params, i) for i in range(self.config.num_hidden_layers)]
        return self

    # ---- incremental decoding -------------------------------------------------------------
    def new_kv_cache(self, capacity: int | None = None, batch: int = 1) -> KVCache:
        cfg = self.config
        capacity = min(capacity or cfg.max_position_embeddings, cfg.max_position_embeddings)
        L, KV, D = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
        return KVCache(np.zeros((L, batch, KV, D, capacity), self.dtype),
                       np.zeros((L, batch, KV, capacity, D), self.dtype))

    def prefill(self, ids, kv: KVCache) -> np.ndarray:
        """ids (T,) appended to the cache in one batched forward -> logits of the last one (V,)."""
        h, _ = self.forward(np.asarray(ids).reshape(1, -1), kv, keep_caches=False)
        return self.lm_head(h[0, -1])

    def decode_step(self, token: int, kv: KVCache) -> np.ndarray:
        """One new token at position P -> its logits (V,); the cache grows by one.

        An int8 model runs each layer in one compiled call (kernels.decode_int8, the same math
        as `forward`, pinned to it by tests); a float model runs `forward` on one token.
        """
        P = kv.length
        if not (self.int8 and kv.v.shape[1] == 1):
            return self.prefill(np.array([[token]]), kv)
        if P + 1 > kv.capacity:
            raise ContextLengthError(f"{P + 1} tokens do not fit the KV cache of {kv.capacity}")
        wte, cfg = self.params["model.embed_tokens.weight"], self.config
        logits = kernels.decode_int8(embedding_forward(np.array([token]), wte)[0][0], self.blocks,
                                     self.params["model.norm.weight"], wte, self.cos[P:P + 1], self.sin[P:P + 1],
                                     kv.kt[:, 0], kv.v[:, 0], P, cfg.num_attention_heads, cfg.rms_norm_eps)
        kv.length = P + 1
        return logits

    # ---- chat ------------------------------------------------------------------------------
    def stream(self, messages, tools=None, **kw):
        """Yield the reply to `messages` piece by piece; keyword arguments as in `generate.stream_chat`."""
        from .generate import stream_chat
        return stream_chat(self, messages, tools=tools, **kw)

    def chat(self, messages, tools=None, **kw) -> str:
        """The whole reply to `messages` (OpenAI-style dicts; `tools` adds NanoAgent's tools prompt)."""
        return "".join(self.stream(messages, tools=tools, **kw))

    def num_params(self) -> int:
        return sum(v.size for v in self.params.values())
