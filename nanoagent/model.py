"""SmolLM2 as one object: a flat dict of parameters keyed by HF names, and the passes over it.

`forward` runs the whole network over token ids (for training and for prefilling a KV
cache), `backward` runs it in reverse, `decode_step` adds one token to the cache, `logits`
is the full forward plus the tied LM head; `prefill_rows` and `decode_rows` extend several
sequences' slots of a SlotCache in one pass (prompt chunks, one new token each). A Model
reads no files (checkpoint.py does) and runs no generation loop (generate.py does).
Lesson: lessons/07_forward/README.md.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from . import kernels, kernels_int8
from .config import ModelConfig
from .decode import KVCache, SlotCache, check_fits, new_kv_cache, one_sequence
from .layers import (BLOCK_NAMES, BlockWeights, KVGrad, attention_forward, block_backward, block_forward,
                     block_weights, embedding_backward, embedding_forward, linear_forward, prefix_attention,
                     rmsnorm_backward, rmsnorm_forward, rope_tables)
from .quant import Int8Weight


class Prefix:
    """A prompt run once, shared by several sequences that continue it (GRPO's G replies to one prompt).

    Holds the prompt's keys and values at every layer, from its forward's caches, and the
    gradient the continuing sequences send back to them (`Model.backward(..., prefix=)` adds
    into it, `Model.backward_prefix` carries it through the prompt's own layers).
    """

    def __init__(self, caches):
        block_caches = caches[1]
        self.k = [c.attn.k for c in block_caches]  # (1,KV,P,D) each, after RoPE
        self.v = [c.attn.v for c in block_caches]
        self.length = self.k[0].shape[2]  # P
        self.grad = [KVGrad(np.zeros_like(k), np.zeros_like(v)) for k, v in zip(self.k, self.v)]


class Model:
    """SmolLM2-135M (or any config of its family) over a flat parameter dict."""

    def __init__(self, config: ModelConfig, params: dict[str, np.ndarray]):
        self.config, self.params = config, params
        self.dtype = params["model.embed_tokens.weight"].dtype
        self.cos, self.sin = rope_tables(config.head_dim, config.max_position_embeddings,
                                         config.rope_theta, self.dtype)  # (Tmax, D/2)
        self._layer_names = [f"model.layers.{i}.{name}" for i in range(config.num_hidden_layers)
                             for name in BLOCK_NAMES]
        self._stack = None  # (the layer weights it holds, int8?, kernels' typed lists): layer_stack()

    @property
    def blocks(self) -> list[BlockWeights]:
        """Each layer's weights, read from `params` on each use (so never stale when one is replaced)."""
        return [block_weights(self.params, i) for i in range(self.config.num_hidden_layers)]

    def layer_stack(self) -> tuple[bool, tuple | None]:
        """-> (int8?, float weights' layers as the decoding kernels take them: kernels.stack_layers),
        built on first use and again whenever a weight in `params` has been replaced by another
        array (one updated in place is the same array). Int8 weights get None: their step runs a
        compiled call per layer, since building typed lists of int8 arrays compiles Numba code
        that took `generate` past its 400 MB (lessons/14_int8)."""
        weights = [self.params[name] for name in self._layer_names]
        if self._stack is None or any(a is not b for a, b in zip(weights, self._stack[0])):
            int8 = isinstance(weights[1], Int8Weight)  # a layer's q
            self._stack = (weights, int8, None if int8 else kernels.stack_layers(self.blocks))
        return self._stack[1:]

    @property
    def int8(self) -> bool:
        return all(isinstance(w, Int8Weight) for w in self.params.values() if getattr(w, "ndim", 2) == 2)

    # ---- forward -------------------------------------------------------------------------
    def forward(self, ids, kv: KVCache | None = None, keep_caches: bool = True, prefix: Prefix | None = None):
        """ids (B,T) -> final-normed hidden states h (B,T,C) and the caches for backward.

        With a KV cache holding P positions, ids are positions P..P+T-1 and are appended to it.
        With a `prefix` of P positions, the B rows each continue it (positions P..P+T-1, attending
        to its keys and values, computed once for all B). Inference passes keep_caches=False:
        each layer's activations are dropped as soon as the next layer has them (keeping them
        costs about 1.5 MB per token).
        """
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None]
        B, T = ids.shape
        cfg = self.config
        P = kv.length if kv is not None else prefix.length if prefix is not None else 0
        check_fits(P + T, kv.capacity if kv is not None else cfg.max_position_embeddings)
        cos, sin = self.cos[P:P + T], self.sin[P:P + T]  # (T, D/2)
        x, c_emb = embedding_forward(ids, self.params["model.embed_tokens.weight"])  # (B,T,C)
        block_caches = []
        for i, w in enumerate(self.blocks):
            attend = (partial(kv.attend, i) if kv is not None else
                      partial(prefix_attention, prefix.k[i], prefix.v[i]) if prefix is not None else attention_forward)
            x, c = block_forward(x, w, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rms_norm_eps,
                                 cos, sin, attend)
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
    def backward(self, dh, caches, grads: dict[str, np.ndarray] | None = None, free_caches: bool = False,
                 prefix: Prefix | None = None, dkv: list[KVGrad] | None = None):
        """dh (B,T,C), the gradient of the loss w.r.t. `forward`'s h -> grads, keyed like `params`.

        Runs every layer's backward in reverse. `grads` may already hold gradients (the tied LM
        head's in 'model.embed_tokens.weight', or earlier micro-batches when accumulating): this
        pass adds into them. `free_caches` drops each block's cache once used, so activation
        memory shrinks while the gradients grow (the caller must not need `caches` afterwards).
        When the forward continued a `prefix`, the gradient w.r.t. its keys and values is added
        into `prefix.grad`; `dkv`, one KVGrad a layer, is a gradient arriving at these positions'
        own keys and values from sequences that continued them (`backward_prefix`).
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
            dx, dw, d_prefix = block_backward(dx, block_caches[i], None if dkv is None else dkv[i])
            if free_caches:
                block_caches[i] = None
            if d_prefix is not None:
                prefix.grad[i].k[...] += d_prefix.k  # in place: the KVGrad tuple holds the arrays
                prefix.grad[i].v[...] += d_prefix.v
            for name, g in zip(BLOCK_NAMES, dw):
                add(f"model.layers.{i}.{name}", g)
        name = "model.embed_tokens.weight"
        grads[name] = embedding_backward(dx, c_emb, grads.get(name))  # adds into the head's gradient if present
        return grads

    def backward_prefix(self, prefix: Prefix, caches, grads: dict[str, np.ndarray] | None = None,
                        free_caches: bool = False):
        """The backward of a prompt that other sequences continued: `caches` are its forward's,
        `prefix.grad` what they sent back to its keys and values. Its own outputs carry no loss
        (dh = 0); everything reaches it through the keys and values. -> grads, added into."""
        dh = np.zeros_like(caches[2].x)  # the final norm's input, (1,P,C)
        return self.backward(dh, caches, grads, free_caches, dkv=prefix.grad)

    def own_params(self) -> "Model":
        """Copy every parameter into a writable array of its own, so an optimizer can update it in place.

        The loader's arrays are read-only views of the memory-mapped file; training needs its own.
        """
        for name, a in self.params.items():
            self.params[name] = np.array(a, dtype=self.dtype, order="C", copy=True)
        return self

    # ---- incremental decoding -------------------------------------------------------------
    @property
    def cache_dtype(self):
        """What the KV cache holds: float16 for int8 weights where the CPU converts it in hardware
        (kernels.HALF_CACHE: half the bytes to read after a long prompt), else the model's dtype."""
        return np.float16 if self.int8 and kernels.HALF_CACHE else self.dtype

    def new_kv_cache(self, capacity: int | None = None, batch: int = 1) -> KVCache:
        return new_kv_cache(self.config, self.cache_dtype, capacity, batch)

    def prefill(self, ids, kv: KVCache) -> np.ndarray:
        """ids (T,) appended to a one-sequence cache in one batched forward -> logits of the last one (V,)."""
        one_sequence(kv)
        h, _ = self.forward(np.asarray(ids).reshape(1, -1), kv, keep_caches=False)
        return self.lm_head(h[0, -1])

    def prefill_rows(self, chunks, rows, cache: SlotCache) -> np.ndarray:
        """chunks: K lists of ids (K prompts, or pieces of them, of any lengths), chunk c appended to slot
        rows[c] at that slot's length, in one forward -> logits of each chunk's last token (K,V); slot
        rows[c] grows by len(chunks[c]).

        The N tokens of all chunks go through the network as one (1,N,C) batch, so each weight matrix
        is read once for all of them (one prompt at a time reads them once a prompt); RoPE turns each
        token by its own position, and attention keeps each chunk to its own slot, causally
        (SlotCache.attend_chunks). Each chunk gets the logits `prefill` would give it alone. Float and
        int8 weights take the same path (`block_forward`: prompts are many rows, bound by arithmetic).
        """
        rows = np.asarray(rows, np.int64)
        sizes = np.array([len(c) for c in chunks], np.int64)  # (K,)
        if len(rows) != len(sizes) or len(set(rows.tolist())) != len(rows) or not sizes.all():
            raise ValueError("prefill_rows takes one non-empty chunk per slot, each slot once")
        P = cache.lengths[rows]  # (K,)
        check_fits(int((P + sizes).max()), cache.capacity)
        cfg, wte = self.config, self.params["model.embed_tokens.weight"]
        ids = np.concatenate([np.asarray(c, np.int64) for c in chunks])  # (N,)
        positions = np.concatenate([np.arange(p, p + n) for p, n in zip(P, sizes)])  # (N,) each token's own
        cos, sin = self.cos[positions], self.sin[positions]  # (N, D/2)
        x, _ = embedding_forward(ids[None], wte)  # (1,N,C)
        for i, w in enumerate(self.blocks):
            x, _ = block_forward(x, w, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rms_norm_eps,
                                 cos, sin, partial(cache.attend_chunks, i, rows, sizes))
        cache.lengths[rows] += sizes
        last = np.cumsum(sizes) - 1  # (K,) each chunk's last token
        h, _ = rmsnorm_forward(x[0, last], self.params["model.norm.weight"], cfg.rms_norm_eps)  # (K,C)
        return self.lm_head(h)

    def decode_step(self, token: int, kv: KVCache) -> np.ndarray:
        """One new token at position P -> its logits (V,); the cache grows by one.

        Float weights run every layer and the head in one compiled call (kernels.decode_float),
        int8 weights a compiled call per layer (kernels_int8.decode_int8): the same math as
        `forward`, pinned to it by tests. The cache holds one sequence (several go through
        `forward`, ids (B,T), or `decode_rows`).
        """
        one_sequence(kv)
        P = kv.length
        check_fits(P + 1, kv.capacity)
        wte, cfg = self.params["model.embed_tokens.weight"], self.config
        x = embedding_forward(np.array([token]), wte)[0][0]  # (C,)
        int8, stack = self.layer_stack()
        decode, layers = (kernels_int8.decode_int8, self.blocks) if int8 else (kernels.decode_float, stack)
        logits = decode(x, layers, self.params["model.norm.weight"], wte, self.cos[P:P + 1], self.sin[P:P + 1],
                        kv.kt[:, 0], kv.v[:, 0], P, cfg.num_attention_heads, cfg.rms_norm_eps)
        kv.length = P + 1
        return logits

    def decode_rows(self, tokens, rows, cache: SlotCache) -> np.ndarray:
        """One new token for each of A sequences, token a in slot rows[a] at that slot's own position
        -> logits (A,V); each slot grows by one.

        The A tokens go through the network side by side, so each weight matrix is read once for
        all of them ((A,C) @ (C,N) products); RoPE turns each token by its own position, and
        attention reads each token's own slot. Float weights run the whole step in one compiled
        call (kernels.decode_rows; one sequence alone takes decode_step's kernels.decode_float); int8
        weights go layer by layer through `block_forward` (SlotCache.attend_rows).
        """
        rows = np.asarray(rows, np.int64)
        P = cache.lengths[rows]  # (A,)
        check_fits(int(P.max()) + 1, cache.capacity)
        cfg, wte, norm = self.config, self.params["model.embed_tokens.weight"], self.params["model.norm.weight"]
        x, _ = embedding_forward(np.asarray(tokens).reshape(1, -1), wte)  # (1,A,C)
        cos, sin = self.cos[P], self.sin[P]  # (A, D/2): each token at its own position
        args = (cfg.num_attention_heads, cfg.rms_norm_eps)
        int8, stack = self.layer_stack()
        if int8:
            for i, w in enumerate(self.blocks):
                x, _ = block_forward(x, w, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rms_norm_eps,
                                     cos, sin, partial(cache.attend_rows, i, rows))
            h, _ = rmsnorm_forward(x, norm, cfg.rms_norm_eps)  # (1,A,C)
            logits = self.lm_head(h[0])
        elif len(rows) == 1:
            r = rows[0]
            logits = kernels.decode_float(x[0, 0], stack, norm, wte, cos, sin, cache.kt[:, r], cache.v[:, r],
                                          int(P[0]), *args)[None]
        else:
            logits = kernels.decode_rows(x[0], stack, norm, wte, cos, sin, cache.kt, cache.v, rows, P, *args)
        cache.lengths[rows] += 1
        return logits

    def num_params(self) -> int:
        return sum(v.size for v in self.params.values())
