# %% [markdown]
# # Lesson 03: RMSNorm
#
# y = x / sqrt(mean(x^2) + eps) * w, row by row. Written by hand, checked on the real
# input of the first block against `nanoagent.layers.rmsnorm_forward` (a Numba kernel)
# and its NumPy twin. The derivation is in README.md beside this file.

# %%
import numpy as np

import nanoagent
from nanoagent import kernels
from nanoagent.layers import rmsnorm_forward

lm = nanoagent.load()  # the network and its tokenizer (an HF folder under weights/, obtained on first use)
model, tok = lm.model, lm.tokenizer
params, cfg = model.params, model.config
eps = cfg.rms_norm_eps  # 1e-5, from config.json

# %% [markdown]
# ## 1. The input: token embeddings of a real prompt
# The first thing every block does is normalise its input; for block 0 that input is
# the embedding rows of the prompt's tokens.

# %%
prompt = tok.render_chat([{"role": "user", "content": "What is the capital of France?"}])
ids = np.array(tok.encode(prompt))[None]  # (B,T) = (1,37)
x = params["model.embed_tokens.weight"][ids]  # (B,T,C)
w = params["model.layers.0.input_layernorm.weight"]  # (C,)
print("x", x.shape, "w", w.shape)

# %% [markdown]
# ## 2. RMSNorm by hand

# %%
def rmsnorm(x, w, eps):
    """x (...,C), w (C,) -> y (...,C): each row divided by its root mean square, then scaled per channel."""
    ms = np.mean(x * x, axis=-1, keepdims=True)  # (...,1) mean square of each row
    return x / np.sqrt(ms + eps) * w


y = rmsnorm(x, w, eps)  # (B,T,C)
rms = lambda a: np.sqrt(np.mean(a * a, axis=-1))  # (...,C) -> (...)
print("rms of the rows before:", rms(x[0, :5]).round(4))
print("after, without w:      ", rms(rmsnorm(x, np.ones_like(w), eps)[0, :5]).round(4))
print("after, with w:         ", rms(y[0, :5]).round(4), "  (rms of w itself:", rms(w).round(4), ")")

# %% [markdown]
# ## 3. Only the direction of a row survives
# Scaling a row by any a > 0 leaves the output unchanged, up to eps. eps matters only
# where mean(x^2) is not large against it: here it shrinks rows by sqrt(ms / (ms + eps)).

# %%
ms = np.mean(x * x, axis=-1)  # (B,T)
print(f"mean square of embedding rows: {ms.min():.1e} .. {ms.max():.1e}; "
      f"eps shrinks them by up to {1 - np.sqrt(ms / (ms + eps)).min():.2%}")
print(f"max|rmsnorm(3.7 x) - rmsnorm(x)| / max|y| = {np.abs(rmsnorm(3.7 * x, w, eps) - y).max() / np.abs(y).max():.2%}")

# %% [markdown]
# ## 4. The learned gains w
# 61 norms: before attention and before the MLP in each of the 30 blocks, and one at the end.

# %%
for name in ["model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
             "model.layers.29.post_attention_layernorm.weight", "model.norm.weight"]:
    g = params[name]
    print(f"{name:48} mean {g.mean():6.3f}  min {g.min():7.3f}  max {g.max():7.3f}")

# %% [markdown]
# ## 5. Against the package
# `rmsnorm_forward` runs the Numba kernel (one pass for the sum of squares, one for the
# output, no temporaries) and keeps rstd = 1/rms for the backward pass. The kernel's
# NumPy twin and a float64 evaluation of the formula are the other references.

# %%
y_pkg, cache = rmsnorm_forward(x, w, eps)  # (B,T,C), RMSNormCache(x, w, rstd (B*T,))
y_twin, rstd_twin = kernels.rmsnorm_ref(x.reshape(-1, cfg.hidden_size), w, eps)  # (B*T,C)
y64 = rmsnorm(x.astype(np.float64), w.astype(np.float64), eps)

diff_pkg = np.abs(y_pkg - y).max()
diff_twin = np.abs(y_twin.reshape(y.shape) - y_pkg).max()
diff_64 = np.abs(y_pkg - y64).max()
diff_rstd = np.abs(cache.rstd - 1 / np.sqrt(ms.reshape(-1) + eps)).max()
print(f"hand vs package {diff_pkg:.1e} | kernel vs twin {diff_twin:.1e} | package vs float64 {diff_64:.1e} "
      f"(outputs up to {np.abs(y).max():.1f})")

# %% [markdown]
# ## Check

# %%
scale = np.abs(y64).max()
if max(diff_pkg, diff_twin, diff_64) > 1e-6 * scale or diff_rstd > 1e-6 * cache.rstd.max():
    raise AssertionError(f"RMSNorm differs: hand {diff_pkg}, twin {diff_twin}, float64 {diff_64}, rstd {diff_rstd}")
print(f"OK max|diff| = {diff_pkg:.1e} (hand vs package), {diff_64:.1e} (package vs float64)")
