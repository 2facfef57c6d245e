# %% [markdown]
# # Lesson 04: linear layers and the SwiGLU MLP
#
# y = x W^T with W stored (out, in); silu(z) = z sigmoid(z); the MLP
# down(silu(gate(h)) * up(h)) of the real first block, by hand against the package.
# The derivation is in README.md beside this file.

# %%
import numpy as np

import nanoagent
from nanoagent.layers import block_forward, linear_forward, swiglu_forward

lm = nanoagent.load()  # the network and its tokenizer (an HF folder under weights/, obtained on first use)
model, tok = lm.model, lm.tokenizer
params, cfg = model.params, model.config
C, F = cfg.hidden_size, cfg.intermediate_size

# %% [markdown]
# ## 1. The real input of block 0's MLP
# We run block 0 once with the package and keep its cache: `cache.gate.x` is the normed
# hidden state h the MLP reads, `cache.norm2.x` the residual stream before the MLP is added.

# %%
prompt = tok.render_chat([{"role": "user", "content": "What is the capital of France?"}])
ids = np.array(tok.encode(prompt))[None]  # (B,T)
T = ids.shape[1]
x0 = params["model.embed_tokens.weight"][ids]  # (B,T,C)
out0, cache = block_forward(x0, model.blocks[0], cfg.num_attention_heads, cfg.num_key_value_heads,
                            cfg.rms_norm_eps, model.cos[:T], model.sin[:T])
h = cache.gate.x  # (B,T,C) rmsnorm(x1), the MLP's input
mlp_out = out0 - cache.norm2.x  # (B,T,C) what the MLP added to the residual stream
print("h", h.shape, " MLP output", mlp_out.shape)

# %% [markdown]
# ## 2. A linear layer: y = x W^T
# W is stored (out, in): row f of W is the weight vector of output f, and y[f] = x . W[f].
# No bias anywhere in SmolLM2.

# %%
W_gate = params["model.layers.0.mlp.gate_proj.weight"]  # (F,C)
g = h @ W_gate.T  # (B,T,C) @ (C,F) -> (B,T,F)
g_loops = np.einsum("btc,fc->btf", h, W_gate)  # the same sum, spelled out
one = float(h[0, 5] @ W_gate[7])  # output 7 of token 5: one dot product
print(W_gate.shape, "->", g.shape, "| g[0,5,7] =", round(float(g[0, 5, 7]), 5), "=", round(one, 5))
print("W^T is a view of W, not a copy:", np.shares_memory(W_gate.T, W_gate))
print(f"cost: {2 * C * F / 1e6:.2f} MFLOP per token for this layer")

# %% [markdown]
# ## 3. SiLU: z * sigmoid(z)
# Smooth, close to ReLU for |z| large, slightly negative for z < 0 with a minimum near z = -1.28.

# %%
def silu(z):
    return z / (1.0 + np.exp(-z))  # z * sigmoid(z)


z = np.linspace(-6, 6, 120001)
print("z       " + " ".join(f"{v:7.2f}" for v in (-6, -3, -1.28, -0.5, 0, 0.5, 1, 3, 6)))
print("silu(z) " + " ".join(f"{silu(v):7.3f}" for v in (-6, -3, -1.28, -0.5, 0, 0.5, 1, 3, 6)))
print(f"minimum {silu(z).min():.4f} at z = {z[np.argmin(silu(z))]:.3f}")

# %% [markdown]
# ## 4. SwiGLU by hand
# gate and up read the same h; the gate, through silu, scales each of the F channels of up;
# down brings the F channels back to C.

# %%
W_up = params["model.layers.0.mlp.up_proj.weight"]  # (F,C)
W_down = params["model.layers.0.mlp.down_proj.weight"]  # (C,F)

g = h @ W_gate.T  # (B,T,F)
u = h @ W_up.T  # (B,T,F)
m = silu(g) * u  # (B,T,F)
y = m @ W_down.T  # (B,T,F) @ (F,C) -> (B,T,C)
print("h", h.shape, "-> g, u", g.shape, "-> m", m.shape, "-> y", y.shape)
print(f"{(g < 0).mean():.0%} of gate values are negative; {(np.abs(silu(g)) < 0.1).mean():.0%} of the "
      f"T*F channels are nearly closed (|silu(g)| < 0.1)")
print(f"parameters in one MLP: 3 * C * F = {3 * C * F:,}")

# %% [markdown]
# ## 5. Against the package
# `linear_forward` is the one BLAS matmul on the stored W; `swiglu_forward` the fused
# Numba kernel for silu(g) * u. Both give back (out, cache) for the backward pass.

# %%
g_pkg, _ = linear_forward(h, W_gate)
u_pkg, _ = linear_forward(h, W_up)
m_pkg, _ = swiglu_forward(g_pkg, u_pkg)
y_pkg, _ = linear_forward(m_pkg, W_down)

h64 = h.astype(np.float64)  # float64 reference of the whole MLP
y64 = (silu(h64 @ W_gate.T.astype(np.float64)) * (h64 @ W_up.T.astype(np.float64))) @ W_down.T.astype(np.float64)

diff_linear = np.abs(g_pkg - g_loops).max()
diff_swiglu = np.abs(m_pkg - m).max()
diff_mlp = np.abs(y_pkg - y).max()
diff_block = np.abs(mlp_out - y).max()  # the block also added x1, which rounds in float32
print(f"linear vs einsum {diff_linear:.1e} | swiglu kernel vs hand {diff_swiglu:.1e} | "
      f"MLP package vs hand {diff_mlp:.1e} | inside block 0 vs hand {diff_block:.1e} | "
      f"package vs float64 {np.abs(y_pkg - y64).max():.1e}  (|y| up to {np.abs(y64).max():.2f})")

# %% [markdown]
# ## Check

# %%
scale = np.abs(y64).max()
worst = max(diff_mlp, np.abs(y_pkg - y64).max(), diff_block)
if worst > 1e-5 * scale or diff_swiglu > 1e-5 * np.abs(m).max() or diff_linear > 1e-5 * np.abs(g).max():
    raise AssertionError(f"MLP differs: linear {diff_linear}, swiglu {diff_swiglu}, mlp {diff_mlp}, block {diff_block}")
print(f"OK max|diff| = {diff_mlp:.1e} (hand vs package SwiGLU MLP of block 0), {worst / scale:.0e} relative")
