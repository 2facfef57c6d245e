"""The int8 kernels: quantizing rows, int8 x int16 matrix products, and one decoding step per layer.

A weight row is int8 with one float32 scale per group of gs inputs (gs = Cin: one scale per
output channel); the activations are quantized on the fly to int16 over the same groups.
Each group's dot product is summed exactly in int32 (|q| <= 127 and |xq| <= limit with
gs * 127 * limit < 2^31: no overflow), then scaled and summed in float32. Integer sums may be
reordered freely, so LLVM vectorizes them without fastmath. Where the CPU allows, a vector
path written in LLVM IR (_dot4_int8) keeps the groups' sums in vector lanes instead, four rows
at a time; the portable kernel stays, and both are pinned to the same twin. Each kernel sits
beside the plain-NumPy twin the tests pin it to. Lesson: lessons/14_int8/README.md.
"""
from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from . import kernels
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


# ---- four rows at once with the lanes kept: a vector path, chosen by CPU feature --------------
# _dot_int8 compiles to vector products too, but each group's 32 products are then summed across
# the vector's lanes (a horizontal sum: a dozen shuffles and adds) before its scale is applied,
# and that costs as much as the products themselves. Here the loop is written in LLVM's vector
# IR (through Numba's @intrinsic), as a Q8_0 kernel is written in C intrinsics: a group's 32
# weights and 32 inputs are widened and multiplied, adjacent products added in pairs into 16
# int32 lanes (x86: one vpmaddwd, or vpdpwssd with AVX-512 VNNI; ARM: smull and sadalp), and
# the lanes turned to float and multiplied by the group's scale into 16 float accumulators kept
# across the row (llvm.fmuladd: contracted, as fastmath "contract" would allow); the lanes are
# summed once, at the end of the row. Each lane's integer sum is exact; only the float sum runs
# in another order (reassociated), so the result is the portable kernel's within float32
# rounding (the tests pin both to one twin).
# It runs four rows at once, a quarter of the matrix apart: four streams through memory that
# the hardware prefetcher follows side by side. One thread, a (1536, 576) weight from memory:
# 6.3 GB/s portable, 13.6 GB/s one row at a time this way, 19.3 GB/s four rows a quarter apart
# (two rows half apart 16.5, eight rows 16.7, four adjacent rows 6.3: lessons/14_int8).
# Groups of exactly 32 only (quant.GROUP); other groups take the portable kernel.

LANES = 32  # a group: 32 int16 inputs fill one 512-bit register (two of 256 bits with AVX2)
STREAMS = 4  # rows read side by side, a quarter of the matrix apart
_I8, _I16, _I32, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()
_F32x16, _I32x16 = ir.VectorType(_F32, 16), ir.VectorType(_I32, 16)


def _load_lanes(builder, pointer, element):
    """The LANES values of type `element` from `pointer` on, as one vector."""
    return builder.load(builder.bitcast(pointer, ir.VectorType(element, LANES).as_pointer()), align=1)


def _pair_sums(builder, q, x):
    """<16 x i32>, lane l = q[2l] x[2l] + q[2l+1] x[2l+1] for 32 int8 q and 32 int16 x from the pointers."""
    wide = ir.VectorType(_I32, LANES)
    p = builder.mul(builder.sext(_load_lanes(builder, q, _I8), wide), builder.sext(_load_lanes(builder, x, _I16), wide))
    even, odd = (ir.Constant(_I32x16, list(range(k, LANES, 2))) for k in (0, 1))
    return builder.add(builder.shuffle_vector(p, p, even), builder.shuffle_vector(p, p, odd))


def _lanes_sum(builder, v):
    """The 16 float lanes of v summed in halves: 8 + 8, 4 + 4, 2 + 2, 1 + 1."""
    width = 16
    while width > 1:
        width //= 2
        halves = [ir.Constant(ir.VectorType(_I32, width), list(range(k, k + width))) for k in (0, width)]
        v = builder.fadd(*(builder.shuffle_vector(v, v, h) for h in halves))
    return builder.extract_element(v, _I32(0))


@intrinsic
def _dot4_int8(typingctx, xq, sx, q, sw, rows):
    """(_dot_int8(xq, sx, q[r], sw[r]) for r in rows): four rows of q (Cout,Cin) int8, sw (Cout,G),
    groups of LANES inputs, the float lanes kept across groups."""
    arrays = (xq, sx, q, sw)
    if not (all(isinstance(a, types.Array) and a.layout == "C" for a in arrays) and xq.ndim == sx.ndim == 1
            and q.ndim == sw.ndim == 2 and isinstance(rows, types.BaseTuple) and len(rows) == STREAMS
            and all(isinstance(r, types.Integer) for r in rows)):
        return None

    def codegen(context, builder, sig, args):
        xa, sxa, qa, swa = (context.make_array(t)(context, builder, a) for t, a in zip(sig.args[:4], args[:4]))
        intp = context.get_value_type(types.intp)
        C, G = builder.extract_value(xa.shape, 0), builder.extract_value(sxa.shape, 0)
        rows = [context.cast(builder, r, t, types.intp)
                for r, t in zip(cgutils.unpack_tuple(builder, args[4], STREAMS), sig.args[4])]
        q_rows = [builder.gep(qa.data, [builder.mul(r, C)]) for r in rows]
        sw_rows = [builder.gep(swa.data, [builder.mul(r, G)]) for r in rows]
        fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32x16, [_F32x16] * 3),
                                                 "llvm.fmuladd.v16f32")
        zero = ir.Constant(_F32x16, [0.0] * 16)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in rows]  # 16 float lanes per row
        with cgutils.for_range(builder, G) as group:
            g = group.index
            x = builder.gep(xa.data, [builder.mul(g, intp(LANES))])
            sx_g = builder.load(builder.gep(sxa.data, [g]))
            for q_row, sw_row, acc in zip(q_rows, sw_rows, accs):
                dots = _pair_sums(builder, builder.gep(q_row, [builder.mul(g, intp(LANES))]), x)
                s = builder.fmul(builder.load(builder.gep(sw_row, [g])), sx_g)
                splat = builder.shuffle_vector(builder.insert_element(zero, s, _I32(0)), zero, ir.Constant(_I32x16, [0] * 16))
                builder.store(builder.call(fmuladd, [builder.sitofp(dots, _F32x16), splat, builder.load(acc)]), acc)
        sums = [_lanes_sum(builder, builder.load(acc)) for acc in accs]
        return context.make_tuple(builder, sig.return_type, sums)
    return types.UniTuple(types.float32, STREAMS)(xq, sx, q, sw, rows), codegen


def vector_path() -> bool:
    """Whether the int8 kernels take the vector path: where LLVM lowers its 32-lane integer products
    to wide instructions (x86 with AVX2, AVX-512 better still; 64-bit ARM, whose NEON is always
    there). NANOAGENT_INT8_KERNEL=portable or =vector overrides the choice."""
    return kernels.cpu_choice("NANOAGENT_INT8_KERNEL", "vector", "portable", "avx2")


VECTOR = vector_path()


def kernel_line() -> str:
    """Which int8 kernel this process runs, for benchmark figures."""
    if not VECTOR:
        return "int8 kernel: portable (a row at a time, each group summed across its lanes)"
    features = llvmlite.binding.get_host_cpu_features()
    isa = next((name for flag, name in (("avx512vnni", "AVX-512 VNNI"), ("avx512bw", "AVX-512"), ("avx2", "AVX2"))
                if features.get(flag)), platform.machine())
    return f"int8 kernel: vector, {isa} ({STREAMS} rows at a time, float lanes kept across groups)"


@njit
def _vector_fits(q, sw, vector):
    """Whether q, sw (groups of LANES inputs) take the vector path, when it is asked for."""
    return vector and q.shape[1] == LANES * sw.shape[1]


@njit
def _tasks(q, sw, vector):
    """How many tasks _rows_task splits q's rows into."""
    R = q.shape[0]
    return R // STREAMS + R % STREAMS if _vector_fits(q, sw, vector) else R


@njit
def _rows_task(xq, sx, q, sw, out, t, vector):
    """Task t (of _tasks) of out = the int8 product of q, sw with one input row xq, sx: on the vector
    path rows t + k R/4 for t < R/4, then the last R % 4 rows one per task; else row t."""
    if not _vector_fits(q, sw, vector):
        out[t] = _dot_int8(xq, sx, q[t], sw[t])
        return
    quarter = q.shape[0] // STREAMS
    if t < quarter:
        out[t], out[t + quarter], out[t + 2 * quarter], out[t + 3 * quarter] = _dot4_int8(
            xq, sx, q, sw, (t, t + quarter, t + 2 * quarter, t + 3 * quarter))
    else:
        r = t - quarter + STREAMS * quarter  # a row left over: the vector kernel on it alone
        out[r] = _dot4_int8(xq, sx, q, sw, (r, r, r, r))[0]


@numba.njit(cache=True, nogil=True, parallel=True)
def _matmul_int8(xq, sx, q, sw, out, vector):
    for t in numba.prange(_tasks(q, sw, vector)):  # each output row written by one task only
        for n in range(xq.shape[0]):
            _rows_task(xq[n], sx[n], q, sw, out[n], t, vector)


def matmul_int8(xq, sx, q, sw, vector=None):
    """xq (N,Cin) int16, sx (N,G) float32; q (Cout,Cin) int8, sw (Cout,G) float32 -> (N,Cout) float32,
    = (xq * sx) @ (q * sw).T with each group's dot product done in integers (vector: the vector
    path, None: as chosen for this CPU)."""
    out = np.empty((xq.shape[0], q.shape[0]), np.float32)
    _matmul_int8(xq, sx, q, sw, out, VECTOR if vector is None else vector)
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
                       cos, sin, kt, vc, P, n_heads, eps, vector):
    C = x.shape[0]
    KV, D = kt.shape[0], kt.shape[1]
    H = n_heads
    h, rstd = np.empty((1, C), np.float32), np.empty(1, np.float32)
    # attention: the rows of q, k and v in one parallel loop, from the normed input
    _rmsnorm(x.reshape(1, C), attn_norm, eps, h, rstd)
    xq, sx = _quantize_vec(h[0], C // sq.shape[1])
    q, k, v = np.empty((H, 1, D), np.float32), np.empty((KV, 1, D), np.float32), np.empty((KV, D), np.float32)
    qf, kf, vf = q.reshape(H * D), k.reshape(KV * D), v.reshape(KV * D)
    nq, nk = _tasks(wq, sq, vector), _tasks(wk, sk, vector)
    for t in numba.prange(nq + 2 * nk):  # each row written by one task only
        if t < nq:
            _rows_task(xq, sx, wq, sq, qf, t, vector)
        elif t < nq + nk:
            _rows_task(xq, sx, wk, sk, kf, t - nq, vector)
        else:
            _rows_task(xq, sx, wv, sv, vf, t - nq - nk, vector)
    att = _attend_new(q, k, v, cos, sin, kt, vc, P)
    aq, sa = _quantize_vec(att.reshape(H * D), (H * D) // so.shape[1])
    o = np.empty(C, np.float32)
    for t in numba.prange(_tasks(wo, so, vector)):
        _rows_task(aq, sa, wo, so, o, t, vector)
    x = x + o  # residual
    # MLP: the rows of gate and up in one parallel loop, then down
    _rmsnorm(x.reshape(1, C), mlp_norm, eps, h, rstd)
    xq, sx = _quantize_vec(h[0], C // sg.shape[1])
    F = wg.shape[0]
    g, u, m = np.empty(F, np.float32), np.empty(F, np.float32), np.empty(F, np.float32)
    nf = _tasks(wg, sg, vector)
    for t in numba.prange(2 * nf):
        if t < nf:
            _rows_task(xq, sx, wg, sg, g, t, vector)
        else:
            _rows_task(xq, sx, wu, su, u, t - nf, vector)
    _silu_gate(g, u, m)
    mq, sm = _quantize_vec(m, F // sd.shape[1])
    down = np.empty(C, np.float32)
    for t in numba.prange(_tasks(wd, sd, vector)):
        _rows_task(mq, sm, wd, sd, down, t, vector)
    return x + down  # residual


@numba.njit(cache=True, nogil=True, parallel=True)
def _lm_head_int8(x, norm, wh, sh, eps, logits, vector):
    C = x.shape[0]
    h, rstd = np.empty((1, C), np.float32), np.empty(1, np.float32)
    _rmsnorm(x.reshape(1, C), norm, eps, h, rstd)
    xq, sx = _quantize_vec(h[0], C // sh.shape[1])
    for t in numba.prange(_tasks(wh, sh, vector)):
        _rows_task(xq, sx, wh, sh, logits, t, vector)


def decode_int8(x, blocks, norm, head, cos, sin, kt_cache, v_cache, P, n_heads, eps):
    """One new token through every layer, int8 weights -> logits (V,).

    x (C,) float32 is its embedding, at position P; blocks the layers.BlockWeights holding
    quant.Int8Weights; norm (C,) the final norm; head the tied embedding's Int8Weight; cos/sin
    (1,D/2) the rotation of position P; kt_cache (L,KV,D,Tmax) and v_cache (L,KV,Tmax,D), float32
    or float16 (kernels.HALF_CACHE), hold P positions, and this token's keys and values are written at P.
    """
    x, eps = np.ascontiguousarray(x, np.float32), np.float32(eps)
    kt_cache, v_cache = kernels.cache_bits(kt_cache), kernels.cache_bits(v_cache)
    for i, b in enumerate(blocks):  # arrays one by one: Numba types a NamedTuple of them far more slowly
        x = _decode_layer_int8(x, b.attn_norm, *b.q, *b.k, *b.v, *b.o, b.mlp_norm, *b.gate, *b.up, *b.down,
                               cos, sin, kt_cache[i], v_cache[i], P, n_heads, eps, VECTOR)
    logits = np.empty(head.q.shape[0], np.float32)
    _lm_head_int8(x, norm, head.q, head.scale, eps, logits, VECTOR)
    return logits


# ---- this file's cached kernels also depend on kernels.py ------------------------------------

def forget_stale_kernels() -> None:
    """Numba checks a cached kernel against its own source file only, but the decoding step above
    compiles kernels.py's attention, norm and gate into itself. When kernels.py has changed since
    this file's kernels were cached (a pull that leaves this file alone), their cache would
    silently run the old code: so its index files are dropped, and they compile anew."""
    try:
        folder = Path(_decode_layer_int8._cache._cache_path)
        stamp = hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest()
        marker = folder / "kernels_int8.kernels-py-sha256"
        if marker.is_file() and marker.read_text() == stamp:
            return
        for index in folder.glob("kernels_int8.*.nbi"):
            index.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(stamp)
    except (AttributeError, OSError):  # no disk cache, or one that cannot be written: nothing to drop
        pass


forget_stale_kernels()
