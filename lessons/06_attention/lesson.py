# %% [markdown]
# # Lesson 06: causal attention with grouped-query heads
#
# scores = q k^T / sqrt(D), keys after the query masked with -inf, softmax per row,
# out = probs v; 9 query heads share 3 key/value heads. By hand on the real queries,
# keys and values of block 0, against `nanoagent.layers.attention_forward`.
# The derivation is in README.md beside this file.

# %%
import numpy as np

import nanoagent
from nanoagent.layers import attention_forward, block_forward

lm = nanoagent.load()  # the network and its tokenizer (an HF folder under weights/, obtained on first use)
model, tok = lm.model, lm.tokenizer
params, cfg = model.params, model.config
H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
G = H // KV  # 3 query heads per KV head

# %% [markdown]
# ## 1. Real q, k, v
# We run block 0 with the package and take the rotated queries and keys and the values
# its attention used (lessons 04 and 05 built the projections and RoPE).

# %%
prompt = tok.render_chat([{"role": "user", "content": "What is the capital of France?"}])
ids = np.array(tok.encode(prompt))[None]  # (B,T)
B, T = ids.shape
x0 = params["model.embed_tokens.weight"][ids]  # (B,T,C)
_, cache = block_forward(x0, model.blocks[0], H, KV, cfg.rms_norm_eps, model.cos[:T], model.sin[:T])
q, k, v = cache.attn.q, cache.attn.k, cache.attn.v  # (B,H,T,D), (B,KV,T,D), (B,KV,T,D)
print("q", q.shape, " k", k.shape, " v", v.shape)

# %% [markdown]
# ## 2. Why divide by sqrt(D)
# A dot product of D independent unit-variance numbers has variance D. Dividing by sqrt(D)
# keeps the scores near unit scale, so the softmax starts neither flat nor one-hot.

# %%
rng = np.random.default_rng(0)
a, b = rng.standard_normal((2, 10000, D))
print(f"std of a.b over D = {D}: {np.std(np.sum(a * b, -1)):.2f}; after / sqrt(D): "
      f"{np.std(np.sum(a * b, -1)) / np.sqrt(D):.2f}")

# %% [markdown]
# ## 3. Attention by hand
# Query head h reads KV head h // G, so we repeat each KV head G times (HF's repeat_kv).
# The mask adds -inf above the diagonal: exp(-inf) = 0 exactly, and every row keeps at
# least its own position, so no row is all -inf.

# %%
def softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))  # subtract the row max: no overflow
    return e / e.sum(axis=-1, keepdims=True)


def attention(q, k, v):
    """q (B,H,T,D), k/v (B,KV,T,D) -> out (B,H,T,D), probs (B,H,T,T)."""
    T, D = q.shape[-2:]
    kk = np.repeat(k, q.shape[1] // k.shape[1], axis=1)  # (B,KV,T,D) -> (B,H,T,D), head h <- h // G
    vv = np.repeat(v, q.shape[1] // v.shape[1], axis=1)
    scores = q @ kk.swapaxes(-1, -2) / np.sqrt(D)  # (B,H,T,D) @ (B,H,D,T) -> (B,H,T,T)
    mask = np.triu(np.full((T, T), -np.inf), k=1)  # (T,T): -inf where key s > query t
    probs = softmax(scores + mask)  # (B,H,T,T)
    return probs @ vv, probs  # (B,H,T,T) @ (B,H,T,D) -> (B,H,T,D)


out, probs = attention(q, k, v)
np.set_printoptions(precision=2, suppress=True)
print("head 0, first 6 queries x 6 keys:\n", probs[0, 0, :6, :6])
print("rows sum to 1:", np.allclose(probs.sum(-1), 1), "| above the diagonal exactly 0:",
      not np.any(np.triu(probs[0, 0], 1)))

# %% [markdown]
# ## 4. Where the heads look, block by block
# For queries from position 8 on, the average weight on the first token and on the query's
# own token. We run the first six blocks with the package to see the pattern change: from
# block 3 on, most heads put over half their weight on the first token, an "attention
# sink" where a head parks attention it has no better use for.

# %%
x = x0
for layer in range(6):
    x, c = block_forward(x, model.blocks[layer], H, KV, cfg.rms_norm_eps, model.cos[:T], model.sin[:T])
    p = c.attn.full_probs()[0, :, 8:]  # (H,T-8,T) queries 8..T-1
    on_first = p[..., 0].mean(-1)  # (H,)
    on_self = np.stack([np.diagonal(ph, offset=8) for ph in p]).mean(-1)  # (H,) query 8+i on key 8+i
    print(f"block {layer}: first token {on_first.mean():.2f} (heads {on_first.min():.2f}..{on_first.max():.2f}), "
          f"own token {on_self.mean():.2f}")

# %% [markdown]
# ## 5. Causality: later tokens change nothing before them
# Attention over the first 20 tokens alone gives the same outputs for those tokens.

# %%
out20, _ = attention(q[:, :, :20], k[:, :, :20], v[:, :, :20])
diff_prefix = np.abs(out20 - out[:, :, :20]).max()
print(f"prefix of 20: max|diff| = {diff_prefix:.1e}")

# %% [markdown]
# ## 6. Against the package
# `attention_forward` groups the heads by reshaping instead of copying k and v, and runs
# the mask and softmax in one Numba kernel that skips the masked keys. For long inputs it
# takes the queries in blocks of 128 and stops each block's scores at its last query's key,
# so the keys masked for the whole block are never multiplied (`full_probs` lays the blocks'
# probabilities back into one matrix).

# %%
out_pkg, attn_cache = attention_forward(q, k, v)
out64, probs64 = attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
diff_out = np.abs(out_pkg - out).max()
pkg_probs = attn_cache.full_probs()
diff_probs = np.abs(pkg_probs - probs).max()
print(f"out: hand vs package {diff_out:.1e}, package vs float64 {np.abs(out_pkg - out64).max():.1e} "
      f"(|out| up to {np.abs(out64).max():.2f}) | probs: hand vs package {diff_probs:.1e}")
print(f"KV cache per token: {2 * cfg.num_hidden_layers * KV * D * 4:,} bytes with {KV} KV heads, "
      f"{2 * cfg.num_hidden_layers * H * D * 4:,} if every query head had its own")

# %% [markdown]
# ## Check

# %%
scale = np.abs(out64).max()
if max(diff_out, np.abs(out_pkg - out64).max()) > 1e-5 * scale or diff_probs > 1e-5 or diff_prefix > 1e-6 * scale:
    raise AssertionError(f"attention differs: out {diff_out}, probs {diff_probs}, prefix {diff_prefix}")
if np.any(np.triu(pkg_probs, 1)):
    raise AssertionError("a query attended to a later key")
print(f"OK max|diff| = {diff_out:.1e} (hand vs attention_forward), probs {diff_probs:.1e}")
