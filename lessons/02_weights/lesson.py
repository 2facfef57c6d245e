# %% [markdown]
# # Lesson 02: the weights
#
# What the 134.5M numbers are, how they are stored (bf16 on the hub; Q8_0 and Q4_1
# blocks in the GGUF), why llama.cpp's files carry Q and K permuted, and what 4-bit
# storage costs. The derivation is in README.md beside this file.

# %%
import os

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import quantize

import nanoagent
from nanoagent.layers import rope_tables
from nanoagent.checkpoint import bf16_to_f32
from nanoagent.weights import dequantize_q4_1, dequantize_q8_0, unpermute_qk

QUICK = os.environ.get("NANOAGENT_LESSON_QUICK") == "1"
Q8_0, Q4_1 = GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_1

lm = nanoagent.load()  # the network and its tokenizer (an HF folder under weights/, obtained on first use)
model, tok = lm.model, lm.tokenizer
params, cfg = model.params, model.config
C, F, H, KV, D = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

# %% [markdown]
# ## 1. Shapes and the parameter count
# A flat dict keyed by Hugging Face's names. Linear weights are (out, in).

# %%
for name, a in params.items():
    if name.startswith("model.layers.") and not name.startswith("model.layers.0."):
        continue
    print(f"{name:45} {str(a.shape):14} {a.size:>12,}")
print("... and the same nine tensors for layers 1 to", cfg.num_hidden_layers - 1)

per_block = sum(params[f"model.layers.0.{n}"].size for n in
                ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                 "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                 "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"])
by_hand = cfg.vocab_size * C + cfg.num_hidden_layers * per_block + C  # embedding + blocks + final norm
counted = model.num_params()
print(f"V*C + L*block + C = {cfg.vocab_size * C:,} + {cfg.num_hidden_layers} * {per_block:,} + {C} = {by_hand:,}")
print(f"the model holds {counted:,} parameters ({counted / 1e6:.1f}M); "
      f"embedding {cfg.vocab_size * C / counted:.0%}, MLPs {3 * C * F * cfg.num_hidden_layers / counted:.0%}")

# %% [markdown]
# ## 2. bfloat16: the top half of a float32
# The hub stores each weight in 16 bits: sign, the full 8-bit exponent, 7 mantissa bits.
# Widening to float32 appends 16 zero bits, so it is exact.

# %%
w = params["model.layers.0.self_attn.q_proj.weight"][0, :4].copy()  # (4,) float32
top = (w.view(np.uint32) >> 16).astype(np.uint16)  # keep sign, exponent, 7 mantissa bits (truncating)
print(w, "->", bf16_to_f32(top), "relative change", np.abs(bf16_to_f32(top) / w - 1).max())

# %% [markdown]
# ## 3. Which copy is this?
# A quantized tensor that is quantized again in the same format comes back unchanged: its
# values already sit on that format's grid. That fingerprint tells the two sources apart.

# %%
def roundtrip(w, kind):
    """w (R, K) -> the same weights after quantizing in `kind` and dequantizing with our code."""
    raw = quantize(np.ascontiguousarray(w, dtype=np.float32), kind)  # (R, K/32 * bytes per block) uint8
    return dequantize_q8_0(raw) if kind == Q8_0 else dequantize_q4_1(raw)


def rel_error(w, kind):
    """||w - roundtrip(w)|| / ||w||."""
    return float(np.linalg.norm(w - roundtrip(w, kind)) / np.linalg.norm(w))


emb = params["model.embed_tokens.weight"]  # (V, C)
q0 = params["model.layers.0.self_attn.q_proj.weight"]  # (H*D, C)
is_bf16 = all(not np.any(a.view(np.uint32) & 0xFFFF) for a in params.values())
from_gguf = rel_error(emb[:512], Q8_0) == 0 and rel_error(q0, Q4_1) == 0
print("hub (bf16)" if is_bf16 else "GGUF (Q8_0 embedding, Q4_1 linear layers)" if from_gguf else "another source")

# %% [markdown]
# ## 4. A Q8_0 block by hand (how the GGUF stores the embedding)
# 34 bytes per 32 weights: a float16 scale d, then 32 int8 values; weight = d * q.

# %%
paris = tok.encode(" Paris")[0]
block = emb[paris, :32].copy()  # (32,) the first block of the row of " Paris"

d = np.abs(block).max() / 127  # the largest weight maps to +-127
q = np.sign(block / d) * np.floor(np.abs(block * (1 / d)) + 0.5)  # round half away from zero, like ggml
mine = np.concatenate([np.float16(d).reshape(1).view(np.uint8), q.astype(np.int8).view(np.uint8)])  # (34,)
raw = quantize(block[None], Q8_0)[0]  # (34,) the gguf library's block
print("bytes:", raw.size, " d =", raw[:2].view(np.float16)[0], " q[:8] =", raw[2:10].view(np.int8))

scale = raw[:2].view(np.float16).astype(np.float32)  # (1,)
by_hand_q8 = scale * raw[2:].view(np.int8).astype(np.float32)  # (32,)
diff_q8 = np.abs(by_hand_q8 - dequantize_q8_0(raw[None])[0]).max()
print("my bytes == gguf's:", np.array_equal(mine, raw), "| hand vs nanoagent max|diff| =", diff_q8,
      "| max|w - w_q| =", np.abs(by_hand_q8 - block).max())

# %% [markdown]
# ## 5. A Q4_1 block by hand (how the GGUF stores every linear layer)
# 20 bytes per 32 weights: float16 scale d, float16 minimum m, 16 bytes of 4-bit values.
# Weight j < 16 is the low nibble of byte j, weight 16 + j its high nibble; weight = d*q + m.

# %%
block = params["model.layers.0.mlp.gate_proj.weight"][0, :32].copy()  # (32,)

lo, hi = block.min(), block.max()
d = (hi - lo) / 15  # 16 levels from the minimum to the maximum
q = np.clip(np.trunc((block - lo) * (1 / d) + np.float32(0.5)), 0, 15).astype(np.uint8)  # (32,) in 0..15
packed = q[:16] | (q[16:] << 4)  # (16,) two weights per byte
mine = np.concatenate([np.float16(d).reshape(1).view(np.uint8), np.float16(lo).reshape(1).view(np.uint8), packed])
raw = quantize(block[None], Q4_1)[0]  # (20,)
print("bytes:", raw.size, " d =", raw[:2].view(np.float16)[0], " m =", raw[2:4].view(np.float16)[0],
      " first bytes:", [f"{b:02x}" for b in raw[4:8]])

dd, mm = (raw[i:i + 2].view(np.float16).astype(np.float32) for i in (0, 2))
nibbles = np.concatenate([raw[4:] & 0x0F, raw[4:] >> 4]).astype(np.float32)  # (32,) weights 0..15, then 16..31
by_hand_q4 = dd * nibbles + mm
diff_q4 = np.abs(by_hand_q4 - dequantize_q4_1(raw[None])[0]).max()
print("my bytes == gguf's:", np.array_equal(mine, raw), "| hand vs nanoagent max|diff| =", diff_q4,
      "| max|w - w_q| =", np.abs(by_hand_q4 - block).max())
print(f"bits per weight: Q8_0 {34 * 8 / 32}, Q4_1 {20 * 8 / 32}, bf16 16, float32 32")

# %% [markdown]
# ## 6. What 4 bits cost, measured
# Each tensor quantized in each format and back; relative error ||w - w_q|| / ||w||. A
# format applied to the tensor that was stored in it gives 0 if this copy came from the
# GGUF (section 3); the other cells are the genuine cost. The embedding is subsampled.

# %%
rows = slice(None, None, 24 if QUICK else 6)  # every 6th (quick: 24th) embedding row
tensors = {"embedding (V,C)": emb[rows], "layer 0 q_proj (H*D,C)": q0,
           "layer 15 down_proj (C,F)": params["model.layers.15.mlp.down_proj.weight"]}
table = {name: (rel_error(w, Q8_0), rel_error(w, Q4_1)) for name, w in tensors.items()}
print(f"{'tensor':28} {'Q8_0':>8} {'Q4_1':>8}")
for name, (e8, e4) in table.items():
    print(f"{name:28} {e8:8.2%} {e4:8.2%}")
q4_cost = table["embedding (V,C)"][1]  # Q4_1 on the tensor that was Q8_0 (or bf16)
q8_cost = max(table["layer 0 q_proj (H*D,C)"][0], table["layer 15 down_proj (C,F)"][0])  # Q8_0 on Q4_1 tensors
print(f"4-bit costs {q4_cost / q8_cost:.0f}x the error of 8-bit")

# %% [markdown]
# ## 7. The Q/K permutation
# HF's RoPE rotates dimension i of a head together with i + D/2 ("rotate half");
# llama.cpp rotates neighbours 2i and 2i+1 ("interleaved"). Its converter reorders the rows
# of q_proj and k_proj so that its neighbours are HF's pairs: row 2i <- i, row 2i+1 <- i + D/2.

# %%
def permute_like_llama_cpp(w, n_heads):
    """w (n*D, C) in HF's row order -> llama.cpp's order, head by head."""
    return w.reshape(n_heads, 2, -1, w.shape[1]).swapaxes(1, 2).reshape(w.shape)  # (n,2,D/2,C) -> (n,D/2,2,C)


print("row order of one head with D = 8:", permute_like_llama_cpp(np.arange(8.0)[:, None], 1).ravel().astype(int))


def rope_rotate_half(x, cos, sin):
    """x (T,n,D), cos/sin (T,D/2) -> pairs (i, i+D/2) rotated."""
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    c, s = cos[:, None], sin[:, None]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def rope_interleaved(x, cos, sin):
    """x (T,n,D), cos/sin (T,D/2) -> pairs (2i, 2i+1) rotated."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None], sin[:, None]
    return np.stack([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(x.shape)


def scores(wq, wk, rope, x):
    """x (T,C) -> q.k scores (H,T,T) of every query head with its KV head, after RoPE."""
    T = x.shape[0]
    cos, sin = rope_tables(D, T, cfg.rope_theta)
    q = rope((x @ wq.T).reshape(T, H, D), cos, sin)  # (T,H,D)
    k = rope((x @ wk.T).reshape(T, KV, D), cos, sin)  # (T,KV,D)
    k = np.repeat(k, H // KV, axis=1)  # (T,KV,D) -> (T,H,D)
    return np.einsum("thd,shd->hts", q, k)


x = emb[tok.encode("The capital of France is Paris.")]  # (T,C) real inputs
wq, wk = params["model.layers.0.self_attn.q_proj.weight"], params["model.layers.0.self_attn.k_proj.weight"]
wq_gguf, wk_gguf = permute_like_llama_cpp(wq, H), permute_like_llama_cpp(wk, KV)

hf = scores(wq, wk, rope_rotate_half, x)
llama_cpp = scores(wq_gguf, wk_gguf, rope_interleaved, x)  # permuted rows + interleaved RoPE
wrong = scores(wq_gguf, wk_gguf, rope_rotate_half, x)  # permuted rows, HF's RoPE: the bug to avoid
perm_diff = np.abs(hf - llama_cpp).max() / np.abs(hf).max()
print(f"HF vs llama.cpp layout: relative max|diff| = {perm_diff:.1e}; "
      f"forgetting to un-permute: {np.abs(hf - wrong).max() / np.abs(hf).max():.2f}")
unpermuted = np.array_equal(unpermute_qk(wq_gguf, H), wq) and np.array_equal(unpermute_qk(wk_gguf, KV), wk)
print("nanoagent.weights.unpermute_qk restores both exactly:", unpermuted)

# %% [markdown]
# ## Check

# %%
if by_hand != counted or counted != 134_515_008:
    raise AssertionError(f"parameter count {counted:,}, by hand {by_hand:,}, expected 134,515,008")
if diff_q8 != 0 or diff_q4 != 0:
    raise AssertionError(f"hand dequantization differs from nanoagent's: Q8_0 {diff_q8}, Q4_1 {diff_q4}")
if not unpermuted or perm_diff > 1e-5:
    raise AssertionError(f"the Q/K permutation does not round-trip (relative diff {perm_diff:.1e})")
if not q4_cost > 5 * q8_cost > 0:
    raise AssertionError(f"Q4_1 error {q4_cost:.2%} is not well above Q8_0's {q8_cost:.2%}")
print(f"OK {counted:,} parameters; hand dequantization max|diff| = {max(diff_q8, diff_q4)}; "
      f"Q4_1 error {q4_cost:.2%} vs Q8_0 {q8_cost:.2%}; permuted Q/K scores relative diff {perm_diff:.0e}")
