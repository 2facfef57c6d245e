"""The hot loops as Numba kernels, each beside the plain-NumPy twin that tests pin it to.

Kernels are compiled once per dtype and cached on disk (`cache=True`), so a second run
starts in well under a second. They take contiguous arrays, write into `out` arrays the
caller owns, and never add into shared memory from parallel iterations.
Lesson: lessons/12_numba_kernels/README.md.
"""
from __future__ import annotations

import math
import os

import numba
import numpy as np

njit = numba.njit(cache=True, nogil=True)


# ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ---------------------------------------

@njit
def _rmsnorm(x, w, eps, y, rstd):
    N, C = x.shape
    for n in range(N):
        ss = 0.0
        for c in range(C):
            ss += x[n, c] * x[n, c]
        r = 1.0 / math.sqrt(ss / C + eps)
        rstd[n] = r
        for c in range(C):
            y[n, c] = x[n, c] * r * w[c]


def rmsnorm(x, w, eps):
    """x (N,C), w (C,) -> y (N,C), rstd (N,) the reciprocal root-mean-square of each row."""
    x = np.ascontiguousarray(x)
    y, rstd = np.empty_like(x), np.empty(x.shape[0], x.dtype)
    _rmsnorm(x, w, x.dtype.type(eps), y, rstd)
    return y, rstd


def rmsnorm_ref(x, w, eps):
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1) + eps)
    return x * rstd[:, None] * w, rstd.astype(x.dtype)


# ---- RoPE, HF's rotate-half layout: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) --------

@njit
def _rope(x, cos, sin, y):
    N, T, D = x.shape
    half = D // 2
    for n in range(N):
        for t in range(T):
            for i in range(half):
                a, b = x[n, t, i], x[n, t, i + half]
                y[n, t, i] = a * cos[t, i] - b * sin[t, i]
                y[n, t, i + half] = b * cos[t, i] + a * sin[t, i]


def rope(x, cos, sin):
    """x (N,T,D) rows at T positions, cos/sin (T,D/2) -> rotated (N,T,D)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _rope(x, cos, sin, y)
    return y


def rope_ref(x, cos, sin):
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


# ---- causal softmax: scaled scores, keys after the query masked out, rows normalised ------

@numba.njit(cache=True, nogil=True, parallel=True)
def _causal_softmax(x, scale, offset, y):
    N, T, S = x.shape
    for r in numba.prange(N * T):  # each row written by one thread only
        n, t = r // T, r % T
        seen = offset + t + 1  # query t sits at position offset + t and sees keys 0..offset+t
        m = -np.inf
        for s in range(seen):
            m = max(m, x[n, t, s] * scale)
        total = 0.0
        for s in range(seen):
            e = math.exp(x[n, t, s] * scale - m)
            y[n, t, s] = e
            total += e
        for s in range(seen):
            y[n, t, s] /= total
        for s in range(seen, S):
            y[n, t, s] = 0.0


def causal_softmax(x, scale, offset):
    """x (N,T,S) raw scores of T queries at positions offset.. over S keys -> probabilities (N,T,S).

    p[n,t,s] = softmax_s(scale * x[n,t,s]) over the keys s <= offset + t; later keys get 0.
    """
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _causal_softmax(x, x.dtype.type(scale), offset, y)
    return y


def causal_softmax_ref(x, scale, offset):
    T, S = x.shape[-2:]
    future = np.arange(S)[None, :] > offset + np.arange(T)[:, None]  # (T,S) key after query
    return softmax_ref(np.where(future, -np.inf, x * scale))


def softmax_ref(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---- the SwiGLU gate: silu(g) * u = g * sigmoid(g) * u --------------------------------

@njit
def _silu_gate(g, u, y):
    for i in range(g.size):
        y[i] = g[i] / (1.0 + math.exp(-g[i])) * u[i]


def silu_gate(g, u):
    """g, u (..., F) -> silu(g) * u (..., F)."""
    g, u = np.ascontiguousarray(g), np.ascontiguousarray(u)
    y = np.empty_like(g)
    _silu_gate(g.reshape(-1), u.reshape(-1), y.reshape(-1))
    return y


def silu_gate_ref(g, u):
    return g / (1.0 + np.exp(-g)) * u


# ---- one new query against the KV cache (decoding) ------------------------------------

@njit
def _attend_head(q, kt, v, n, scale, out, probs):
    """One query head q (D,) against n cached keys kt (D,Tmax) and values v (Tmax,D) -> out (D,), probs (n,)."""
    D = q.shape[0]
    # scores s_j = scale * q . k_j, over d in the outer loop so that the inner loop runs along
    # the keys (stored transposed) with no dependency between iterations; four rows of kt a
    # pass, so each pass reads and writes probs once for four multiply-adds
    for j in range(n):
        probs[j] = 0.0
    d = 0
    while d + 4 <= D:
        q0, q1, q2, q3 = q[d] * scale, q[d + 1] * scale, q[d + 2] * scale, q[d + 3] * scale
        k0, k1, k2, k3 = kt[d], kt[d + 1], kt[d + 2], kt[d + 3]
        for j in range(n):
            probs[j] += q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j]
        d += 4
    for d in range(d, D):
        qd = q[d] * scale
        for j in range(n):
            probs[j] += qd * kt[d, j]
    m = probs[0]
    for j in range(n):
        m = max(m, probs[j])
    total = 0.0
    for j in range(n):
        e = math.exp(probs[j] - m)
        probs[j] = e
        total += e
    # out = sum_j e_j v_j / total, four values a pass for the same reason
    for d in range(D):
        out[d] = 0.0
    j = 0
    while j + 4 <= n:
        p0, p1, p2, p3 = probs[j], probs[j + 1], probs[j + 2], probs[j + 3]
        v0, v1, v2, v3 = v[j], v[j + 1], v[j + 2], v[j + 3]
        for d in range(D):
            out[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d]
        j += 4
    for j in range(j, n):
        for d in range(D):
            out[d] += probs[j] * v[j, d]
    inv = 1.0 / total
    for d in range(D):
        out[d] *= inv
    for j in range(n):
        probs[j] *= inv


@njit
def _attend_cache(q, kt, v, n, scale, out, probs):
    H = q.shape[0]
    group = H // kt.shape[0]
    for h in range(H):  # query head h reads key/value head h // (H/KV)
        _attend_head(q[h], kt[h // group], v[h // group], n, scale, out[h], probs[h])


def attend_cache(q, kt, v, n):
    """q (H,D) at position n-1; kt (KV,D,Tmax) keys stored transposed and v (KV,Tmax,D), both
    holding n positions -> out (H,D), probs (H,n)."""
    H, D = q.shape
    out, probs = np.empty_like(q), np.empty((H, n), q.dtype)
    _attend_cache(np.ascontiguousarray(q), kt, v, n, q.dtype.type(1.0 / math.sqrt(D)), out, probs)
    return out, probs


def attend_cache_ref(q, kt, v, n):
    H, D = q.shape
    kk = np.repeat(kt[:, :, :n], H // kt.shape[0], axis=0)  # (KV,D,n) -> (H,D,n)
    vv = np.repeat(v[:, :n], H // v.shape[0], axis=0)  # (KV,n,D) -> (H,n,D)
    probs = softmax_ref(np.einsum("hd,hdn->hn", q, kk) / math.sqrt(D))
    return np.einsum("hn,hnd->hd", probs, vv), probs


# ==== backward kernels (training) ======================================================
# Each reverses one forward kernel above; derivations in lessons/11_backward/README.md.

# ---- RMSNorm backward: dx = rstd * (dy*w - xhat * mean(dy*w * xhat)), dw = sum_rows dy * xhat ----

@njit
def _rmsnorm_backward(dy, x, w, rstd, dx, dw):
    N, C = x.shape
    for c in range(C):
        dw[c] = 0.0
    for n in range(N):  # rows one after another: dw is added into in order, never in parallel
        r = rstd[n]
        dot = 0.0
        for c in range(C):
            dot += dy[n, c] * w[c] * x[n, c] * r
        dot /= C
        for c in range(C):
            xhat = x[n, c] * r
            dx[n, c] = r * (dy[n, c] * w[c] - xhat * dot)
            dw[c] += dy[n, c] * xhat


def rmsnorm_backward(dy, x, w, rstd):
    """dy, x (N,C), w (C,), rstd (N,) -> dx (N,C), dw (C,)."""
    dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
    dx, dw = np.empty_like(x), np.empty_like(w)
    _rmsnorm_backward(dy, x, w, rstd, dx, dw)
    return dx, dw


def rmsnorm_backward_ref(dy, x, w, rstd):
    xhat = x * rstd[:, None]
    dxhat = dy * w
    dx = rstd[:, None] * (dxhat - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, np.sum(dy * xhat, axis=0)


# ---- softmax backward: ds = p * (dp - sum(p * dp)) per row ------------------------------

@numba.njit(cache=True, nogil=True, parallel=True)
def _softmax_backward(p, dp, ds):
    N, S = p.shape
    for n in numba.prange(N):  # each row written by one thread only
        dot = 0.0
        for s in range(S):
            dot += p[n, s] * dp[n, s]
        for s in range(S):
            ds[n, s] = p[n, s] * (dp[n, s] - dot)


def softmax_backward(p, dp):
    """p = softmax(s), dp = dL/dp (..., S) -> ds = dL/ds (..., S). Entries with p = 0 (masked) get 0."""
    p, dp = np.ascontiguousarray(p), np.ascontiguousarray(dp)
    ds = np.empty_like(p)
    _softmax_backward(p.reshape(-1, p.shape[-1]), dp.reshape(-1, p.shape[-1]), ds.reshape(-1, p.shape[-1]))
    return ds


def softmax_backward_ref(p, dp):
    return p * (dp - np.sum(p * dp, axis=-1, keepdims=True))


# ---- SwiGLU gate backward: y = g sig(g) u -> du = dy g sig(g), dg = dy u sig(g) (1 + g (1 - sig(g))) --

@numba.njit(cache=True, nogil=True, parallel=True)
def _silu_gate_backward(dy, g, u, dg, du):
    for i in numba.prange(g.size):  # elementwise: each entry written by one thread only
        sig = 1.0 / (1.0 + math.exp(-g[i]))
        du[i] = dy[i] * g[i] * sig
        dg[i] = dy[i] * u[i] * sig * (1.0 + g[i] * (1.0 - sig))


def silu_gate_backward(dy, g, u):
    """dy, g, u (..., F) -> dg, du (..., F)."""
    dy, g, u = np.ascontiguousarray(dy), np.ascontiguousarray(g), np.ascontiguousarray(u)
    dg, du = np.empty_like(g), np.empty_like(u)
    _silu_gate_backward(dy.reshape(-1), g.reshape(-1), u.reshape(-1), dg.reshape(-1), du.reshape(-1))
    return dg, du


def silu_gate_backward_ref(dy, g, u):
    sig = 1.0 / (1.0 + np.exp(-g))
    return dy * u * sig * (1.0 + g * (1.0 - sig)), dy * g * sig


# ---- embedding backward: dwte[ids[n]] += dx[n] (a token seen twice gets both rows) ---------

@njit
def _embedding_backward(ids, dx, dwte):
    N, C = dx.shape
    for n in range(N):  # in order, never in parallel: two rows may share a token
        i = ids[n]
        for c in range(C):
            dwte[i, c] += dx[n, c]


def embedding_backward(ids, dx, dwte):
    """ids (N,) int, dx (N,C) -> adds each row of dx into row ids[n] of dwte (V,C), in place."""
    _embedding_backward(np.ascontiguousarray(ids).astype(np.int64), np.ascontiguousarray(dx), dwte)


def embedding_backward_ref(ids, dx, dwte):
    np.add.at(dwte, ids, dx)


# ==== optimizer kernels =================================================================

# ---- AdamW, one parameter in place (PyTorch's update order, so the fixture matches) -------

@numba.njit(cache=True, nogil=True, parallel=True)
def _adamw(p, g, m, v, lr, beta1, beta2, eps, wd, bc1, bc2, gscale):
    one = p.dtype.type(1.0)
    step = lr / bc1
    sqrt_bc2 = np.sqrt(bc2)
    for i in numba.prange(p.size):  # elementwise: each entry written by one thread only
        gi = g[i] * gscale
        p[i] *= one - lr * wd  # decoupled weight decay, applied to the weight itself
        m[i] = beta1 * m[i] + (one - beta1) * gi
        v[i] = beta2 * v[i] + (one - beta2) * gi * gi
        p[i] -= step * m[i] / (np.sqrt(v[i]) / sqrt_bc2 + eps)


def adamw(p, g, m, v, lr, beta1, beta2, eps, wd, step, gscale=1.0):
    """p, g, m, v (...) updated in place: m, v the moments; `step` counts from 1; g is used times gscale."""
    assert p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous
    f = p.dtype.type
    _adamw(p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1), m.reshape(-1), v.reshape(-1),
           f(lr), f(beta1), f(beta2), f(eps), f(wd), f(1.0 - beta1 ** step), f(1.0 - beta2 ** step), f(gscale))


def adamw_ref(p, g, m, v, lr, beta1, beta2, eps, wd, step, gscale=1.0):
    g = g * gscale
    p *= 1.0 - lr * wd
    m[...] = beta1 * m + (1.0 - beta1) * g
    v[...] = beta2 * v + (1.0 - beta2) * g * g
    p -= lr / (1.0 - beta1 ** step) * m / (np.sqrt(v) / math.sqrt(1.0 - beta2 ** step) + eps)


# ---- sum of squares, accumulated in float64 (for the global gradient norm) -----------------

@numba.njit(cache=True, nogil=True, parallel=True)
def _sum_squares(x, partial):
    K = partial.shape[0]  # K fixed slices, each summed by one thread with 4 running sums
    size = (x.size + K - 1) // K
    for k in numba.prange(K):
        a0 = a1 = a2 = a3 = 0.0
        end = min(x.size, (k + 1) * size)
        i = k * size
        while i + 4 <= end:
            a0 += np.float64(x[i]) * np.float64(x[i])
            a1 += np.float64(x[i + 1]) * np.float64(x[i + 1])
            a2 += np.float64(x[i + 2]) * np.float64(x[i + 2])
            a3 += np.float64(x[i + 3]) * np.float64(x[i + 3])
            i += 4
        while i < end:
            a0 += np.float64(x[i]) * np.float64(x[i])
            i += 1
        partial[k] = (a0 + a1) + (a2 + a3)


def sum_squares(x):
    """x (...) -> sum(x^2) as a Python float, accumulated in float64 (in a fixed order: deterministic)."""
    partial = np.zeros(16)
    _sum_squares(np.ascontiguousarray(x).reshape(-1), partial)
    return float(partial.sum())


def sum_squares_ref(x):
    return float(np.sum(np.square(x, dtype=np.float64)))


# ==== int8 weights (quant.py calls these) ================================================
# A weight row is int8 with one float32 scale per group of gs inputs (gs = Cin: one scale per
# output channel); the activations are quantized on the fly to int16 over the same groups.
# Each group's dot product is summed exactly in int32 (|q| <= 127 and |xq| <= limit with
# gs * 127 * limit < 2^31: no overflow), then scaled and summed in float32. Integer sums may be
# reordered freely, so LLVM vectorizes them (vpmaddwd on x86) without fastmath.
# Lesson: lessons/14_int8/README.md.

# Numba's OpenMP threads spin only briefly between parallel loops, then sleep. An int8 decoding
# step runs 30 compiled calls of five parallel loops each; measured on two cores (tokens/s,
# quiet / busy machine): spin 1000 rounds 58 / 22, spin 10000 rounds 64 / 11; libgomp's
# default long spin collapses on a busy machine (a spinning worker takes the core the main
# thread needs: 6 tokens/s with the whole step in one call). Set either variable to choose.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # read when the first parallel loop starts

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
# made a 512-token int8 prefill 2.5x slower on two cores (lessons/14_int8/README.md).

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
# One call for the whole step decoded 69 tokens/s against 58, but needs the 30 layers as one
# Numba argument: a tuple, whose type (so the compiled code) changes with the number of layers,
# or a numba.typed.List, whose building compiles code costing about 60 MB, which took
# `generate --int8` past 400 MB.

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
    group = H // KV  # query head h reads key/value head h // group
    scale = np.float32(1.0 / math.sqrt(D))
    h, rstd = np.empty((1, C), np.float32), np.empty(1, np.float32)
    att, probs = np.empty((H, D), np.float32), np.empty((H, P + 1), np.float32)
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
    qr, kr = np.empty_like(q), np.empty_like(k)
    _rope(q, cos, sin, qr)
    _rope(k, cos, sin, kr)
    for j in range(KV):  # append position P to the cache
        for d in range(D):
            kt[j, d, P] = kr[j, 0, d]
            vc[j, P, d] = v[j, d]
    for hh in numba.prange(H):
        _attend_head(qr[hh, 0], kt[hh // group], vc[hh // group], P + 1, scale, att[hh], probs[hh])
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
    for i, b in enumerate(blocks):  # arrays one by one: Numba types a NamedTuple of them 100x slower
        x = _decode_layer_int8(x, b.attn_norm, *b.q, *b.k, *b.v, *b.o, b.mlp_norm, *b.gate, *b.up, *b.down,
                               cos, sin, kt_cache[i], v_cache[i], P, n_heads, eps)
    logits = np.empty(head.q.shape[0], np.float32)
    _lm_head_int8(x, norm, head.q, head.scale, eps, logits)
    return logits
