# %% [markdown]
# # Lesson 05: rotary position embeddings (RoPE)
#
# Each head's query and key are rotated in D/2 planes by angles proportional to their
# position, so that q . k depends on positions only through their difference. HF's
# "rotate half" layout, theta = 100000. The derivation is in README.md beside this file.

# %%
import numpy as np

import nanoagent
from nanoagent.layers import block_forward, rope_forward, rope_tables

lm = nanoagent.load()  # the network and its tokenizer (an HF folder under weights/, obtained on first use)
model, tok = lm.model, lm.tokenizer
params, cfg = model.params, model.config
H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
theta, Tmax = cfg.rope_theta, cfg.max_position_embeddings  # 100000, 8192

# %% [markdown]
# ## 1. Frequencies and the cos/sin tables
# Plane i (dimensions i and i + D/2) turns by theta^(-2i/D) radians per position: the
# first plane once every 6.3 positions, the last one once every ~440,000.

# %%
inv_freq = theta ** (-np.arange(0, D, 2, dtype=np.float64) / D)  # (D/2,) radians per position
angles = np.outer(np.arange(Tmax, dtype=np.float64), inv_freq)  # (Tmax, D/2)
cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)  # (Tmax, D/2)

for i in (0, 8, 16, 24, 31):
    print(f"plane {i:2}: {inv_freq[i]:.2e} rad/position, wavelength {2 * np.pi / inv_freq[i]:>11,.1f} positions")
cos_pkg, sin_pkg = rope_tables(D, Tmax, theta)
diff_tables = max(np.abs(cos - cos_pkg).max(), np.abs(sin - sin_pkg).max())
print("tables vs rope_tables: max|diff| =", diff_tables)

# %% [markdown]
# ## 2. Why the angles are computed in float64
# At position 8000 the angle of plane 0 is 8000 rad; float32 spaces numbers that large
# 0.0005 apart, and the rounding shows up in cos and sin.

# %%
angles32 = np.outer(np.arange(Tmax, dtype=np.float32), inv_freq.astype(np.float32))  # (Tmax, D/2) in float32
print(f"max|cos(float32 angles) - cos(float64 angles)| = {np.abs(np.cos(angles32) - np.cos(angles)).max():.1e}")

# %% [markdown]
# ## 3. The real queries of block 0, before RoPE
# We run block 0 with the package and keep its cache: `cache.q.x` is the normed input h,
# and `cache.attn.q` the rotated queries that attention used.

# %%
prompt = tok.render_chat([{"role": "user", "content": "What is the capital of France?"}])
ids = np.array(tok.encode(prompt))[None]  # (B,T)
B, T = ids.shape
x0 = params["model.embed_tokens.weight"][ids]  # (B,T,C)
_, cache = block_forward(x0, model.blocks[0], H, KV, cfg.rms_norm_eps, cos_pkg[:T], sin_pkg[:T])
h = cache.q.x  # (B,T,C)
q = (h @ model.blocks[0].q.T).reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B,T,H*D) -> (B,H,T,D)
print("q", q.shape)

# %% [markdown]
# ## 4. RoPE by hand, rotate-half layout
# x1 = x[:D/2], x2 = x[D/2:]; each (x1[i], x2[i]) pair turns by angle p * inv_freq[i]:
# y = x * [cos, cos] + rotate_half(x) * [sin, sin], with rotate_half(x) = [-x2, x1].

# %%
def rotate_half(x):
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    return np.concatenate([-x2, x1], axis=-1)


def rope(x, cos, sin):
    """x (...,T,D), cos/sin (T,D/2) -> x rotated at positions 0..T-1."""
    c, s = np.concatenate([cos, cos], -1), np.concatenate([sin, sin], -1)  # (T,D)
    return x * c + rotate_half(x) * s


q_rot = rope(q, cos[:T], sin[:T])  # (B,H,T,D)
q_pkg, _ = rope_forward(q, cos_pkg[:T], sin_pkg[:T])  # the Numba kernel
diff_rope = np.abs(q_rot - q_pkg).max()
diff_block = np.abs(q_rot - cache.attn.q).max()
pair_len = lambda a: np.hypot(a[..., :D // 2], a[..., D // 2:])  # (...,D/2) length of each pair
print(f"hand vs rope_forward {diff_rope:.1e} | hand vs block 0's queries {diff_block:.1e} | "
      f"pair lengths kept to {np.abs(pair_len(q_rot) - pair_len(q)).max():.1e}")

# %% [markdown]
# ## 5. The same thing as complex numbers
# Pair i is z = x1[i] + j x2[i]; rotating it is multiplying by exp(j p inv_freq[i]).

# %%
z = q[..., :D // 2] + 1j * q[..., D // 2:]  # (B,H,T,D/2) complex
z_rot = z * np.exp(1j * angles[:T])  # (T,D/2) broadcasts over B, H
diff_complex = max(np.abs(z_rot.real - q_rot[..., :D // 2]).max(), np.abs(z_rot.imag - q_rot[..., D // 2:]).max())
print(f"complex view vs rotate-half: max|diff| = {diff_complex:.1e}")

# %% [markdown]
# ## 6. Scores depend only on the offset
# A query at position p and a key at position s: R(p)q . R(s)k = q . R(s - p)k. We fix one
# real query vector and one real key vector (float64) and move both along the sequence.

# %%
qv = q[0, 0, 5].astype(np.float64)  # (D,) head 0, token 5
kv = (h[0, 9] @ model.blocks[0].k.T)[:D].astype(np.float64)  # (D,) KV head 0, token 9


def score(p, s):
    """q rotated to position p, dotted with k rotated to position s."""
    return rope(qv, np.cos(angles[p]), np.sin(angles[p])) @ rope(kv, np.cos(angles[s]), np.sin(angles[s]))


for offset in (0, 1, 10, 100):
    row = [score(s + offset, s) for s in (0, 37, 1000, 8000)]
    print(f"offset {offset:3}: scores at s = 0, 37, 1000, 8000 -> {np.round(row, 10)}")
same_offset = [score(s + 10, s) for s in range(0, Tmax - 10, 97)]
spread = (max(same_offset) - min(same_offset)) / abs(same_offset[0])
print(f"offset 10 at {len(same_offset)} positions: relative spread {spread:.1e}")

# %% [markdown]
# ## Check

# %%
scale = np.abs(q_pkg).max()
if diff_tables > 0 or max(diff_rope, diff_block, diff_complex) > 1e-6 * scale:
    raise AssertionError(f"RoPE differs: tables {diff_tables}, package {diff_rope}, block {diff_block}, "
                         f"complex {diff_complex}")
if spread > 1e-10:
    raise AssertionError(f"scores at one offset vary by {spread:.1e}: not a function of the offset alone")
print(f"OK max|diff| = {diff_rope:.1e} (hand vs rope_forward); same-offset scores agree to {spread:.0e}")
