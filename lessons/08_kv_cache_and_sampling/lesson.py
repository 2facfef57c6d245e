# %% [markdown]
# # Lesson 08: the KV cache and sampling
#
# Generation one token at a time: keep every layer's keys and values so each new token
# costs one token's work (prefill the prompt, then decode), check that this equals the
# full forward at every position, time the difference; then turn logits into a choice:
# greedy, temperature, top-k, top-p, min-p, a seeded sample. The derivation is in
# README.md beside this file.

# %%
import math
import os
import time

import numpy as np

import nanoagent
from nanoagent.threads import single_blas_thread
from nanoagent.sampling import SamplingParams, filter_probs, sample_next

QUICK = os.environ.get("NANOAGENT_LESSON_QUICK") == "1"
lm = nanoagent.load()  # the network and its tokenizer
model, tok = lm.model, lm.tokenizer
cfg = model.config
L, H, KV, D, C = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size
G, eps = H // KV, cfg.rms_norm_eps

question = [{"role": "user", "content": "What is the capital of France?"}]
ids = tok.encode(tok.render_chat(question))  # (T,) = 37 ids
T = len(ids)
full = model.logits(ids)  # (T,V): one full forward, the reference for this lesson
print("prompt:", T, "tokens; full-forward logits", full.shape)

# %% [markdown]
# ## 1. A decode step by hand, with our own cache
# One token at position `pos`: its q, k, v are computed, its k and v written into the
# cache at `pos`, and its query attends to cache positions 0..pos. No mask is needed:
# the cache holds nothing later. Shapes: one token is a vector, so W @ x.

# %%
E = model.params["model.embed_tokens.weight"]  # (V,C)
K_cache = np.zeros((L, KV, T, D), np.float32)  # (L,KV,Tmax,D)
V_cache = np.zeros((L, KV, T, D), np.float32)


def rmsnorm(x, w):
    return x / np.sqrt(np.mean(x * x) + eps) * w


def rope(x, pos):
    """x (N,D) heads of one token -> rotated to position pos (rotate-half layout)."""
    c, s = model.cos[pos], model.sin[pos]  # (D/2,)
    x1, x2 = x[:, :D // 2], x[:, D // 2:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def decode_step(token, pos):
    """One token at position pos -> logits (V,); writes its keys and values into the cache."""
    x = E[token]  # (C,)
    for l, w in enumerate(model.blocks):
        h = rmsnorm(x, w.attn_norm)
        q = rope((w.q @ h).reshape(H, D), pos)  # (H,D)
        K_cache[l, :, pos] = rope((w.k @ h).reshape(KV, D), pos)  # (KV,D) into the cache
        V_cache[l, :, pos] = (w.v @ h).reshape(KV, D)
        keys, values = K_cache[l, :, :pos + 1], V_cache[l, :, :pos + 1]  # (KV,pos+1,D)
        s = np.einsum("kgd,kpd->kgp", q.reshape(KV, G, D), keys) / math.sqrt(D)  # (KV,G,pos+1)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + w.o @ np.einsum("kgp,kpd->kgd", p, values).reshape(H * D)  # heads -> (C,)
        h = rmsnorm(x, w.mlp_norm)
        g = w.gate @ h  # (F,)
        x = x + w.down @ (g / (1 + np.exp(-g)) * (w.up @ h))
    return E @ rmsnorm(x, model.params["model.norm.weight"])  # (V,)


with single_blas_thread():  # one BLAS thread for both loops: the comparison is about work, not threads
    stepped = np.stack([decode_step(t, pos) for pos, t in enumerate(ids)])  # (T,V), one token at a time
diff_hand = np.abs(stepped - full).max()
print(f"token-by-token with our cache vs full forward, all {T} positions: max|diff| = {diff_hand:.1e}")

# %% [markdown]
# ## 2. The package: prefill, then decode
# `prefill` runs the first P prompt tokens as one batch, filling the cache; `decode_step`
# then adds one token at a time. Each returns the logits of its last token.

# %%
P = T // 2
kv = model.new_kv_cache(T)  # every layer's keys and values, room for T positions
cached = [model.prefill(ids[:P], kv)]  # logits at position P-1
cached += [model.decode_step(t, kv) for t in ids[P:]]  # positions P..T-1
diff_pkg = np.abs(np.stack(cached) - full[P - 1:]).max()
print(f"prefill {P} + decode {T - P} vs full forward at positions {P - 1}..{T - 1}: max|diff| = {diff_pkg:.1e}")
per_token = 2 * L * KV * D * np.dtype(model.dtype).itemsize  # keys and values, every layer
print(f"values cache {kv.v.shape} (L,B,KV,Tmax,D), keys the same size; {per_token:,} bytes per token, "
      f"{per_token * cfg.max_position_embeddings / 2**20:.0f} MiB for the full {cfg.max_position_embeddings} context")

# %% [markdown]
# ## 3. What the cache saves
# Greedy generation of N tokens both ways. Without a cache every step runs the whole
# sequence again (T, T+1, ... tokens); with it, the prompt once and then one token a step.

# %%
N = 8 if QUICK else 16


def generate_uncached(ids, n):
    seq = list(ids)
    for _ in range(n):
        h, _ = model.forward(np.array(seq)[None], keep_caches=False)  # (1,len(seq),C)
        seq.append(int(np.argmax(model.lm_head(h[0, -1]))))
    return seq[len(ids):]


def generate_cached(ids, n):
    kv = model.new_kv_cache(len(ids) + n)
    logits, out = model.prefill(ids, kv), []
    for i in range(n):
        out.append(int(np.argmax(logits)))
        if i + 1 < n:
            logits = model.decode_step(out[-1], kv)
    return out


with single_blas_thread():  # both on one BLAS thread: the comparison is about work, not threads
    t0 = time.perf_counter()
    slow = generate_uncached(ids, N)
    t1 = time.perf_counter()
    fast = generate_cached(ids, N)
    t2 = time.perf_counter()
print(f"{N} tokens: without cache {t1 - t0:.2f} s ({sum(range(T, T + N))} token-passes), "
      f"with cache {t2 - t1:.2f} s ({T + N - 1} token-passes): {(t1 - t0) / (t2 - t1):.1f}x")
print("same tokens:", slow == fast, repr(tok.decode(fast)), "(this loop does not stop at <|im_end|>)")

# %% [markdown]
# ## 4. From logits to probabilities: temperature
# p = softmax(z / tau). Small tau sharpens towards greedy (tau -> 0 is argmax), large tau flattens.

# %%
z = full[-1].astype(np.float64)  # (V,) scores for the first token of the reply


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


for tau in (0.5, 1.0, 1.5):
    p = softmax(z / tau)
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    cover = int(np.searchsorted(np.cumsum(np.sort(p)[::-1]), 0.9)) + 1
    print(f"tau {tau}: p_max {p.max():.2f}, entropy {entropy:.2f} nats, {cover} tokens hold 90% of the mass")
probs = softmax(z)
print("top 5 at tau 1:", [(tok.decode([i]), round(float(probs[i]), 3)) for i in np.argsort(-probs)[:5]])

# %% [markdown]
# ## 5. Truncation: top-k, top-p, min-p, by hand
# Each keeps a set of likely tokens, zeroes the rest and renormalises.
# top-k: the k most likely. top-p: the fewest most-likely tokens whose mass reaches p.
# min-p: tokens at least min_p times as likely as the most likely one.

# %%
def keep_top_k(p, k):
    keep = np.zeros(p.size, bool)
    keep[np.argsort(-p)[:k]] = True
    return keep


def keep_top_p(p, top_p):
    order = np.argsort(-p, kind="stable")
    n = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1  # first prefix whose mass reaches top_p
    keep = np.zeros(p.size, bool)
    keep[order[:n]] = True
    return keep


def keep_min_p(p, min_p):
    return p >= min_p * p.max()


def renormalise(p, keep):
    q = np.where(keep, p, 0.0)
    return q / q.sum()


diff_filters = 0.0
for name, keep, kwargs in [("top-k 5", keep_top_k(probs, 5), dict(top_k=5)),
                           ("top-p 0.9", keep_top_p(probs, 0.9), dict(top_p=0.9)),
                           ("min-p 0.1", keep_min_p(probs, 0.1), dict(min_p=0.1))]:
    mine, pkg = renormalise(probs, keep), filter_probs(probs, **kwargs)
    diff_filters = max(diff_filters, np.abs(mine - pkg).max())
    print(f"{name:10} keeps {keep.sum():4} tokens; largest kept now {mine.max():.2f} | vs package "
          f"{np.abs(mine - pkg).max():.0e}")

# %% [markdown]
# ## 6. A seeded sample
# Sampling draws from the filtered distribution with a random generator; a seed makes the
# draw reproducible. Our hand pipeline and `sample_next` use the same generator and agree.

# %%
params = SamplingParams(temperature=0.8, top_p=0.9, seed=0)
rng_pkg, rng_mine = np.random.default_rng(params.seed), np.random.default_rng(params.seed)
pkg_draws = [sample_next(full[-1], params, rng_pkg) for _ in range(20)]
p = renormalise(softmax(z / 0.8), keep_top_p(softmax(z / 0.8), 0.9))
my_draws = [int(rng_mine.choice(p.size, p=p)) for _ in range(20)]
print("20 seeded draws:", " ".join(tok.decode([t]) for t in pkg_draws))
print("same draws by hand:", my_draws == pkg_draws)

# %% [markdown]
# ## 7. Greedy: the answer
# temperature 0 is argmax at every step; the reply stops at <|im_end|>.

# %%
reply = lm.chat(question, max_new_tokens=16)
print(repr(reply))

# %% [markdown]
# ## Check

# %%
if diff_hand > 2e-3 or diff_pkg > 2e-3:
    raise AssertionError(f"cached decoding differs from the full forward: hand {diff_hand}, package {diff_pkg}")
if slow != fast:
    raise AssertionError(f"cached and uncached greedy differ: {slow} vs {fast}")
if diff_filters > 1e-12 or my_draws != pkg_draws:
    raise AssertionError(f"sampling differs from the package: filters {diff_filters}, draws {my_draws} vs {pkg_draws}")
if "Paris" not in reply:
    raise AssertionError(f"the greedy reply does not name Paris: {reply!r}")
print(f"OK max|diff| = {max(diff_hand, diff_pkg):.1e} (cached vs full forward, every position); "
      f"cache {(t1 - t0) / (t2 - t1):.1f}x faster for {N} tokens; reply {reply!r}")
