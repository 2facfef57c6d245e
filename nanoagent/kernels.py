"""The hot loops as Numba kernels, each beside the plain-NumPy twin that tests pin it to.

Kernels are compiled once per dtype and cached on disk (`cache=True`), so a second run
starts in well under a second. They take contiguous arrays, write into `out` arrays the
caller owns, and never add into shared memory from parallel iterations.
Lesson: lessons/12_numba_kernels/README.md.
"""
from __future__ import annotations

import math

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
def _attend_cache(q, kt, v, n, scale, out, probs):
    H, D = q.shape
    group = H // kt.shape[0]
    for h in range(H):
        kv = h // group  # query head h reads key/value head h // (H/KV)
        # scores: s_j = scale * q . k_j, summed over d in the outer loop so the inner loop runs
        # along the keys (stored transposed) with no dependency between iterations
        for j in range(n):
            probs[h, j] = 0.0
        for d in range(D):
            qd = q[h, d] * scale
            for j in range(n):
                probs[h, j] += qd * kt[kv, d, j]
        m = probs[h, 0]
        for j in range(n):
            m = max(m, probs[h, j])
        total = 0.0
        for j in range(n):
            e = math.exp(probs[h, j] - m)
            probs[h, j] = e
            total += e
        # out = sum_j p_j v_j
        for d in range(D):
            out[h, d] = 0.0
        for j in range(n):
            p = probs[h, j] / total
            probs[h, j] = p
            for d in range(D):
                out[h, d] += p * v[kv, j, d]


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
