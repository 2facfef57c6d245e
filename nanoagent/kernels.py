"""The hot loops as Numba kernels, each beside the plain-NumPy twin that tests pin it to.

Kernels are compiled once per dtype and cached on disk (`cache=True`), so a second run
starts in well under a second. They take contiguous arrays, write into `out` arrays the
caller owns, and never add into shared memory from parallel iterations.
Lesson: lessons/12_numba_kernels/README.md.
"""
from __future__ import annotations

import math
import os
import platform

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from numba.typed import List

from . import threads

threads.spin_briefly()  # every parallel loop is compiled here or in kernels_int8: set before any runs
njit = numba.njit(cache=True, nogil=True)


# ---- e^x, in a form loops can vectorize ----------------------------------------------------
# math.exp compiles to a call into the C library for each element, so a loop of it (a softmax
# row, the SwiGLU gate) runs one element at a time. `exp` in these kernels is, for float32,
# e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln(2)/2: e^r by its Taylor series to r^7,
# 2^n read from a table. Only multiplies, adds, a floor and a table read (a gather), which
# LLVM spreads over the vector lanes: 3-5x faster than math.exp over a row, within 1.2e-7
# relative of e^x (tests/test_kernels.py). Float64 keeps math.exp, exact for gradient checks.

_POW2 = np.ldexp(np.float32(1), np.arange(-126, 128)).astype(np.float32)  # 2^n for n in [-126, 127]


@njit
def _exp32(x):
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))  # e^x stays a normal float32
    n = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))  # round(x / ln 2)
    r = x - n * np.float32(0.693145751953125) - n * np.float32(1.428606765330187e-06)  # ln 2 in two parts
    p = np.float32(1 / 5040)
    for c in (1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1.0, 1.0):  # Horner: 1 + r (1 + r (1/2 + r (...)))
        p = p * r + np.float32(c)
    return p * _POW2[int(n) + 126]


def exp(x):
    """e^x inside the kernels: _exp32 for float32, math.exp otherwise (chosen when Numba compiles)."""
    return math.exp(x)


@overload(exp)
def _exp_for(x):
    if x == numba.float32:
        return lambda x: _exp32(x)
    return lambda x: math.exp(x)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum(a):
    """sum(a) in vector lanes: reassoc lets the adds be regrouped (tests bound the change)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i]
    return s


@njit
def _max(a):
    """max(a) over four running maxima, so that no comparison waits for the one before."""
    m0 = m1 = m2 = m3 = a[0]
    i = 0
    while i + 4 <= a.shape[0]:
        m0, m1, m2, m3 = max(m0, a[i]), max(m1, a[i + 1]), max(m2, a[i + 2]), max(m3, a[i + 3])
        i += 4
    for i in range(i, a.shape[0]):
        m0 = max(m0, a[i])
    return max(max(m0, m1), max(m2, m3))


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
        row, out = x[n, t, :seen], y[n, t]
        m = _max(row) * scale  # scale > 0: the largest scaled score
        for s in range(seen):
            out[s] = exp(row[s] * scale - m)
        inv = 1.0 / _sum(out[:seen])
        for s in range(seen):
            out[s] *= inv
        for s in range(seen, S):
            out[s] = 0.0


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


# ---- a few rows times a weight: y = x @ w.T for a decoding step ------------------------
# One token (or a batch of a few) reads every weight once and does little arithmetic with it,
# so the product is bound by streaming the weight from memory. BLAS is tuned for the opposite
# case: for one row it runs about 1.5x below this loop, and for 8 rows it first packs the
# weight into blocks, a second pass over memory. Here each thread takes four weight rows at a
# time and multiplies them by four input rows while they sit in L1: 16 dot products for one
# read of the weight.
#
# fastmath={"reassoc", "contract"} (and nothing more: no nnan/ninf, no approximate math) lets
# LLVM split each dot product over the vector lanes and fuse multiply-adds. Without it a sum
# must run in source order, one element after the other, and the loop stays scalar (3-4x
# slower). The sums come out in another order: within 2e-6 relative of x @ w.T in float32,
# pinned by tests/test_kernels.py. Lesson: lessons/08_kv_cache_and_sampling/README.md.

@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(a, b):
    s = a.dtype.type(0)
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot2(a, b, x):
    """-> a . x, b . x in one pass over x: two weight rows streamed side by side keep more reads from
    memory in flight than one (one thread streams a layer's rows about 1.5x faster this way)."""
    sa, sb = a.dtype.type(0), a.dtype.type(0)
    for k in range(x.shape[0]):
        sa += a[k] * x[k]
        sb += b[k] * x[k]
    return sa, sb


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot_4x4(x, w, m, n, out):
    """out[m:m+4, n:n+4] = x[m:m+4] @ w[n:n+4].T, each weight element loaded once for four rows."""
    z = x.dtype.type(0)
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = z
    for k in range(x.shape[1]):
        x0, x1, x2, x3 = x[m, k], x[m + 1, k], x[m + 2, k], x[m + 3, k]
        w0, w1, w2, w3 = w[n, k], w[n + 1, k], w[n + 2, k], w[n + 3, k]
        a0 += w0 * x0; a1 += w1 * x0; a2 += w2 * x0; a3 += w3 * x0  # noqa: E702 (one row of the tile a line)
        b0 += w0 * x1; b1 += w1 * x1; b2 += w2 * x1; b3 += w3 * x1  # noqa: E702
        c0 += w0 * x2; c1 += w1 * x2; c2 += w2 * x2; c3 += w3 * x2  # noqa: E702
        d0 += w0 * x3; d1 += w1 * x3; d2 += w2 * x3; d3 += w3 * x3  # noqa: E702
    out[m, n], out[m, n + 1], out[m, n + 2], out[m, n + 3] = a0, a1, a2, a3
    out[m + 1, n], out[m + 1, n + 1], out[m + 1, n + 2], out[m + 1, n + 3] = b0, b1, b2, b3
    out[m + 2, n], out[m + 2, n + 1], out[m + 2, n + 2], out[m + 2, n + 3] = c0, c1, c2, c3
    out[m + 3, n], out[m + 3, n + 1], out[m + 3, n + 2], out[m + 3, n + 3] = d0, d1, d2, d3


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot_2x4(x, w, r, s, out):
    """out[0:4, r], out[0:4, s] = x[0:4] @ w[r].T, x[0:4] @ w[s].T: two weight rows far apart (two long
    streams, as _dot2 reads them for one row) each loaded once for four input rows."""
    z = x.dtype.type(0)
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = z
    for k in range(x.shape[1]):
        u, v = w[r, k], w[s, k]
        x0, x1, x2, x3 = x[0, k], x[1, k], x[2, k], x[3, k]
        a0 += u * x0; a1 += u * x1; a2 += u * x2; a3 += u * x3  # noqa: E702 (one weight row a line)
        b0 += v * x0; b1 += v * x1; b2 += v * x2; b3 += v * x3  # noqa: E702
    out[0, r], out[1, r], out[2, r], out[3, r] = a0, a1, a2, a3
    out[0, s], out[1, s], out[2, s], out[3, s] = b0, b1, b2, b3


# ---- asking for memory before it is read -------------------------------------------------
# With four or more rows a weight block costs more arithmetic than reading, and the memory
# waits while the core computes: the hardware prefetcher follows reads, and during the tiles
# of a block there are none. So before each tile of a block the kernel asks for a share of a
# block further on (llvm.prefetch: a hint, on x86 prefetcht1 into L2, on ARM prfm; it changes
# no result and is dropped where the CPU has no such instruction). Measured on one thread with
# weights out of cache, a (1536, 576) product: 16 rows 563 -> 395 us (342 us with the weight in
# cache), 8 rows 408 -> 295 us. One row streams its weights, which the hardware follows well:
# hints there cost time, so 1-3 rows go without. Lesson: lessons/08_kv_cache_and_sampling.

@intrinsic
def _prefetch(typingctx, a, i, j):
    """Bring the cache line holding a[i, j] into L2 ahead of its use (no effect on any value)."""
    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], array, [args[1], args[2]], wraparound=False)
        byte_ptr, i32 = builder.bitcast(ptr, ir.IntType(8).as_pointer()), ir.IntType(32)
        hint = cgutils.get_or_insert_function(  # the i8* name; LLVM with opaque pointers renames it on reading
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr.type] + [i32] * 3), "llvm.prefetch.p0i8")
        builder.call(hint, [byte_ptr, i32(0), i32(2), i32(1)])  # a read, kept in L2 (locality 2), data cache
        return context.get_dummy_value()
    return types.void(a, i, j), codegen


@njit
def _prefetch_block(w, r0, r1, k0, k1):
    """Ask for w[r0:r1, k0:k1] (clipped to w), a request per 64-byte line (16 float32)."""
    for r in range(r0, min(r1, w.shape[0])):
        for k in range(k0, min(k1, w.shape[1]), 64 // w.itemsize):
            _prefetch(w, r, k)


AHEAD = 8  # weight rows: the block two blocks of four on is asked for while this one is computed


@numba.njit(cache=True, nogil=True, parallel=True)
def _matmul_rows(x, w, out):
    M, K, N = x.shape[0], x.shape[1], w.shape[0]
    tiles = M // 4  # rows 0..4*tiles-1 go four at a time, the rest (and steps of 1-3 rows) one at a time
    if tiles == 1:  # 4-7 rows, one tile: as much arithmetic as reading, so read as the one-row loop does
        half = N // 2  # weight rows r and r + N/2 side by side: two long streams the hardware follows
        for r in numba.prange(half):
            _dot_2x4(x, w, r, r + half, out)
            for m in range(4, M):
                out[m, r], out[m, r + half] = _dot2(w[r], w[r + half], x[m])
        if N % 2:
            for m in range(M):
                out[m, N - 1] = _dot(w[N - 1], x[m])
    else:
        for b in numba.prange((N + 3) // 4):  # four weight rows per iteration, each output column written once
            n0, n1 = 4 * b, min(4 * b + 4, N)
            if n1 - n0 == 4:
                for t in range(tiles):  # a share of the block AHEAD rows on before each tile
                    _prefetch_block(w, n0 + AHEAD, n0 + AHEAD + 4, K * t // tiles, K * (t + 1) // tiles)
                    _dot_4x4(x, w, 4 * t, n0, out)
            for n in range(n0, n1):
                for m in range(4 * tiles if n1 - n0 == 4 else 0, M):
                    out[m, n] = _dot(w[n], x[m])


def matmul_rows(x, w):
    """x (M,K), a few rows, and w (N,K) -> x @ w.T (M,N), reading w once."""
    dtype = np.result_type(x, w)
    out = np.empty((x.shape[0], w.shape[0]), dtype)
    _matmul_rows(np.ascontiguousarray(x, dtype), np.ascontiguousarray(w, dtype), out)
    return out


def matmul_rows_ref(x, w):
    return x @ w.T


# ---- the SwiGLU gate: silu(g) * u = g * sigmoid(g) * u --------------------------------

@njit
def _silu_gate(g, u, y):
    for i in range(g.size):  # e^-g first, a loop of its own: so it runs in vector lanes
        y[i] = exp(-g[i])
    for i in range(g.size):
        y[i] = g[i] / (1 + y[i]) * u[i]


def silu_gate(g, u):
    """g, u (..., F) -> silu(g) * u (..., F)."""
    g, u = np.ascontiguousarray(g), np.ascontiguousarray(u)
    y = np.empty_like(g)
    _silu_gate(g.reshape(-1), u.reshape(-1), y.reshape(-1))
    return y


def silu_gate_ref(g, u):
    return g / (1.0 + np.exp(-g)) * u


# ---- float16 KV caches ---------------------------------------------------------------------
# After a long prompt a decoding step spends its time reading the cache: at 1000 positions the
# keys and values are 46 MB a token in float32, against the int8 weights' 145 MB. So an int8
# model's cache holds float16 where the CPU converts half floats in hardware (x86 with F16C, 64-bit
# ARM): half the bytes, rounded to 11 significant bits, far finer than the int8 weights. Numba has
# no float16 type, so kernels take the cache's bits (uint16, `cache_bits`); `widen` turns an
# element into float32 (LLVM's fpext from half: on x86 one vcvtph2ps for eight of them) and
# `narrow` rounds a float32 to the nearest half, ties to even, as NumPy's astype does. A float
# cache goes through both unchanged, so one source compiles for either kind of cache.

def cpu_choice(variable: str, on: str, off: str, x86_feature: str) -> bool:
    """Whether to take a path that every 64-bit ARM CPU can run and an x86 one with `x86_feature`;
    the environment variable `variable` set to `on` or `off` overrides."""
    forced = os.environ.get(variable, "").strip().lower()
    if forced in (on, off):
        return forced == on
    if platform.machine().lower() in ("arm64", "aarch64"):
        return True
    return bool(llvmlite.binding.get_host_cpu_features().get(x86_feature, False))


def half_cache() -> bool:
    """Whether int8 models keep their KV cache in float16: where the CPU converts half floats in
    hardware (x86 with F16C, 64-bit ARM). NANOAGENT_KV_CACHE=float16 or =float32 overrides."""
    return cpu_choice("NANOAGENT_KV_CACHE", "float16", "float32", "f16c")


HALF_CACHE = half_cache()


def cache_bits(a: np.ndarray) -> np.ndarray:
    """A float16 cache as its bits (a uint16 view, what the kernels take); a float cache as it is."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


@intrinsic
def _half_to_float(typingctx, bits):
    """float16 bits (uint16) -> float32."""
    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def _float_to_half(typingctx, x):
    """float32 -> the bits (uint16) of the nearest float16."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(x), codegen


def widen(x):
    """A cache element as a float: float16 bits -> float32, a float as it is (chosen when Numba compiles)."""
    return x


@overload(widen)
def _widen_for(x):
    if x == types.uint16:
        return lambda x: _half_to_float(x)
    return lambda x: x


def narrow(x, cache):
    """x as an element of `cache`: the bits of its nearest float16 for a uint16 cache, else x."""
    return x


@overload(narrow)
def _narrow_for(x, cache):
    if cache.dtype == types.uint16:
        return lambda x, cache: _float_to_half(np.float32(x))
    return lambda x, cache: x


# ---- one new query against the KV cache (decoding) ------------------------------------

@njit
def _attend_head(q, kt, v, n, scale, out, probs):
    """One query head q (D,) against n cached keys kt (D,Tmax) and values v (Tmax,D) -> out (D,), probs (n,);
    the cache float, or float16 bits (widen)."""
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
            probs[j] += q0 * widen(k0[j]) + q1 * widen(k1[j]) + q2 * widen(k2[j]) + q3 * widen(k3[j])
        d += 4
    for d in range(d, D):
        qd = q[d] * scale
        for j in range(n):
            probs[j] += qd * widen(kt[d, j])
    m = _max(probs[:n])
    for j in range(n):
        probs[j] = exp(probs[j] - m)
    total = _sum(probs[:n])
    # out = sum_j e_j v_j / total, four values a pass for the same reason
    for d in range(D):
        out[d] = 0.0
    j = 0
    while j + 4 <= n:
        p0, p1, p2, p3 = probs[j], probs[j + 1], probs[j + 2], probs[j + 3]
        v0, v1, v2, v3 = v[j], v[j + 1], v[j + 2], v[j + 3]
        for d in range(D):
            out[d] += p0 * widen(v0[d]) + p1 * widen(v1[d]) + p2 * widen(v2[d]) + p3 * widen(v3[d])
        j += 4
    for j in range(j, n):
        for d in range(D):
            out[d] += probs[j] * widen(v[j, d])
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
    _attend_cache(np.ascontiguousarray(q), cache_bits(kt), cache_bits(v), n, q.dtype.type(1.0 / math.sqrt(D)), out,
                  probs)
    return out, probs


def attend_cache_ref(q, kt, v, n):
    H, D = q.shape
    kk = np.repeat(kt[:, :, :n], H // kt.shape[0], axis=0)  # (KV,D,n) -> (H,D,n)
    vv = np.repeat(v[:, :n], H // v.shape[0], axis=0)  # (KV,n,D) -> (H,n,D)
    probs = softmax_ref(np.einsum("hd,hdn->hn", q, kk) / math.sqrt(D))
    return np.einsum("hn,hnd->hd", probs, vv), probs


# ---- one new query per sequence of a batch, each against its own cache row ----------------

@numba.njit(cache=True, nogil=True, parallel=True)
def _attend_rows(q, kt, v, rows, n, scale, out):
    A, H, KV = q.shape[0], q.shape[1], kt.shape[1]
    group = H // KV
    scratch = np.empty((A * KV, n.max()), q.dtype)  # one allocation, not one per pair
    for t in numba.prange(A * KV):  # each (sequence, key/value head) pair: its query heads, by one thread
        a, j = t // KV, t % KV
        if t + 1 < A * KV:  # the next pair's keys and values are asked for while this pair is computed
            a1, j1 = (t + 1) // KV, (t + 1) % KV
            _prefetch_block(kt[rows[a1], j1], 0, kt.shape[2], 0, n[a1])
            _prefetch_block(v[rows[a1], j1], 0, n[a1], 0, v.shape[3])
        for h in range(j * group, (j + 1) * group):
            _attend_head(q[a, h], kt[rows[a], j], v[rows[a], j], n[a], scale, out[a, h], scratch[t])


def attend_rows(q, kt, v, rows, n):
    """q (A,H,D), one query per sequence; kt (S,KV,D,Tmax) and v (S,KV,Tmax,D), a cache row per
    slot; sequence a reads row rows[a], holding n[a] positions -> out (A,H,D)."""
    A, H, D = q.shape
    out = np.empty_like(q)
    _attend_rows(np.ascontiguousarray(q), cache_bits(kt), cache_bits(v), np.asarray(rows, np.int64),
                 np.asarray(n, np.int64), q.dtype.type(1.0 / math.sqrt(D)), out)
    return out


def attend_rows_ref(q, kt, v, rows, n):
    return np.stack([attend_cache_ref(q[a], kt[r], v[r], m)[0] for a, (r, m) in enumerate(zip(rows, n))])


# ---- attention for one new token, inside a compiled decoding step ------------------------

@numba.njit(cache=True, nogil=True, parallel=True)
def _attend_new(q, k, v, cos, sin, kt, vc, P):
    """The token at position P: q (H,1,D), k (KV,1,D), v (KV,D) -> att (H,D). RoPE turns q and k,
    k and v are written at position P of the cache kt (KV,D,Tmax), vc (KV,Tmax,D), and each query
    head attends to the P+1 cached positions of its KV head."""
    H, D = q.shape[0], q.shape[2]
    KV = k.shape[0]
    group = H // KV  # query head h reads key/value head h // group
    qr, kr = np.empty_like(q), np.empty_like(k)
    _rope(q, cos, sin, qr)
    _rope(k, cos, sin, kr)
    for j in range(KV):  # append position P to the cache
        for d in range(D):
            kt[j, d, P] = narrow(kr[j, 0, d], kt)
            vc[j, P, d] = narrow(v[j, d], vc)
    att, probs = np.empty((H, D), q.dtype), np.empty((H, P + 1), q.dtype)
    scale = q.dtype.type(1.0 / math.sqrt(D))
    for hh in numba.prange(H):
        _attend_head(qr[hh, 0], kt[hh // group], vc[hh // group], P + 1, scale, att[hh], probs[hh])
    return att


# ==== one decoding step with float weights, one compiled call =============================
# The float twin of kernels_int8's decoding step (which says why one call: a token runs about
# 210 small parallel loops, and called one by one from Python each pays the interpreter and
# wakes the worker threads). The math is the layered forward's; each thread
# reads two weight rows side by side (_dot2): q rows r and r + nq/2 share a pass, and so do
# k row r and v row r, gate row r and up row r, and the two halves of o, down and the LM head.
# A test pins it to the layered forward.

@numba.njit(cache=True, nogil=True, parallel=True)
def _decode_layer(x, attn_norm, wq, wk, wv, wo, mlp_norm, wg, wu, wd, cos, sin, kt, vc, P, n_heads, eps):
    C, dt = x.shape[0], x.dtype
    KV, D = kt.shape[0], kt.shape[1]
    H = n_heads
    h, rstd = np.empty((1, C), dt), np.empty(1, dt)
    # attention: the rows of q, k and v in one parallel loop, from the normed input
    _rmsnorm(x.reshape(1, C), attn_norm, eps, h, rstd)
    q, k, v = np.empty((H, 1, D), dt), np.empty((KV, 1, D), dt), np.empty((KV, D), dt)
    qf, kf, vf = q.reshape(H * D), k.reshape(KV * D), v.reshape(KV * D)
    nq, nk = H * D, KV * D
    half = nq // 2  # two rows a pass: q rows r and r + nq/2, or k row r with v row r
    for r in numba.prange(half + nk):  # each row written by one thread only
        if r < half:
            qf[r], qf[r + half] = _dot2(wq[r], wq[r + half], h[0])
        else:
            kf[r - half], vf[r - half] = _dot2(wk[r - half], wv[r - half], h[0])
    if nq % 2:
        qf[nq - 1] = _dot(wq[nq - 1], h[0])
    att = _attend_new(q, k, v, cos, sin, kt, vc, P)
    o = _matvec(wo, att.reshape(H * D))
    x = x + o  # residual
    # MLP: the rows of gate and up in one parallel loop, then down
    _rmsnorm(x.reshape(1, C), mlp_norm, eps, h, rstd)
    F = wg.shape[0]
    g, u, m = np.empty(F, dt), np.empty(F, dt), np.empty(F, dt)
    for r in numba.prange(F):  # gate row r with up row r
        g[r], u[r] = _dot2(wg[r], wu[r], h[0])
    _silu_gate(g, u, m)
    return x + _matvec(wd, m)  # residual


@numba.njit(cache=True, nogil=True, parallel=True)
def _matvec(w, x):
    """w (N,K) @ x (K,) -> (N,), rows r and r + N/2 a pass."""
    N = w.shape[0]
    half = N // 2
    y = np.empty(N, x.dtype)
    for r in numba.prange(half):
        y[r], y[r + half] = _dot2(w[r], w[r + half], x)
    if N % 2:
        y[N - 1] = _dot(w[N - 1], x)
    return y


@njit
def _lm_head(x, norm, wte, eps):
    C = x.shape[0]
    h, rstd = np.empty((1, C), x.dtype), np.empty(1, x.dtype)
    _rmsnorm(x.reshape(1, C), norm, eps, h, rstd)
    return _matvec(wte, h[0])


def stack_layers(blocks) -> tuple:
    """The layers' weights (layers.BlockWeights) as one Numba typed list per kind (attn_norm, q,
    ..., down), built once: a decoding step then runs every layer in one compiled call, where a
    Python loop calling a kernel per layer pays Numba's dispatch of some twenty arguments on each
    (float32: 32.1 -> 30.7 ms a token). The lists are built by a cached kernel: typed.List's own
    Python constructor compiles its methods anew in every process (about 1.3 s)."""
    return tuple(_typed_list(kind) for kind in zip(*blocks))


@njit
def _typed_list(arrays):
    """A tuple of arrays of one type -> a numba.typed.List of them (the arrays, not copies)."""
    out = List()
    for a in arrays:
        out.append(a)
    return out


def decode_float(x, stack, norm, wte, cos, sin, kt_cache, v_cache, P, n_heads, eps):
    """One new token through every layer, float weights -> logits (V,).

    x (C,) is its embedding, at position P; stack the layers' weights (stack_layers); norm (C,)
    the final norm; wte (V,C) the tied embedding; cos/sin (1,D/2) the rotation of position P;
    kt_cache (L,KV,D,Tmax) and v_cache (L,KV,Tmax,D) hold P positions, and this token's keys and
    values are written at P.
    """
    return _decode_float(np.ascontiguousarray(x), *stack, norm, wte, cos, sin, kt_cache, v_cache, P, n_heads,
                         x.dtype.type(eps))


@njit
def _decode_float(x, attn_norm, wq, wk, wv, wo, mlp_norm, wg, wu, wd, norm, wte, cos, sin, kt_cache, v_cache, P,
                  n_heads, eps):
    for i in range(len(wq)):
        x = _decode_layer(x, attn_norm[i], wq[i], wk[i], wv[i], wo[i], mlp_norm[i], wg[i], wu[i], wd[i], cos, sin,
                          kt_cache[i], v_cache[i], P, n_heads, eps)
    return _lm_head(x, norm, wte, eps)


# ---- one decoding step for a batch of sequences, one compiled call ---------------------
# The same plan for A sequences decoded together (batch.BatchDecoder): token a belongs to
# cache row rows[a] at position P[a]. The products go through matmul_rows (each weight read
# once for all A rows), attention reads each sequence's own row. Pinned to the layered
# Model.decode_rows by a test.

@njit
def _rope_rows(x, cos, sin):
    """x (A,N,D), row a at its own position (cos[a], sin[a]) -> a new array: _rope on the view
    (N,A,D), whose position axis is the rows."""
    y = np.empty_like(x)
    _rope(x.transpose((1, 0, 2)), cos, sin, y.transpose((1, 0, 2)))
    return y


@numba.njit(cache=True, nogil=True, parallel=True)
def _decode_layer_rows(x, attn_norm, wq, wk, wv, wo, mlp_norm, wg, wu, wd, cos, sin, kt, vc, rows, P, n_heads,
                       eps):
    A, C = x.shape
    dt = x.dtype
    KV, D = kt.shape[1], kt.shape[2]
    H = n_heads
    h, rstd = np.empty((A, C), dt), np.empty(A, dt)
    _rmsnorm(x, attn_norm, eps, h, rstd)
    q, k, v = np.empty((A, H * D), dt), np.empty((A, KV * D), dt), np.empty((A, KV * D), dt)
    _matmul_rows(h, wq, q)
    _matmul_rows(h, wk, k)
    _matmul_rows(h, wv, v)
    qr, kr = _rope_rows(q.reshape(A, H, D), cos, sin), _rope_rows(k.reshape(A, KV, D), cos, sin)
    v3 = v.reshape(A, KV, D)
    for a in numba.prange(A):  # append each sequence's new position to its own cache row (one thread a row)
        for j in range(KV):
            for d in range(D):
                kt[rows[a], j, d, P[a]] = kr[a, j, d]
                vc[rows[a], j, P[a], d] = v3[a, j, d]
    att = np.empty((A, H, D), dt)
    _attend_rows(qr, kt, vc, rows, P + 1, dt.type(1.0 / math.sqrt(D)), att)  # each sequence its own cache row
    o = np.empty((A, C), dt)
    _matmul_rows(att.reshape(A, H * D), wo, o)
    x = x + o  # residual
    _rmsnorm(x, mlp_norm, eps, h, rstd)
    F = wg.shape[0]
    g, u, m = np.empty((A, F), dt), np.empty((A, F), dt), np.empty((A, F), dt)
    _matmul_rows(h, wg, g)
    _matmul_rows(h, wu, u)
    for a in numba.prange(A):  # each sequence's row written by one thread only
        _silu_gate(g[a], u[a], m[a])
    down = np.empty((A, C), dt)
    _matmul_rows(m, wd, down)
    return x + down  # residual


def decode_rows(x, stack, norm, wte, cos, sin, kt_cache, v_cache, rows, P, n_heads, eps):
    """One new token for each of A sequences through every layer, float weights -> logits (A,V).

    x (A,C) their embeddings; stack the layers' weights (stack_layers); token a belongs to cache
    row rows[a] at position P[a], rotated by cos[a], sin[a] (A,D/2); kt_cache (L,S,KV,D,Tmax) and
    v_cache (L,S,KV,Tmax,D) hold a row per slot, and each token's keys and values are written at
    its row's position P[a].
    """
    return _decode_rows(np.ascontiguousarray(x), *stack, norm, wte, np.ascontiguousarray(cos),
                        np.ascontiguousarray(sin), kt_cache, v_cache, np.asarray(rows, np.int64),
                        np.asarray(P, np.int64), n_heads, x.dtype.type(eps))


@njit
def _decode_rows(x, attn_norm, wq, wk, wv, wo, mlp_norm, wg, wu, wd, norm, wte, cos, sin, kt_cache, v_cache, rows,
                 P, n_heads, eps):
    for i in range(len(wq)):
        x = _decode_layer_rows(x, attn_norm[i], wq[i], wk[i], wv[i], wo[i], mlp_norm[i], wg[i], wu[i], wd[i], cos,
                               sin, kt_cache[i], v_cache[i], rows, P, n_heads, eps)
    A, C = x.shape
    h, rstd = np.empty((A, C), x.dtype), np.empty(A, x.dtype)
    _rmsnorm(x, norm, eps, h, rstd)
    logits = np.empty((A, wte.shape[0]), x.dtype)
    _matmul_rows(h, wte, logits)
    return logits


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
        dg[i] = exp(-g[i])  # e^-g first, a loop of its own: so it runs in vector lanes
    for i in numba.prange(g.size):
        sig = 1 / (1 + dg[i])
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
