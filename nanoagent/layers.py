"""The layers of SmolLM2, each a `*_forward(...) -> (out, cache)` function.

Caches are explicit NamedTuples holding what a backward pass needs; nothing is kept on
objects. Shapes follow the legend in config.py. Lessons: lessons/03_rmsnorm ... 07_forward.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import kernels, quant


# ---- embedding: x[b, t] = wte[ids[b, t]] ---------------------------------------------

class EmbeddingCache(NamedTuple):
    ids: np.ndarray  # (B,T) int
    vocab_size: int  # V


def embedding_forward(ids, wte):
    """ids (B,T) int, wte (V,C) -> x (B,T,C)."""
    x = quant.embedding(ids, wte) if isinstance(wte, quant.Int8Weight) else wte[ids]  # int8: those rows only
    return x, EmbeddingCache(ids, wte.shape[0])


def embedding_backward(dx, cache: EmbeddingCache, dwte=None):
    """dx (B,T,C) -> dwte (V,C): row v sums dx over the positions holding token v.

    With `dwte` given (the tied LM head's gradient), the rows are added into it in place:
    the embedding fans out to the input and the output of the network.
    """
    if dwte is None:
        dwte = np.zeros((cache.vocab_size, dx.shape[-1]), dx.dtype)
    # fan-out: +=.  np.add.at(dwte, ids.ravel(), dx.reshape(-1, C)) (kernels.embedding_backward_ref)
    kernels.embedding_backward(cache.ids.reshape(-1), dx.reshape(-1, dx.shape[-1]), dwte)
    return dwte


# ---- RMSNorm: y = x / rms(x) * w ------------------------------------------------------

class RMSNormCache(NamedTuple):
    x: np.ndarray  # (...,C) the input
    w: np.ndarray  # (C,)
    rstd: np.ndarray  # (N,) 1/rms of each of the N = prod(...) rows


def rmsnorm_forward(x, w, eps):
    """x (...,C), w (C,) -> y (...,C); rstd = 1/sqrt(mean(x^2) + eps) per row."""
    x2 = x.reshape(-1, x.shape[-1])  # (...,C) -> (N,C)
    # rstd = 1 / np.sqrt(np.mean(x2**2, axis=-1) + eps); y = x2 * rstd[:, None] * w  (kernels.rmsnorm_ref)
    y, rstd = kernels.rmsnorm(x2, w, eps)
    return y.reshape(x.shape), RMSNormCache(x, w, rstd)


def rmsnorm_backward(dy, cache: RMSNormCache):
    """dy (...,C) -> dx (...,C), dw (C,).

    With xhat = x * rstd: dw = sum_rows dy * xhat; dx = rstd * (dy*w - xhat * mean(dy*w * xhat)).
    """
    C = dy.shape[-1]
    # xhat = x * rstd[:, None]; dw = (dy * xhat).sum(0); g = dy * w;
    # dx = rstd[:, None] * (g - xhat * (g * xhat).mean(-1, keepdims=True))  (kernels.rmsnorm_backward_ref)
    dx, dw = kernels.rmsnorm_backward(dy.reshape(-1, C), cache.x.reshape(-1, C), cache.w, cache.rstd)
    return dx.reshape(dy.shape), dw


# ---- linear (no bias): y = x @ w.T ----------------------------------------------------

class LinearCache(NamedTuple):
    x: np.ndarray  # (...,Cin) the input
    w: np.ndarray  # (Cout,Cin)


FEW_ROWS = 32  # below: a decoding step's few rows, multiplied by kernels.matmul_rows (lessons/08_kv_cache_and_sampling)
SOME_ROWS = 64  # below: BLAS with the weight as left operand, w @ x.T, about 2x faster than x @ w.T there


def linear_forward(x, w):
    """x (...,Cin), w (Cout,Cin) -> y (...,Cout); w may be a quant.Int8Weight (inference only)."""
    x2 = x.reshape(-1, x.shape[-1])  # (N,Cin)
    if isinstance(w, quant.Int8Weight):
        y = quant.linear(x2, w)  # int8 kernels, no float copy of w
    elif len(x2) < FEW_ROWS:  # one token, or a batched decoding step: bound by reading w once
        y = kernels.matmul_rows(x2, w)
    elif len(x2) < SOME_ROWS:  # the same product, the weight as left operand
        y = (w @ x2.T).T  # (Cout,Cin) @ (Cin,N) -> (N,Cout) view
    else:
        y = x2 @ w.T  # one 2-D BLAS call on the weight as stored, never a copy of it
    return y.reshape(*x.shape[:-1], w.shape[0]), LinearCache(x, w)


def linear_backward(dy, cache: LinearCache):
    """dy (...,Cout) -> dx (...,Cin) = dy @ w, dw (Cout,Cin) = dy^T x summed over all rows."""
    x, w = cache
    dy2 = dy.reshape(-1, dy.shape[-1])  # (...,Cout) -> (N,Cout)
    dx = dy2 @ w  # (N,Cout) @ (Cout,Cin)
    dw = dy2.T @ x.reshape(-1, x.shape[-1])  # (Cout,N) @ (N,Cin)
    return dx.reshape(*dy.shape[:-1], w.shape[1]), dw


# ---- RoPE: rotate each (i, i + D/2) pair of a head by angle pos * theta^(-2i/D) --------

def rope_tables(head_dim, max_positions, theta, dtype=np.float32):
    """-> cos, sin (max_positions, D/2): the rotation of each position and frequency."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
    angles = np.outer(np.arange(max_positions, dtype=np.float64), inv_freq)  # (Tmax, D/2)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


class RopeCache(NamedTuple):
    cos: np.ndarray  # (T,D/2)
    sin: np.ndarray  # (T,D/2)


def rope_forward(x, cos, sin):
    """x (B,N,T,D) heads at T positions, cos/sin (T,D/2) of those positions -> rotated x (B,N,T,D)."""
    B, N, T, D = x.shape
    # x1, x2 = x[..., :D/2], x[..., D/2:]; y = concat(x1 cos - x2 sin, x2 cos + x1 sin)  (kernels.rope_ref)
    y = kernels.rope(x.reshape(B * N, T, D), cos, sin)  # (B,N,T,D) -> (B*N,T,D)
    return y.reshape(B, N, T, D), RopeCache(cos, sin)


def rope_backward(dy, cache: RopeCache):
    """dy (B,N,T,D) -> dx (B,N,T,D): a rotation's transpose is the rotation by the opposite angle.

    (y1, y2) = (x1 cos - x2 sin, x2 cos + x1 sin)  =>  (dx1, dx2) = (dy1 cos + dy2 sin, dy2 cos - dy1 sin).
    """
    B, N, T, D = dy.shape
    dx = kernels.rope(dy.reshape(B * N, T, D), cache.cos, -cache.sin)
    return dx.reshape(B, N, T, D)


# ---- causal attention with grouped KV heads -------------------------------------------
# The queries go through in blocks of QUERY_BLOCK positions, and a block's scores stop at the
# key of its last query: every key after it is masked for the whole block, so it is never
# multiplied. At T = S = 1024 that skips 44% of the products of the full (T,S) scores (as
# PyTorch's causal attention does), and keeps 44% less of the probabilities for the backward.

QUERY_BLOCK = 128


class AttentionCache(NamedTuple):
    q: np.ndarray  # (B,H,T,D)
    k: np.ndarray  # (B,KV,S,D)
    v: np.ndarray  # (B,KV,S,D)
    probs: tuple  # per query block of rows t0..t1-1: (B,KV,G*(t1-t0),P+t1), the G heads of a KV head stacked
    shared: int = 0  # the first `shared` keys and values are a prefix all B sequences share (prefix_attention)

    def full_probs(self) -> np.ndarray:
        """The attention probabilities as one (B,H,T,S) array (zero on the keys a block skipped)."""
        (B, H, T, _), S = self.q.shape, self.k.shape[2]
        KV = self.k.shape[1]
        full = np.zeros((B, KV, H // KV, T, S), self.q.dtype)
        for (t0, t1), p in zip(query_blocks(T), self.probs):
            full[:, :, :, t0:t1, :p.shape[-1]] = p.reshape(B, KV, H // KV, t1 - t0, -1)
        return full.reshape(B, H, T, S)


def query_blocks(T):
    """The query rows 0..T-1 as (t0, t1) blocks of QUERY_BLOCK."""
    return [(t0, min(T, t0 + QUERY_BLOCK)) for t0 in range(0, T, QUERY_BLOCK)]


def attention_forward(q, k, v):
    """q (B,H,T,D), k/v (B,KV,S,D) with S = P + T -> out (B,H,T,D).

    Query t sits at position P + t and sees keys 0..P+t; query head h reads KV head h // (H/KV).
    probs = softmax(q k^T / sqrt(D) + causal mask); out = probs v.
    """
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    G, P = H // KV, S - T  # query heads per KV head, stacked as rows so each KV head is one BLAS matmul
    qg = q.reshape(B, KV, G, T, D)
    out = np.empty_like(qg)
    probs = []
    for t0, t1 in query_blocks(T):
        n, end = G * (t1 - t0), P + t1  # the block's rows; the keys its last query sees
        qb = qg[:, :, :, t0:t1].reshape(B, KV, n, D)  # (B,KV,G,Tb,D) -> (B,KV,G*Tb,D)
        scores = qb @ k[:, :, :end].swapaxes(-1, -2)  # (B,KV,G*Tb,D) @ (B,KV,D,end) -> (B,KV,G*Tb,end)
        # p = softmax(scores / sqrt(D) with -inf where key s > P + t, over s)  (kernels.causal_softmax_ref)
        p = kernels.causal_softmax(scores.reshape(B * H, t1 - t0, end), 1.0 / math.sqrt(D), P + t0)
        p = p.reshape(B, KV, n, end)
        out[:, :, :, t0:t1] = (p @ v[:, :, :end]).reshape(B, KV, G, t1 - t0, D)  # (B,KV,G*Tb,end) @ (B,KV,end,D)
        probs.append(p)
    return out.reshape(B, H, T, D), AttentionCache(q, k, v, tuple(probs))


def attention_backward(dout, cache: AttentionCache):
    """dout (B,H,T,D) -> dq (B,H,T,D), dk, dv (B,KV,S,D).

    out = p v  =>  dp = dout v^T, dv = p^T dout (summed over the H/KV query heads sharing v);
    p = softmax(s)  =>  ds = p * (dp - sum_s p dp);  s = q k^T / sqrt(D)  =>  dq = ds k / sqrt(D),
    dk = ds^T q / sqrt(D). Masked (future) keys have p = 0, hence ds = 0: no gradient flows to them.
    Block by block as the forward went; dk and dv add up every block's share.
    """
    q, k, v = cache.q, cache.k, cache.v
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    G, P = H // KV, S - T
    scale = 1.0 / math.sqrt(D)
    qg, do = q.reshape(B, KV, G, T, D), dout.reshape(B, KV, G, T, D)
    dq, dk, dv = np.empty_like(qg), np.zeros_like(k), np.zeros_like(v)
    for (t0, t1), p in zip(query_blocks(T), cache.probs):
        n, end = G * (t1 - t0), P + t1
        dob = do[:, :, :, t0:t1].reshape(B, KV, n, D)  # (B,KV,G,Tb,D) -> (B,KV,G*Tb,D)
        dv[:, :, :end] += p.swapaxes(-1, -2) @ dob  # (B,KV,end,G*Tb) @ (B,KV,G*Tb,D) -> (B,KV,end,D)
        dp = dob @ v[:, :, :end].swapaxes(-1, -2)  # (B,KV,G*Tb,D) @ (B,KV,D,end) -> (B,KV,G*Tb,end)
        ds = kernels.softmax_backward(p, dp)  # p * (dp - (p * dp).sum(-1, keepdims=True)) (softmax_backward_ref)
        del dp
        dqb = (ds @ k[:, :, :end]) * scale  # (B,KV,G*Tb,end) @ (B,KV,end,D) -> (B,KV,G*Tb,D)
        dq[:, :, :, t0:t1] = dqb.reshape(B, KV, G, t1 - t0, D)
        qb = qg[:, :, :, t0:t1].reshape(B, KV, n, D)
        dk[:, :, :end] += ds.swapaxes(-1, -2) @ qb  # (B,KV,end,G*Tb) @ (B,KV,G*Tb,D) -> (B,KV,end,D)
    dk *= scale
    return dq.reshape(B, H, T, D), dk, dv


class KVGrad(NamedTuple):
    """The gradient w.r.t. one layer's keys and values (after RoPE) at a shared prefix's P positions."""
    k: np.ndarray  # (1,KV,P,D)
    v: np.ndarray  # (1,KV,P,D)


def prefix_attention(pk, pv, q, k, v):
    """Causal attention for B sequences that all continue one prefix whose keys and values
    pk, pv (1,KV,P,D) were computed once: q, k, v (B,.,T,D) at positions P..P+T-1 -> out (B,H,T,D).

    The prefix's keys are laid before each sequence's own, so `attention_forward` sees S = P + T
    keys and its causal mask lets every query see the whole prefix. GRPO uses it to run a prompt
    once for its G replies; `block_backward` sums the B sequences' gradients at the prefix.
    """
    B = q.shape[0]
    k = np.concatenate([np.broadcast_to(pk, (B, *pk.shape[1:])), k], axis=2)  # (B,KV,P+T,D)
    v = np.concatenate([np.broadcast_to(pv, (B, *pv.shape[1:])), v], axis=2)
    out, cache = attention_forward(q, k, v)
    return out, cache._replace(shared=pk.shape[2])


# ---- SwiGLU MLP: down(silu(gate(x)) * up(x)) ------------------------------------------

class SwiGLUCache(NamedTuple):
    g: np.ndarray  # (...,F) the gate's output
    u: np.ndarray  # (...,F) up's output


def swiglu_forward(g, u):
    """g, u (...,F) -> silu(g) * u (...,F)."""
    return kernels.silu_gate(g, u), SwiGLUCache(g, u)  # g / (1 + np.exp(-g)) * u  (kernels.silu_gate_ref)


def swiglu_backward(dy, cache: SwiGLUCache):
    """dy (...,F) -> dg, du (...,F).  With sig = sigmoid(g): du = dy g sig, dg = dy u sig (1 + g (1 - sig))."""
    return kernels.silu_gate_backward(dy, cache.g, cache.u)  # (kernels.silu_gate_backward_ref)


# ---- one transformer block --------------------------------------------------------------

class BlockWeights(NamedTuple):
    attn_norm: np.ndarray  # (C,)
    q: np.ndarray  # (H*D, C)
    k: np.ndarray  # (KV*D, C)
    v: np.ndarray  # (KV*D, C)
    o: np.ndarray  # (C, H*D)
    mlp_norm: np.ndarray  # (C,)
    gate: np.ndarray  # (F, C)
    up: np.ndarray  # (F, C)
    down: np.ndarray  # (C, F)


BLOCK_NAMES = BlockWeights(
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
    "mlp.up_proj.weight", "mlp.down_proj.weight")


def block_weights(params, i) -> BlockWeights:
    return BlockWeights(*(params[f"model.layers.{i}.{name}"] for name in BLOCK_NAMES))


class BlockCache(NamedTuple):
    norm1: RMSNormCache  # x (B,T,C)
    q: LinearCache  # h (B,T,C), w (H*D,C)
    k: LinearCache  # h (B,T,C), w (KV*D,C)
    v: LinearCache  # h (B,T,C), w (KV*D,C)
    rope_q: RopeCache  # (T,D/2)
    rope_k: RopeCache  # (T,D/2)
    attn: AttentionCache | None  # q (B,H,T,D), k/v (B,KV,T,D); None over a KV cache (inference)
    o: LinearCache  # a (B,T,H*D), w (C,H*D)
    norm2: RMSNormCache  # x1 (B,T,C)
    gate: LinearCache  # h2 (B,T,C), w (F,C)
    up: LinearCache  # h2 (B,T,C), w (F,C)
    swiglu: SwiGLUCache  # g, u (B,T,F)
    down: LinearCache  # m (B,T,F), w (C,F)


def block_forward(x, w: BlockWeights, n_heads, n_kv_heads, eps, cos, sin, attend=attention_forward):
    """x (B,T,C) -> x + attn(norm(x)), then + mlp(norm(.)) (B,T,C).

    cos/sin (T,D/2) are the tables at these T positions. `attend(q, k, v) -> (out, cache)` is
    causal attention over these T positions (`attention_forward`), or, when generating, one that
    first appends k and v to a KV cache and attends to every cached position (decode.KVCache.attend).
    """
    B, T, C = x.shape
    H, KV = n_heads, n_kv_heads
    D = w.q.shape[0] // H
    # attention
    h, c_norm1 = rmsnorm_forward(x, w.attn_norm, eps)
    q, c_q = linear_forward(h, w.q)  # (B,T,H*D)
    k, c_k = linear_forward(h, w.k)  # (B,T,KV*D)
    v, c_v = linear_forward(h, w.v)
    q, c_rq = rope_forward(q.reshape(B, T, H, D).transpose(0, 2, 1, 3), cos, sin)  # (B,T,H*D) -> (B,H,T,D)
    k, c_rk = rope_forward(k.reshape(B, T, KV, D).transpose(0, 2, 1, 3), cos, sin)  # (B,T,KV*D) -> (B,KV,T,D)
    v = v.reshape(B, T, KV, D).transpose(0, 2, 1, 3)  # (B,T,KV*D) -> (B,KV,T,D)
    a, c_attn = attend(q, k, v)  # (B,H,T,D)
    o, c_o = linear_forward(a.transpose(0, 2, 1, 3).reshape(B, T, H * D), w.o)  # (B,H,T,D) -> (B,T,H*D)
    x = x + o  # residual
    # MLP
    h, c_norm2 = rmsnorm_forward(x, w.mlp_norm, eps)
    g, c_g = linear_forward(h, w.gate)  # (B,T,F)
    u, c_u = linear_forward(h, w.up)
    m, c_sw = swiglu_forward(g, u)
    d, c_d = linear_forward(m, w.down)  # (B,T,C)
    return x + d, BlockCache(c_norm1, c_q, c_k, c_v, c_rq, c_rk, c_attn, c_o, c_norm2, c_g, c_u, c_sw, c_d)


def block_backward(dy, cache: BlockCache, dkv: KVGrad | None = None):
    """dy (B,T,C) -> dx (B,T,C), dw (BlockWeights of gradients), d_prefix, the forward run in reverse.

    Two places fan out and so add gradients: the residual stream (x feeds both the branch and
    the sum) and each normed input (h feeds q, k and v; h2 feeds gate and up). When these T
    positions are a prefix that later sequences attended to, `dkv` is the gradient those sent
    back to its keys and values, added to their own. When the forward attended to a shared
    prefix (`prefix_attention`), d_prefix is the KVGrad at the prefix, summed over the batch
    (else None).
    """
    B, T, C = dy.shape
    q, k = cache.attn.q, cache.attn.k
    H, KV, D = q.shape[1], k.shape[1], q.shape[3]
    # MLP: y = x1 + down(swiglu(gate(h2), up(h2))), h2 = norm2(x1)
    dm, d_down = linear_backward(dy, cache.down)
    dg, du = swiglu_backward(dm, cache.swiglu)
    del dm
    dh2, d_gate = linear_backward(dg, cache.gate)
    dh2_u, d_up = linear_backward(du, cache.up)
    dh2 += dh2_u  # fan-out: h2 feeds gate and up
    del dg, du, dh2_u
    dx1, d_mlp_norm = rmsnorm_backward(dh2, cache.norm2)
    dx1 += dy  # fan-out: the residual stream carries dy past the MLP
    # attention: x1 = x + o(attn(rope(q(h)), rope(k(h)), v(h))), h = norm1(x)
    da, d_o = linear_backward(dx1, cache.o)  # (B,T,H*D)
    dq, dk, dv = attention_backward(da.reshape(B, T, H, D).transpose(0, 2, 1, 3), cache.attn)  # -> (B,H,T,D)
    del da
    P, d_prefix = cache.attn.shared, None
    if P:  # fan-out: each sequence read the prefix's keys and values
        d_prefix = KVGrad(dk[:, :, :P].sum(0, keepdims=True), dv[:, :, :P].sum(0, keepdims=True))
        dk, dv = dk[:, :, P:], dv[:, :, P:]  # (B,KV,T,D): this block's own positions
    if dkv is not None:  # fan-out: later sequences read these keys and values too
        dk = dk + dkv.k
        dv = dv + dkv.v
    dq = rope_backward(dq, cache.rope_q).transpose(0, 2, 1, 3).reshape(B, T, H * D)  # (B,H,T,D) -> (B,T,H*D)
    dk = rope_backward(dk, cache.rope_k).transpose(0, 2, 1, 3).reshape(B, T, KV * D)  # (B,KV,T,D) -> (B,T,KV*D)
    dv = dv.transpose(0, 2, 1, 3).reshape(B, T, KV * D)
    dh, d_q = linear_backward(dq, cache.q)
    dh_k, d_k = linear_backward(dk, cache.k)
    dh_v, d_v = linear_backward(dv, cache.v)
    dh += dh_k  # fan-out: h feeds q, k and v
    dh += dh_v
    del dq, dk, dv, dh_k, dh_v
    dx, d_attn_norm = rmsnorm_backward(dh, cache.norm1)
    dx += dx1  # fan-out: the residual stream carries dx1 past attention
    return dx, BlockWeights(d_attn_norm, d_q, d_k, d_v, d_o, d_mlp_norm, d_gate, d_up, d_down), d_prefix
