"""int8 weights: quantize them, and multiply by them.

Every linear layer and the tied embedding/LM head become an `Int8Weight`: int8 values q
(Cout,Cin) and scales (Cout,G), one per group of `group` = Cin/G consecutive inputs of a row
(float16 values, held as float32), so w ~ q * scale with |w - q*scale| <= scale/2. Norms
stay float32. An `Int8Weight` sits in the params dict where the float array was;
`layers.linear_forward` and `layers.embedding_forward` dispatch on it, so the model code
is the same for both.

A matmul of a few rows (decoding) quantizes its input on the fly to int16 over the same
groups and sums each group's products exactly in int32 (kernels_int8.matmul_int8): no float copy
of a weight matrix is ever made. Many rows at once (a prompt) go through BLAS instead, one
block of weight rows dequantized into a small buffer at a time: the same weights, and the
same function but for the int16 rounding of the input (about 1e-5 of its size).

Files of int8 weights are checkpoint.py's; what int8 costs in accuracy is measured in
eval/agreement.py. Lesson: lessons/14_int8/README.md.   Command line: `python -m nanoagent.quantize --help`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import kernels_int8

GROUP = 32  # inputs per scale: the default, measured against 64 and one per row (lesson 14)
WEIGHT_LIMIT = 127  # int8 values in [-127, 127]: symmetric, so 0 is exact and -w is -q
BLAS_ROWS = 8  # from this many input rows on, a matmul goes through BLAS block by block
BLOCK_FLOATS = 1 << 20  # the float32 buffer of one block of weight rows: 4 MiB (a layer's matrix)


class Int8Weight(NamedTuple):
    """A weight matrix in int8: w[o, i] ~ q[o, i] * scale[o, i // group]."""
    q: np.ndarray  # (Cout, Cin) int8
    scale: np.ndarray  # (Cout, G) float32, G = Cin // group

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    @property
    def group(self) -> int:
        return self.q.shape[1] // self.scale.shape[1]

    @property
    def dtype(self):  # the float type it computes in
        return self.scale.dtype

    @property
    def size(self) -> int:  # parameters, as for an array
        return self.q.size

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes


# ---- quantizing and back ---------------------------------------------------------------

def quantize(w, group: int | None = GROUP) -> Int8Weight:
    """w (Cout,Cin) float -> Int8Weight; group=None gives one scale per output channel (row).

    Each scale is max|w| / 127 over its group, rounded to float16 (as stored on disk and in
    llama.cpp's Q8_0); the weights are rounded onto that scale, so |w - q*s| <= s/2 still holds.
    """
    gs = w.shape[1] if group is None else group
    if w.ndim != 2 or w.shape[1] % gs:
        raise ValueError(f"cannot quantize a {w.shape} tensor in groups of {gs} inputs")
    _, scale = kernels_int8.quantize_rows(w, gs, WEIGHT_LIMIT, np.int8)  # (Cout,G) max|w| / 127
    scale = scale.astype(np.float16).astype(np.float32)
    return Int8Weight(kernels_int8.round_rows(w, scale, WEIGHT_LIMIT, np.int8), scale)


def dequantize(w: Int8Weight) -> np.ndarray:
    """Int8Weight -> (Cout,Cin) float32 (for tests and lessons; the model never needs it whole)."""
    return kernels_int8.dequantize_rows(w.q, w.scale)


def activation_limit(gs: int) -> int:
    """The int16 range for activations summed in groups of gs: gs * 127 * limit must stay below 2^31."""
    return int(kernels_int8.int16_limit(gs))


def group_for(cin: int, group: int | None = GROUP) -> int | None:
    """The largest group size <= `group` that divides a row of cin inputs (None: the whole row)."""
    return None if group is None else max(g for g in range(1, min(group, cin) + 1) if cin % g == 0)


def quantize_params(params: dict, group: int | None = GROUP) -> dict:
    """Every 2-D tensor (linear layers, the embedding) -> Int8Weight; norms stay as they are."""
    return {k: quantize(v, group_for(v.shape[1], group)) if getattr(v, "ndim", 0) == 2 else v
            for k, v in params.items()}


# ---- the two ways int8 weights are used --------------------------------------------------

def linear(x, w: Int8Weight) -> np.ndarray:
    """x (N,Cin) float -> x @ w.T (N,Cout) float32, without a float copy of w."""
    if x.shape[0] < BLAS_ROWS:  # few rows: bound by reading the weights, so read them as int8
        xq, sx = kernels_int8.quantize_rows(x, w.group, activation_limit(w.group), np.int16)  # (N,Cin), (N,G)
        return kernels_int8.matmul_int8(xq, sx, w.q, w.scale)
    # many rows: bound by arithmetic, so BLAS on one dequantized block of weight rows at a time
    # (on the float input itself: the kernel's int16 rounding of it is ~1e-5 of its size)
    Cout, Cin = w.shape
    rows = max(1, BLOCK_FLOATS // Cin)
    buf = np.empty((min(rows, Cout), Cin), np.float32)
    out = np.empty((x.shape[0], Cout), np.float32)
    for r0 in range(0, Cout, rows):
        r1 = min(r0 + rows, Cout)
        wb = kernels_int8.dequantize_rows(w.q[r0:r1], w.scale[r0:r1], buf[:r1 - r0])  # (R,Cin)
        out[:, r0:r1] = x @ wb.T  # (N,Cin) @ (Cin,R)
    return out


def embedding(ids, w: Int8Weight) -> np.ndarray:
    """ids (...) int -> rows (...,C) float32: only the looked-up rows are dequantized."""
    flat = np.asarray(ids).reshape(-1)
    return kernels_int8.dequantize_rows(w.q[flat], w.scale[flat]).reshape(*np.shape(ids), w.shape[1])
