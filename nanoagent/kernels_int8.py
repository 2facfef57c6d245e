"""The int8 kernels: quantizing rows, int8 x int16 matrix products, and one decoding step per layer.

A weight row is int8 with one float32 scale per group of gs inputs (gs = Cin: one scale per
output channel); the activations are quantized on the fly to int16 over the same groups.
Each group's dot product is summed exactly in int32 (|q| <= 127 and |xq| <= limit with
gs * 127 * limit < 2^31: no overflow), then scaled and summed in float32. Integer sums may be
reordered freely, so LLVM vectorizes them without fastmath. Each kernel sits beside the
plain-NumPy twin the tests pin it to. Lesson: lessons/14_int8/README.md.
"""
from __future__ import annotations

import numba
import numpy as np

from .kernels import _attend_new, _rmsnorm, _silu_gate, njit  # the float kernels a decoding layer reuses

# ---- symmetric quantization of rows, group by group: s = max|x| / limit, q = rint(x / s) ----

@njit
def _quantize_rows(x, gs, limit, q, scale):
    N, C = x.shape
    for n in range(N):
        xn, qn = x[n], q[n]
        for g in range(C // gs):
            b = g * gs
            m = np.float32(0.0)
            for j in range(gs):
                m = max(m, abs(np.float32(xn[b + j])))
            s = np.float32(m / limit)
            scale[n, g] = s
            for j in range(gs):
                qn[b + j] = 0 if s == 0 else np.rint(np.float32(xn[b + j]) / s)


def quantize_rows(x, gs, limit, dtype):
    """x (N,C) float -> q (N,C) of integer `dtype` in [-limit, limit], scale (N,C/gs) float32:
    x ~ q * scale, one scale per group of gs consecutive entries of a row."""
    x = np.ascontiguousarray(x)
    q, scale = np.empty(x.shape, dtype), np.empty((x.shape[0], x.shape[1] // gs), np.float32)
    _quantize_rows(x, gs, np.float32(limit), q, scale)
    return q, scale


def quantize_rows_ref(x, gs, limit, dtype):
    N, C = x.shape
    xg = x.reshape(N, C // gs, gs).astype(np.float32)  # (N,C) -> (N,G,gs)
    scale = np.abs(xg).max(axis=-1) / np.float32(limit)  # (N,G) float32
    safe = np.where(scale == 0, np.float32(1), scale)[..., None]
    q = np.where(scale[..., None] == 0, 0, np.rint(xg / safe))
    return q.astype(dtype).reshape(N, C), scale


# ---- rounding rows onto given scales: q = clip(rint(x / s), -limit, limit) -------------------

@njit
def _round_rows(x, scale, limit, q):
    N, C = x.shape
    gs = C // scale.shape[1]
    for n in range(N):
        xn, qn = x[n], q[n]
        for g in range(C // gs):
            s, b = scale[n, g], g * gs
            for j in range(gs):
                qn[b + j] = 0 if s == 0 else min(limit, max(-limit, np.rint(np.float32(xn[b + j]) / s)))


def round_rows(x, scale, limit, dtype):
    """x (N,C) float, scale (N,G) float32 -> q (N,C) of integer `dtype`: x ~ q * scale, |q| <= limit."""
    x = np.ascontiguousarray(x)
    q = np.empty(x.shape, dtype)
    _round_rows(x, scale, np.float32(limit), q)
    return q


def round_rows_ref(x, scale, limit, dtype):
    N, C = x.shape
    s = scale[..., None]  # (N,G,1)
    q = np.rint(x.reshape(N, scale.shape[1], -1).astype(np.float32) / np.where(s == 0, np.float32(1), s))
    return np.where(s == 0, 0, np.clip(q, -limit, limit)).astype(dtype).reshape(N, C)


# ---- back to float: w[r, i] = q[r, i] * scale[r, i // gs] -----------------------------------
# One thread: it runs between BLAS calls, and Numba's threads waking while BLAS's still spin
# fight them for the cores (lessons/14_int8/README.md has the measurement).

@njit
def _dequantize_rows(q, scale, out):
    R, C = q.shape
    gs = C // scale.shape[1]
    for r in range(R):
        qr, o = q[r], out[r]
        for g in range(C // gs):
            s, b = scale[r, g], g * gs
            for j in range(gs):
                o[b + j] = np.float32(qr[b + j]) * s


def dequantize_rows(q, scale, out=None):
    """q (R,C) int8, scale (R,G) float32 -> (R,C) float32 (into `out` when given)."""
    out = np.empty(q.shape, np.float32) if out is None else out
    _dequantize_rows(q, scale, out)
    return out


def dequantize_rows_ref(q, scale):
    R, C = q.shape
    return (q.reshape(R, scale.shape[1], -1) * scale[..., None]).reshape(R, C).astype(np.float32)


# ---- int8 matmul: out[n,o] = sum_g sw[o,g] sx[n,g] sum_{i in group g} q[o,i] xq[n,i] ---------

@njit
def _dot_int8(xq, sx, q, sw):
    """One row: xq (Cin,) int16, sx (G,), q (Cin,) int8, sw (G,) -> sum_g sw[g] sx[g] (q . xq over group g)."""
    G = sx.shape[0]
    gs = xq.shape[0] // G
    acc = np.float32(0.0)
    for g in range(G):
        b = g * gs
        dot = np.int32(0)
        for j in range(gs):  # np.int32(...) keeps 32-bit lanes; Numba would widen to int64
            dot = np.int32(dot + np.int32(q[b + j]) * np.int32(xq[b + j]))
        acc += sw[g] * sx[g] * np.float32(dot)
    return acc


@numba.njit(cache=True, nogil=True, parallel=True)
def _matmul_int8(xq, sx, q, sw, out):
    for o in numba.prange(q.shape[0]):  # each output row o written by one thread only
        for n in range(xq.shape[0]):
            out[n, o] = _dot_int8(xq[n], sx[n], q[o], sw[o])


def matmul_int8(xq, sx, q, sw):
    """xq (N,Cin) int16, sx (N,G) float32; q (Cout,Cin) int8, sw (Cout,G) float32 -> (N,Cout) float32,
    = (xq * sx) @ (q * sw).T with each group's dot product done in integers."""
    out = np.empty((xq.shape[0], q.shape[0]), np.float32)
    _matmul_int8(xq, sx, q, sw, out)
    return out


def matmul_int8_ref(xq, sx, q, sw):
    N, Cin = xq.shape
    G = sx.shape[1]
    dots = np.einsum("ngi,ogi->nog", xq.reshape(N, G, -1).astype(np.int64),
                     q.reshape(q.shape[0], G, -1).astype(np.int64))  # (N,Cout,G) exact integer dots
    return np.einsum("nog,og,ng->no", dots.astype(np.float64), sw, sx).astype(np.float32)


# ==== one decoding step with int8 weights, a compiled call per layer ========================
# Decoding a token runs about 150 small parallel loops (the matmuls of 30 layers, a few dozen
# microseconds each). Called one by one from Python, each also pays the interpreter and wakes
# Numba's worker thread from sleep; here each layer is one call, so its loops follow each
# other within microseconds while the worker still spins. The math is the layered forward's
# (layers.block_forward with the kernels above, a test pins the two equal); only the order of
# the loops differs: q, k and v share one parallel loop over their rows, and so do gate and up.
# One call for the whole step is faster still, but needs the 30 layers as one Numba argument:
# a tuple, whose type (so the compiled code) changes with the number of layers, or a
# numba.typed.List, whose building compiles code that costs more memory than int8 saves
# (lessons/14_int8/README.md has the figures).

@njit
def int16_limit(gs):
    """The int16 range of activations summed against int8 weights (|q| <= 127) in groups of
    gs: each group's sum gs * 127 * limit stays below 2^31."""
    return min(32767, (2**31 - 1) // (gs * 127))


@njit
def _quantize_vec(x, gs):
    """x (C,) float32 -> xq (C,) int16, sx (C/gs,) float32: x ~ xq * sx group by group."""
    xq, sx = np.empty(x.shape[0], np.int16), np.empty(x.shape[0] // gs, np.float32)
    _quantize_rows(x.reshape(1, -1), gs, np.float32(int16_limit(gs)), xq.reshape(1, -1), sx.reshape(1, -1))
    return xq, sx


@numba.njit(cache=True, nogil=True, parallel=True)
def _decode_layer_int8(x, attn_norm, wq, sq, wk, sk, wv, sv, wo, so, mlp_norm, wg, sg, wu, su, wd, sd,
                       cos, sin, kt, vc, P, n_heads, eps):
    C = x.shape[0]
    KV, D = kt.shape[0], kt.shape[1]
    H = n_heads
    h, rstd = np.empty((1, C), np.float32), np.empty(1, np.float32)
    # attention: the rows of q, k and v in one parallel loop, from the normed input
    _rmsnorm(x.reshape(1, C), attn_norm, eps, h, rstd)
    xq, sx = _quantize_vec(h[0], C // sq.shape[1])
    q, k, v = np.empty((H, 1, D), np.float32), np.empty((KV, 1, D), np.float32), np.empty((KV, D), np.float32)
    qf, kf, vf = q.reshape(H * D), k.reshape(KV * D), v.reshape(KV * D)
    nq, nk = H * D, KV * D
    for r in numba.prange(nq + 2 * nk):  # each row written by one thread only
        if r < nq:
            qf[r] = _dot_int8(xq, sx, wq[r], sq[r])
        elif r < nq + nk:
            kf[r - nq] = _dot_int8(xq, sx, wk[r - nq], sk[r - nq])
        else:
            vf[r - nq - nk] = _dot_int8(xq, sx, wv[r - nq - nk], sv[r - nq - nk])
    att = _attend_new(q, k, v, cos, sin, kt, vc, P)
    aq, sa = _quantize_vec(att.reshape(H * D), (H * D) // so.shape[1])
    o = np.empty(C, np.float32)
    for r in numba.prange(C):
        o[r] = _dot_int8(aq, sa, wo[r], so[r])
    x = x + o  # residual
    # MLP: the rows of gate and up in one parallel loop, then down
    _rmsnorm(x.reshape(1, C), mlp_norm, eps, h, rstd)
    xq, sx = _quantize_vec(h[0], C // sg.shape[1])
    F = wg.shape[0]
    g, u, m = np.empty(F, np.float32), np.empty(F, np.float32), np.empty(F, np.float32)
    for r in numba.prange(2 * F):
        if r < F:
            g[r] = _dot_int8(xq, sx, wg[r], sg[r])
        else:
            u[r - F] = _dot_int8(xq, sx, wu[r - F], su[r - F])
    _silu_gate(g, u, m)
    mq, sm = _quantize_vec(m, F // sd.shape[1])
    down = np.empty(C, np.float32)
    for r in numba.prange(C):
        down[r] = _dot_int8(mq, sm, wd[r], sd[r])
    return x + down  # residual


@numba.njit(cache=True, nogil=True, parallel=True)
def _lm_head_int8(x, norm, wh, sh, eps, logits):
    C = x.shape[0]
    h, rstd = np.empty((1, C), np.float32), np.empty(1, np.float32)
    _rmsnorm(x.reshape(1, C), norm, eps, h, rstd)
    xq, sx = _quantize_vec(h[0], C // sh.shape[1])
    for r in numba.prange(wh.shape[0]):
        logits[r] = _dot_int8(xq, sx, wh[r], sh[r])


def decode_int8(x, blocks, norm, head, cos, sin, kt_cache, v_cache, P, n_heads, eps):
    """One new token through every layer, int8 weights -> logits (V,).

    x (C,) float32 is its embedding, at position P; blocks the layers.BlockWeights holding
    quant.Int8Weights; norm (C,) the final norm; head the tied embedding's Int8Weight; cos/sin
    (1,D/2) the rotation of position P; kt_cache (L,KV,D,Tmax) and v_cache (L,KV,Tmax,D) hold
    P positions, and this token's keys and values are written at P.
    """
    x, eps = np.ascontiguousarray(x, np.float32), np.float32(eps)
    for i, b in enumerate(blocks):  # arrays one by one: Numba types a NamedTuple of them far more slowly
        x = _decode_layer_int8(x, b.attn_norm, *b.q, *b.k, *b.v, *b.o, b.mlp_norm, *b.gate, *b.up, *b.down,
                               cos, sin, kt_cache[i], v_cache[i], P, n_heads, eps)
    logits = np.empty(head.q.shape[0], np.float32)
    _lm_head_int8(x, norm, head.q, head.scale, eps, logits)
    return logits
