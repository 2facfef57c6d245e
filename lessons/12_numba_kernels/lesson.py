# %% [markdown]
# # Lesson 12: Numba kernels
#
# The hot loops that are not matrix products (norms, RoPE, softmax, the SwiGLU gate,
# one query against the KV cache, their backward passes, AdamW) as compiled loops: what
# they save over NumPy, how their machine code is cached on disk, and each one against
# its plain-NumPy twin, timed. The derivation is in README.md beside this file.

# %%
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numba
import numpy as np

from nanoagent import kernels

QUICK = os.environ.get("NANOAGENT_LESSON_QUICK") == "1"
RUNS = 3 if QUICK else 7
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. What a NumPy expression costs: temporaries
# `rmsnorm_ref` is one readable line of array operations; each one allocates a new array
# and makes a pass over memory. The kernel loops over each row twice (sum of squares,
# then output) and allocates only its result. tracemalloc sees NumPy's allocations.

# %%
x = rng.standard_normal((512, 576)).astype(np.float32)  # (N,C)
w = rng.standard_normal(576).astype(np.float32)  # (C,)
kernels.rmsnorm(x, w, 1e-5)  # load the compiled kernel before measuring


def peak_bytes(f, *args):
    tracemalloc.start()
    f(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


for f in (kernels.rmsnorm_ref, kernels.rmsnorm):
    print(f"{f.__name__:12} allocates up to {peak_bytes(f, x, w, 1e-5) / x.nbytes:.1f}x the size of its output")

# %% [markdown]
# ## 2. How `cache=True` works
# A Numba function compiles on its first call, for the argument types of that call, and
# with `cache=True` writes the machine code next to the source: an index (`.nbi`) and one
# code file (`.nbc`) per signature. A later process whose source file is unchanged loads
# it instead of compiling. We watch this happen in two fresh processes sharing an empty
# cache folder (`NUMBA_CACHE_DIR`), so the package's own cache is left alone.

# %%
PROBE = ("import time, numpy as np; from nanoagent import kernels; t = time.perf_counter(); "
         "kernels.rmsnorm(np.ones((4, 8), np.float32), np.ones(8, np.float32), 1e-5); "
         "s = kernels._rmsnorm.stats; print(time.perf_counter() - t, sum(s.cache_hits.values()))")
with tempfile.TemporaryDirectory() as cache_dir:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    first_call, loaded = [], []
    for run in ("first process", "second process"):
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
        seconds, hits = out.stdout.split()
        first_call.append(float(seconds))
        loaded.append(int(hits) > 0)
        print(f"{run}: first call {float(seconds):.3f} s, {'loaded from the cache' if loaded[-1] else 'compiled'}")
    files = sorted(f for _, _, names in os.walk(cache_dir) for f in names)
print("cache files:", files)
print("signatures compiled in this process:", len(kernels._rmsnorm.signatures), "for _rmsnorm, e.g.",
      kernels._rmsnorm.signatures[0][:2])

# %% [markdown]
# ## 3. Every kernel against its twin
# Realistic sizes: T = 64 tokens, a KV cache of S = 512 positions, one (F,C) parameter.
# Each kernel and its twin get the same inputs; in-place ones (the embedding gradient,
# AdamW) get fresh copies for the comparison. Timing: the median of a few runs in this
# process, after a warm-up call.

# %%
T, C, F, H, KV, D, S, V = 64, 576, 1536, 9, 3, 64, 512, 4096
f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)

x_rows, w_c, dy_rows = f32(T, C), f32(C), f32(T, C)  # (T,C), (C,), (T,C)
rstd = kernels.rmsnorm(x_rows, w_c, 1e-5)[1]  # (T,)
ang = rng.uniform(0, 100, (T, D // 2))  # (T,D/2)
q_heads, cos, sin = f32(H, T, D), np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
scores, dp_soft = f32(H, T, T), f32(H, T, T)  # (H,T,T)
p_soft = kernels.causal_softmax(scores, 1 / math.sqrt(D), 0)  # (H,T,T)
g_act, u_act, dy_act = f32(T, F) * 3, f32(T, F), f32(T, F)  # (T,F)
q_one, kt_cache, v_cache = f32(H, D), f32(KV, D, S), f32(KV, S, D)  # keys stored transposed
ids, dwte = rng.integers(0, V, T), np.zeros((V, C), np.float32)  # repeated ids are likely: rows must add up
p_par, g_par, m_par, v_par = f32(F, C), f32(F, C), f32(F, C) * 0.1, np.abs(f32(F, C)) * 0.01

CASES = [  # name, arguments, the arguments updated in place (None: compare return values), shape
    ("rmsnorm", (x_rows, w_c, 1e-5), None, "(T,C)"),
    ("rope", (q_heads, cos, sin), None, "(H,T,D)"),
    ("causal_softmax", (scores, 1 / math.sqrt(D), 0), None, "(H,T,T)"),
    ("silu_gate", (g_act, u_act), None, "(T,F)"),
    ("attend_cache", (q_one, kt_cache, v_cache, S), None, "(H,D), S=512"),
    ("rmsnorm_backward", (dy_rows, x_rows, w_c, rstd), None, "(T,C)"),
    ("softmax_backward", (p_soft, dp_soft), None, "(H,T,T)"),
    ("silu_gate_backward", (dy_act, g_act, u_act), None, "(T,F)"),
    ("embedding_backward", (ids, dy_rows, dwte), (2,), "(T,C) -> (V,C)"),
    ("adamw", (p_par, g_par, m_par, v_par, 1e-3, 0.9, 0.95, 1e-8, 0.1, 10), (0, 2, 3), "(F,C)"),
    ("sum_squares", (p_par,), None, "(F,C)"),
]


def outputs(fn, args, inplace):
    """-> the list of arrays fn produces: its return values, or the arguments it updates (on copies)."""
    if inplace is None:
        out = fn(*args)
        return list(out) if isinstance(out, tuple) else [out]
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    fn(*args)
    return [args[i] for i in inplace]


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def median_seconds(fn, args, runs):
    fn(*args)  # warm-up: loads (or compiles) the kernel, touches the memory
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(*args)  # in-place kernels just keep updating their arrays
        times.append(time.perf_counter() - t)
    return float(np.median(times))


rows = []
for name, args, inplace, shape in CASES:
    kernel, twin = getattr(kernels, name), getattr(kernels, name + "_ref")
    diff = max(rel_diff(a, b) for a, b in zip(outputs(kernel, args, inplace), outputs(twin, args, inplace)))
    parallel = getattr(kernels, "_" + name).targetoptions.get("parallel", False)
    t_kernel, t_twin = median_seconds(kernel, args, RUNS), median_seconds(twin, args, RUNS)
    t_one = math.nan
    if parallel:  # the same kernel with its prange loop on one thread: the cost of starting the threads
        numba.set_num_threads(1)
        t_one = median_seconds(kernel, args, RUNS)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    rows.append((name, shape, diff, t_kernel, t_one, t_twin))

print(f"{numba.config.NUMBA_NUM_THREADS} Numba threads; 'on 1 thread' is the same prange kernel limited to one")
print(f"{'kernel':20} {'shape':15} {'rel. diff':>9} {'kernel':>9} {'on 1 thread':>11} {'twin':>9} {'twin/kernel':>11}")
for name, shape, diff, tk, t1, tt in rows:
    one = f"{t1 * 1e6:9.0f}us" if t1 == t1 else " " * 11
    print(f"{name:20} {shape:15} {diff:9.1e} {tk * 1e6:7.0f}us {one} {tt * 1e6:7.0f}us {tt / tk:10.2f}x")

# %% [markdown]
# ## 4. Is every kernel here?
# Every public function of kernels.py that has a `_ref` twin.

# %%
twinned = sorted(n[:-4] for n in dir(kernels) if n.endswith("_ref") and callable(getattr(kernels, n[:-4], None)))
untested = [n for n in twinned if n not in [c[0] for c in CASES]]
print(f"{len(twinned)} kernels with a twin; compared here: {len(CASES)}", f"(not here: {untested})" if untested else "")

# %% [markdown]
# ## Check

# %%
worst = max(r[2] for r in rows)
if worst > 1e-5:
    raise AssertionError(f"a kernel differs from its twin: {[(r[0], r[2]) for r in rows if r[2] > 1e-5]}")
if loaded != [False, True] or not any(f.endswith(".nbi") for f in files) or not any(f.endswith(".nbc") for f in files):
    raise AssertionError(f"the disk cache did not work as described: loaded {loaded}, files {files}")
fastest = max(rows, key=lambda r: r[5] / r[3])
print(f"OK {len(rows)} kernels equal their NumPy twins, max rel. diff = {worst:.1e}; "
      f"biggest speed-up {fastest[5] / fastest[3]:.1f}x ({fastest[0]}); cached load "
      f"{first_call[1]:.2f} s vs compile {first_call[0]:.2f} s")
