"""How many threads the hot loops run on: OpenMP's spin between Numba's parallel loops (set when
`kernels` is imported), and BLAS's thread count for like-for-like timings; and `blas_line`, which
says what BLAS a benchmark ran."""
from __future__ import annotations

import functools
import os

from threadpoolctl import ThreadpoolController


def spin_briefly() -> None:
    """Let Numba's OpenMP workers spin only briefly between parallel loops before they sleep,
    unless the user has chosen (OMP_WAIT_POLICY or GOMP_SPINCOUNT). libgomp reads it when the
    first parallel loop starts, so `kernels` calls this on import, before any kernel runs. Its
    default long spin lets a waiting worker hold a core that the main thread or BLAS's threads
    need: on a busy machine in decoding, and on an idle one in training, where BLAS products and
    parallel loops take turns (lessons/14_int8/README.md has the measurements)."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")


@functools.cache
def _blas_pools():
    return ThreadpoolController().select(user_api="blas")


def single_blas_thread():
    """A context in which BLAS runs on one thread (for like-for-like timings; decoding itself
    uses every BLAS thread, which stream the weights faster on an idle machine)."""
    return _blas_pools().limit(limits=1)


def blas_line() -> str:
    """Which BLAS library, kernel (core type) and thread count this process runs: figures from
    different machines or settings are comparable only with it."""
    pools = [p for p in ThreadpoolController().info() if p.get("user_api") == "blas"]
    return "BLAS: " + "; ".join(f"{p.get('internal_api')} {p.get('version') or ''}, {p.get('architecture') or '?'} "
                                f"kernels, {p.get('num_threads')} threads" for p in pools) if pools else "BLAS: none found"
