"""Gradient checks: an analytic gradient against central differences, in float64.

Used by lesson 11 and the tests alike: d f / d x[i] ~ (f(x + h e_i) - f(x - h e_i)) / 2h,
one entry at a time (x is changed in place and restored). With float64 and h = 1e-6 the
difference is accurate to about 1e-9 relative, so a correct backward agrees to 1e-6 or better.
Lesson: lessons/11_backward/README.md.
"""
from __future__ import annotations

import numpy as np


def numeric_grad(f, x: np.ndarray, entries=None, h: float = 1e-6) -> np.ndarray:
    """d f() / d x at the flat indices `entries` (all of them when None) -> (len(entries),) float64."""
    flat = x.reshape(-1)  # a view: writing to it changes x
    entries = np.arange(x.size) if entries is None else np.asarray(entries)
    g = np.zeros(len(entries))
    for j, i in enumerate(entries):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        g[j] = (fp - fm) / (2 * h)
    return g


def rel_err(a, b) -> float:
    """max |a - b| relative to the larger of the two gradients' largest entry."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-300))
