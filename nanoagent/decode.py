"""Inference only: the KV cache, and attention over it.

Generating a token attends to every position before it; the keys and values of those
positions never change, so each layer keeps them in a cache instead of recomputing them.
Nothing here has a backward pass: training runs `layers.attention_forward` on whole
sequences. Lesson: lessons/08_kv_cache_and_sampling/README.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels
from .layers import attention_forward


class ContextLengthError(ValueError):
    """A prompt (plus the tokens to generate) does not fit the context or the KV cache."""


def check_fits(n_tokens: int, capacity: int, hint: str = "") -> None:
    """Raise ContextLengthError unless n_tokens positions fit `capacity` (the one place this is checked)."""
    if n_tokens > capacity:
        raise ContextLengthError(f"{n_tokens} tokens do not fit the context of {capacity}{hint}")


@dataclass
class KVCache:
    """Keys and values of every layer for the positions seen so far (run state, not parameters).

    Keys are stored transposed, so a new query's scores q.k_j run along contiguous memory. An int8
    model's cache holds float16 where the CPU converts it in hardware (Model.cache_dtype).
    """
    kt: np.ndarray  # (L,B,KV,D,Tmax)
    v: np.ndarray  # (L,B,KV,Tmax,D)
    length: int = 0  # P: positions filled

    @property
    def capacity(self) -> int:
        return self.v.shape[3]

    def attend(self, layer: int, q, k, v):
        """q (B,H,T,D), k/v (B,KV,T,D) at positions P..P+T-1 -> out (B,H,T,D), None (no backward cache).

        Writes k and v at P..P+T-1 of this layer's cache, then the queries attend to all P+T
        cached positions. `length` moves on once every layer has its keys (Model.forward does it).
        """
        P, T = self.length, q.shape[2]
        kt_cache, v_cache = self.kt[layer], self.v[layer]  # (B,KV,D,Tmax), (B,KV,Tmax,D)
        kt_cache[..., P:P + T], v_cache[:, :, P:P + T] = k.swapaxes(-1, -2), v
        if q.shape[0] == 1 and T == 1:  # decoding one token: attend to the cache as stored
            return attention_decode(q, kt_cache, v_cache, P + 1), None
        k, v = kt_cache[..., :P + T].swapaxes(-1, -2), v_cache[:, :, :P + T]  # views (B,KV,P+T,D)
        if k.dtype != q.dtype:  # a float16 cache (kernels.HALF_CACHE): the products run in float32
            k, v = k.astype(q.dtype), v.astype(q.dtype)
        return attention_forward(q, k, v)[0], None


def one_sequence(kv: KVCache) -> None:
    """Raise ValueError unless `kv` holds one sequence (what prefill and decode_step extend)."""
    if kv.v.shape[1] != 1:
        raise ValueError(f"this cache holds {kv.v.shape[1]} sequences; prefill and decode_step extend one "
                         "(several go through Model.forward with ids (B,T), or decode_rows on a SlotCache)")


def new_kv_cache(config, dtype, capacity: int | None = None, batch: int = 1) -> KVCache:
    """An empty cache for `batch` sequences of up to `capacity` positions (default: the context)."""
    capacity = min(capacity or config.max_position_embeddings, config.max_position_embeddings)
    L, KV, D = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
    return KVCache(np.zeros((L, batch, KV, D, capacity), dtype), np.zeros((L, batch, KV, capacity, D), dtype))


@dataclass
class SlotCache:
    """Keys and values for up to S sequences decoded together, a cache row (slot) each, every slot
    with its own length: sequences of different lengths join and leave while others go on."""
    kt: np.ndarray  # (L,S,KV,D,Tmax)
    v: np.ndarray  # (L,S,KV,Tmax,D)
    lengths: np.ndarray  # (S,) int64: positions filled in each slot

    @property
    def capacity(self) -> int:
        return self.v.shape[3]

    def slot(self, s: int, keep: int = 0) -> KVCache:
        """Slot s as a one-sequence cache (views, so a prefill through it fills the slot) holding its first
        `keep` positions (0: empty); a prefill through it appends after them."""
        self.lengths[s] = keep
        return KVCache(self.kt[:, s:s + 1], self.v[:, s:s + 1], keep)

    def copy_slot(self, src: int, dst: int) -> None:
        """dst holds what src holds (a shared prompt prefilled once, then sampled several ways)."""
        n = self.lengths[src]
        self.kt[:, dst, ..., :n], self.v[:, dst, :, :n] = self.kt[:, src, ..., :n], self.v[:, src, :, :n]
        self.lengths[dst] = n

    def attend_rows(self, layer: int, rows, q, k, v):
        """q (1,H,A,D), k/v (1,KV,A,D): token a of this step belongs to slot rows[a], at that slot's next
        position -> out (1,H,A,D), None. Writes each key and value into its slot, then each query
        attends to its own slot only."""
        P = self.lengths[rows]  # (A,)
        self.kt[layer, rows, :, :, P] = k[0].transpose(1, 0, 2)  # (KV,A,D) -> (A,KV,D)
        self.v[layer, rows, :, P, :] = v[0].transpose(1, 0, 2)
        out = kernels.attend_rows(q[0].transpose(1, 0, 2), self.kt[layer], self.v[layer], rows, P + 1)  # (A,H,D)
        return out.transpose(1, 0, 2)[None], None  # (A,H,D) -> (1,H,A,D)

    def attend_chunks(self, layer: int, rows, sizes, q, k, v):
        """q (1,H,N,D), k/v (1,KV,N,D): the N tokens of this pass are chunks laid end to end, chunk c
        its sizes[c] tokens continuing slot rows[c] at that slot's length -> out (1,H,N,D), None.

        Each chunk is what a one-sequence prefill of its slot would attend to (KVCache.attend on a view
        of the slot): its keys and values written after the slot's, its queries against the slot's
        earlier positions and, causally, its own. The lengths move on once every layer has its keys
        (Model.prefill_rows does it)."""
        out = np.empty_like(q)
        t0 = 0
        for r, n in zip(rows, sizes):
            t1 = t0 + n
            kv = KVCache(self.kt[:, r:r + 1], self.v[:, r:r + 1], int(self.lengths[r]))  # views of slot r
            out[:, :, t0:t1] = kv.attend(layer, q[:, :, t0:t1], k[:, :, t0:t1], v[:, :, t0:t1])[0]
            t0 = t1
        return out, None


def new_slot_cache(config, dtype, slots: int, capacity: int | None = None) -> SlotCache:
    """An empty cache of `slots` rows, each of up to `capacity` positions (default: the context)."""
    kv = new_kv_cache(config, dtype, capacity, slots)
    return SlotCache(kv.kt, kv.v, np.zeros(slots, np.int64))


def attention_decode(q, kt_cache, v_cache, n):
    """One new query per head q (1,H,1,D) at position n-1 against the caches as stored, keys
    transposed (1,KV,D,Tmax) and values (1,KV,Tmax,D), holding n positions -> out (1,H,1,D).

    The same function as `layers.attention_forward` for T = 1 (no mask needed: every cached key
    is in the past), computed by the cache kernel, which reads the contiguous cache directly:
    out[h] = softmax(q[h] . kt[h // (H/KV)] / sqrt(D)) @ v[h // (H/KV)]   (kernels.attend_cache_ref).
    """
    _, H, _, D = q.shape
    out, _ = kernels.attend_cache(q[0, :, 0], kt_cache[0], v_cache[0], n)  # (H,D)
    return out.reshape(1, H, 1, D)
