# %% [markdown]
# # Lesson 14: int8 weights
#
# SmolLM2-135M in float32 is 540 MB, and every generated token reads all of it. In int8
# it is a quarter of that. This lesson quantizes the real weights by hand, measures the
# error one scale per row makes against one per group of inputs, multiplies in integers,
# and measures what int8 does to the model: perplexity, greedy replies and speed. The
# derivation and the design choices are in README.md beside this file.
# `NANOAGENT_LESSON_QUICK=1` shrinks the measurements (fewer tokens and prompts).

# %%
import json
import os
import platform
import time
from pathlib import Path

import numba
import numpy as np

import nanoagent
from nanoagent import kernels_int8, quant
from nanoagent.data.io import find_data_dir
from nanoagent.eval.agreement import CHECK_PROMPTS, agreement, greedy_tokens
from nanoagent.eval.ppl import perplexity
from nanoagent.generate import ChatModel, GenerationStats, generate_ids
from nanoagent.layers import embedding_forward, rmsnorm_forward
from nanoagent.model import Model

QUICK = os.environ.get("NANOAGENT_LESSON_QUICK") == "1"
lm = nanoagent.load()  # the network and its tokenizer
model, tok = lm.model, lm.tokenizer
P = model.params

# %% [markdown]
# ## 1. One row to int8, by hand
# Symmetric quantization: the scale s maps the largest |w| of the row to 127 (kept as a
# float16, 2 bytes, as llama.cpp's Q8_0 keeps it), and each weight becomes the nearest
# integer q = rint(w / s). Zero stays exactly zero, and the error of every weight is at
# most half a step, s / 2.

# %%
w = np.asarray(P["model.layers.0.mlp.gate_proj.weight"])  # (F,C) = (1536, 576)
row = w[0]
s = np.float32(np.float16(np.abs(row).max() / np.float32(127)))
q = np.clip(np.rint(row / s), -127, 127).astype(np.int8)
err = np.abs(q * s - row)
print(f"row 0: max|w| = {np.abs(row).max():.4f}, s = {s:.6f}, q in [{q.min()}, {q.max()}], "
      f"max error {err.max():.6f} <= s/2 = {s / 2:.6f}")
qw_row = quant.quantize(w, group=None)  # the package does the same for every row at once
assert np.array_equal(qw_row.q[0], q) and qw_row.scale[0, 0] == s and err.max() <= s / 2 * (1 + 1e-5)

# %% [markdown]
# ## 2. One scale per row, or one per group of inputs?
# A row's scale is set by its largest weight; every other weight of the row is rounded on
# that coarse grid. A scale per group of 64 or 32 inputs follows the weights more closely,
# for 2 more bytes (a float16 scale) per group: +3% or +6%. Measured over the model's
# matrices: the error relative to each tensor's size, and the bytes.

# %%
names = [n for n, a in P.items() if a.ndim == 2]
if QUICK:
    names = [n for n in names if n.startswith(("model.embed", "model.layers.0.", "model.layers.15."))]
print(f"{'granularity':18s} {'rel. RMS error':>15s} {'worst tensor':>13s} {'bytes (all matrices)':>21s}")
for group in (None, 64, 32):
    rel, nbytes = [], 0
    for n in names:
        a = np.asarray(P[n])
        qa = quant.quantize(a, group)
        rel.append(np.linalg.norm(quant.dequantize(qa) - a) / np.linalg.norm(a))
        nbytes += qa.q.nbytes + 2 * qa.scale.size  # on disk: int8 values, float16 scales
    total = nbytes * (1 if not QUICK else sum(P[n].size for n in P if P[n].ndim == 2) / sum(P[n].size for n in names))
    label = "per row" if group is None else f"per {group} inputs"
    print(f"{label:18s} {np.mean(rel):15.5f} {np.max(rel):13.5f} {total / 1e6:17.1f} MB")

# %% [markdown]
# ## 3. Multiplying in integers
# With the input x quantized the same way (per group, on the fly), one output is
#   y[o] = sum_g  s_w[o,g] * s_x[g] * sum_{i in g} q[o,i] * xq[i],
# the inner sums exact integers. We quantize x to int16, not int8: the CPU multiplies
# 16-bit pairs anyway (vpmaddwd), so it costs nothing, and the input's rounding all but
# vanishes. Below, the real hidden state of a prompt going into layer 0's gate.

# %%
ids = tok.encode("Natalia sold clips to 48 of her friends in April.")
x, _ = embedding_forward(np.array([ids]), P["model.embed_tokens.weight"])
h, _ = rmsnorm_forward(x[0], P["model.layers.0.post_attention_layernorm.weight"], model.config.rms_norm_eps)  # (T,C)
qw = quant.quantize(w, quant.GROUP)
gs = qw.group
xq, sx = kernels_int8.quantize_rows(h, gs, quant.activation_limit(gs), np.int16)  # (T,C) int16, (T,G)
by_hand = sum(qw.scale[0, g] * sx[0, g] * int(np.dot(qw.q[0, g * gs:(g + 1) * gs].astype(np.int64),
                                                      xq[0, g * gs:(g + 1) * gs].astype(np.int64)))
              for g in range(h.shape[1] // gs))
y8 = kernels_int8.matmul_int8(xq, sx, qw.q, qw.scale)  # (T,F): the Numba kernel
assert np.isclose(y8[0, 0], by_hand, rtol=1e-5)
assert np.allclose(y8, kernels_int8.matmul_int8_ref(xq, sx, qw.q, qw.scale), rtol=1e-5, atol=1e-5)
# Two kernels compute it (the README's "Keeping the lanes"): the portable one, which sums each
# group across its vector lanes, and the vector path, which keeps 16 float lanes across the row
# and reads four rows at once. They differ only by the order of float additions.
portable, vector = (kernels_int8.matmul_int8(xq, sx, qw.q, qw.scale, v) for v in (False, True))
assert np.allclose(portable, vector, rtol=1e-5, atol=1e-5 * np.abs(portable).max())
print(kernels_int8.kernel_line())


@numba.njit  # not cached: inspect_asm reads the machine code of this compilation
def four_rows(xq, sx, q, sw):
    return kernels_int8._dot4_int8(xq, sx, q, sw, (0, 1, 2, 3))


# What LLVM made of the vector IR on this CPU (x86: integer pair sums, floats, fused multiply-adds)
assert np.allclose(four_rows(xq[0], sx[0], qw.q[:4], qw.scale[:4]), vector[0, :4], rtol=1e-6, atol=1e-6)
asm = next(iter(four_rows.inspect_asm().values()))
found = [op for op in ("vpmaddwd", "vpdpwssd", "vcvtdq2ps", "vfmadd213ps", "vfmadd231ps") if op in asm]
print(f"{platform.machine()}: the four-row kernel compiles to", ", ".join(found) or "(no x86 vector instructions)")
if platform.machine() in ("x86_64", "AMD64") and kernels_int8.VECTOR:
    assert {"vpmaddwd", "vpdpwssd"} & set(found) and "vcvtdq2ps" in found

y = h @ w.T  # float32
xq8, sx8 = kernels_int8.quantize_rows(h, gs, 127, np.int16)  # int8-range activations, for comparison
for label, approx in [("int8 weights, float input", h @ quant.dequantize(qw).T),
                      ("int8 weights, int16 input", y8),
                      ("int8 weights, int8 input", kernels_int8.matmul_int8(xq8, sx8, qw.q, qw.scale))]:
    print(f"{label:27s} relative error of y: {np.linalg.norm(approx - y) / np.linalg.norm(y):.5f}")

# %% [markdown]
# ## 4. What it does to the model
# Perplexity on held-out text (GSM8K test answers, which the model never trained on), and
# greedy replies to fixed chat prompts compared token by token with float32's.

# %%
data = find_data_dir(required=False)  # $NANOAGENT_DATA, or shared/data beside the checkout
if data is None:  # a fresh clone: the GSM8K sample shipped with the tests (it holds the first 2,048 tokens)
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    data = here.parents[1] / "tests" / "fixtures" / "data"
    print("no data folder found: reading the GSM8K test sample in tests/fixtures/data")
rows = [json.loads(line) for line in (data / "gsm8k" / "test.jsonl").read_text().splitlines()[:300]]
text_ids = tok.encode("\n\n".join(r["answer"] for r in rows))[:256 if QUICK else 2048]
prompts = CHECK_PROMPTS[:6] if QUICK else CHECK_PROMPTS
n_new = 12 if QUICK else 32

ppl32 = perplexity(lm, text_ids)
greedy32 = greedy_tokens(lm, prompts, n_new)
print(f"{len(text_ids)} held-out tokens; {len(prompts)} prompts x {n_new} greedy tokens")
print(f"float32              perplexity {ppl32:.4f}")
results = {}
for group in (quant.GROUP, None):
    m8 = ChatModel(Model(model.config, quant.quantize_params(P, group)), tok)
    ppl8 = perplexity(m8, text_ids)
    agree = agreement(greedy32, greedy_tokens(m8, prompts, n_new))
    results[group] = (m8, ppl8, agree)
    label = "int8 per row" if group is None else f"int8 per {group}"
    print(f"{label:20s} perplexity {ppl8:.4f} ({ppl8 / ppl32 - 1:+.2%}), greedy agreement {agree:.1%}")

# %% [markdown]
# ## 5. Speed
# Decoding one token reads every weight once, so it is bound by memory: int8 reads a
# quarter of the bytes. A long prompt is bound by arithmetic; int8 then goes through BLAS
# one dequantized block of weight rows at a time. Timed here in this process, on a
# machine that may be busy: the bench (`python -m nanoagent.bench generate --int8`) is
# the careful measurement.

# %%
model8 = results[quant.GROUP][0].model
chat = tok.encode(tok.render_chat([{"role": "user", "content": "Tell me a story."}]))
prompt = np.random.default_rng(0).integers(100, 40000, 64 if QUICK else 512)


def speed(m):
    stats = GenerationStats()
    for _ in generate_ids(m, chat, 16 if QUICK else 64, stop_ids=(), stats=stats):
        pass
    kv = m.new_kv_cache(len(prompt))
    t0 = time.perf_counter()
    m.prefill(prompt, kv)
    return len(prompt) / (time.perf_counter() - t0), stats.generated_tokens / stats.generate_seconds


speed(model8), speed(model)  # warm up
(pre32, dec32), (pre8, dec8) = speed(model), speed(model8)
print(f"float32: prefill {pre32:6.1f} tokens/s, decode {dec32:6.1f} tokens/s")
print(f"int8:    prefill {pre8:6.1f} tokens/s, decode {dec8:6.1f} tokens/s ({dec8 / dec32:.1f}x)")

# %% [markdown]
# ## 6. The check
# int8 with the package's groups (quant.GROUP): perplexity at most 1% above float32,
# greedy replies agreeing on at least 85% of tokens (the measured figures are in the
# README), and the kernel equal to its twin (above).

# %%
_, ppl8, agree = results[quant.GROUP]
if ppl8 > ppl32 * 1.01:
    raise AssertionError(f"int8 perplexity {ppl8:.4f} is more than 1% above float32's {ppl32:.4f}")
if agree < 0.85:
    raise AssertionError(f"int8 greedy replies agree with float32's on only {agree:.1%} of tokens")
print(f"OK int8 perplexity {ppl32:.3f} -> {ppl8:.3f} ({ppl8 / ppl32 - 1:+.2%}), "
      f"greedy agreement {agree:.1%}, decode {dec8 / dec32:.1f}x float32")
