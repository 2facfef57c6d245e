# %% [markdown]
# # Lesson 11: the backward pass, checked layer by layer
#
# Every layer's `*_backward(dout, cache)` against central finite differences in float64,
# with a random upstream gradient, random non-unit parameters and tiny shapes; then the
# whole model with the loss. The derivations are in README.md beside this file.

# %%
import os

import numpy as np

from nanoagent import layers
from nanoagent.gradcheck import numeric_grad, rel_err  # central differences, shared with the tests
from nanoagent.config import ModelConfig
from nanoagent.loss import lm_head_loss
from nanoagent.model import Model

rng = np.random.default_rng(0)
B, T, C, H, KV, F, V = 2, 5, 8, 2, 1, 12, 11  # tiny: head dim D = C / H = 4
D, eps = C // H, 1e-5
QUICK = os.environ.get("NANOAGENT_LESSON_QUICK") == "1"  # the whole-model check on a sample of entries


errors = {}


def check(name, f, pairs):
    """pairs: {input name: (array, analytic gradient)}; f() = sum(dout * layer(...))."""
    for k, (x, g) in pairs.items():
        errors[f"{name}.{k}"] = rel_err(g.reshape(-1), numeric_grad(f, x))
    print(f"{name:10s}", "  ".join(f"d{k}: {errors[f'{name}.{k}']:.0e}" for k in pairs))


# %% [markdown]
# ## 1. Linear and RMSNorm
# Linear: dx = dy W, dW = dy^T x. RMSNorm: dx = r (g - x̂ mean(g x̂)), g = dy w; dw = Σ dy x̂.

# %%
x, w, dout = rng.normal(size=(B, T, C)), rng.normal(size=(F, C)), rng.normal(size=(B, T, F))
_, cache = layers.linear_forward(x, w)
dx, dw = layers.linear_backward(dout, cache)
check("linear", lambda: np.sum(layers.linear_forward(x, w)[0] * dout), {"x": (x, dx), "w": (w, dw)})

x, w, dout = rng.normal(size=(B, T, C)), 1 + 0.3 * rng.normal(size=C), rng.normal(size=(B, T, C))
_, cache = layers.rmsnorm_forward(x, w, eps)
dx, dw = layers.rmsnorm_backward(dout, cache)
check("rmsnorm", lambda: np.sum(layers.rmsnorm_forward(x, w, eps)[0] * dout), {"x": (x, dx), "w": (w, dw)})

# by hand, the formula of the README, against the package
xhat = x * cache.rstd.reshape(B, T, 1)
g = dout * w
dx_hand = cache.rstd.reshape(B, T, 1) * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
errors["rmsnorm by hand"] = rel_err(dx_hand, dx)  # checked with the others at the end
print(f"rmsnorm by hand vs package: relative error {errors['rmsnorm by hand']:.0e}")

# %% [markdown]
# ## 2. Embedding (a scatter-add) and RoPE (rotate back by -theta)

# %%
ids = rng.integers(0, V, size=(B, T))
ids[1, 4] = ids[0, 0]  # one token twice: its row gets both gradients
wte, dout = rng.normal(size=(V, C)), rng.normal(size=(B, T, C))
_, cache = layers.embedding_forward(ids, wte)
check("embedding", lambda: np.sum(layers.embedding_forward(ids, wte)[0] * dout),
      {"W": (wte, layers.embedding_backward(dout, cache))})

cos, sin = layers.rope_tables(D, 32, 10000.0, np.float64)
cos, sin = cos[7:7 + T], sin[7:7 + T]  # positions 7..11: no zero angles
x, dout = rng.normal(size=(B, H, T, D)), rng.normal(size=(B, H, T, D))
_, cache = layers.rope_forward(x, cos, sin)
check("rope", lambda: np.sum(layers.rope_forward(x, cos, sin)[0] * dout), {"x": (x, layers.rope_backward(dout, cache))})

# %% [markdown]
# ## 3. Causal grouped-query attention, softmax included
# dv = p^T dout, dp = dout v^T, ds = p (dp - rowsum(p dp)), dq = ds k / sqrt(D), dk = ds^T q / sqrt(D);
# with 4 query heads over 2 KV heads, each KV head's gradient sums over its 2 query heads.

# %%
for heads, kv_heads in ((H, KV), (4, 2)):
    q = rng.normal(size=(B, heads, T, D))
    k, v = rng.normal(size=(B, kv_heads, T, D)), rng.normal(size=(B, kv_heads, T, D))
    dout = rng.normal(size=(B, heads, T, D))
    _, cache = layers.attention_forward(q, k, v)
    dq, dk, dv = layers.attention_backward(dout, cache)
    check(f"attn {heads}/{kv_heads}", lambda: np.sum(layers.attention_forward(q, k, v)[0] * dout),
          {"q": (q, dq), "k": (k, dk), "v": (v, dv)})

# %% [markdown]
# ## 4. SwiGLU and a whole block
# du = dy g σ(g), dg = dy u σ(g)(1 + g(1 - σ(g))). The block adds gradients where values fan
# out: the residual stream, h into q/k/v, h2 into gate/up.

# %%
g_, u_, dout = 2 * rng.normal(size=(B, T, F)), rng.normal(size=(B, T, F)), rng.normal(size=(B, T, F))
_, cache = layers.swiglu_forward(g_, u_)
dg, du = layers.swiglu_backward(dout, cache)
check("swiglu", lambda: np.sum(layers.swiglu_forward(g_, u_)[0] * dout), {"g": (g_, dg), "u": (u_, du)})

cfg = ModelConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=2,
                  num_attention_heads=H, num_key_value_heads=KV, max_position_embeddings=16)
params = {n: 0.5 * rng.normal(size=s) if len(s) == 2 else 1 + 0.3 * rng.normal(size=s)
          for n, s in cfg.param_shapes().items()}  # random, non-unit
w = layers.block_weights(params, 0)
cos, sin = layers.rope_tables(D, 16, cfg.rope_theta, np.float64)
x, dout = rng.normal(size=(B, T, C)), rng.normal(size=(B, T, C))
_, cache = layers.block_forward(x, w, H, KV, eps, cos[:T], sin[:T])
dx, dw, _ = layers.block_backward(dout, cache)
check("block", lambda: np.sum(layers.block_forward(x, w, H, KV, eps, cos[:T], sin[:T])[0] * dout),
      {"x": (x, dx), **{name.split(".")[-2]: (a, b) for name, a, b in zip(layers.BLOCK_NAMES, w, dw)}})

# %% [markdown]
# ## 5. The whole model with the loss
# Forward, DFT loss through the tied head (p held constant while differencing), backward;
# every parameter compared by name, so none is skipped.

# %%
model = Model(cfg, params)
ids = rng.integers(0, V, size=(B, T + 1))
mask = (rng.random((B, T)) < 0.7).astype(np.float64)
mask[:, 0] = 1
wte = params["model.embed_tokens.weight"]
h, caches = model.forward(ids[:, :-1])
out = lm_head_loss(h, wte, ids[:, 1:], mask, kind="dft")
grads = model.backward(out.dh, caches, {"model.embed_tokens.weight": out.dwte})
z = model.lm_head(h)
z = z - z.max(-1, keepdims=True)
p_fixed = np.exp(np.take_along_axis(z, ids[:, 1:, None], -1)[..., 0]) / np.exp(z).sum(-1)  # constant weights
loss = lambda: lm_head_loss(model.forward(ids[:, :-1])[0], wte, ids[:, 1:], mask, kind="dft", backward=False,
                            weight=p_fixed).loss
assert set(grads) == set(params)
model_err, checked = 0.0, 0
for n, x in params.items():
    entries = np.arange(x.size) if not QUICK else rng.choice(x.size, min(x.size, 16), replace=False)
    fd = numeric_grad(loss, x, entries)
    model_err = max(model_err, rel_err(grads[n].reshape(-1)[entries], fd))
    checked += len(entries)
errors["model"] = model_err
print(f"whole model + DFT loss, {len(params)} tensors, {checked} entries checked: max rel err {model_err:.0e}")

# %% [markdown]
# ## Check

# %%
worst = max(errors.values())
if worst > 1e-6:
    raise AssertionError(f"gradient check failed: {max(errors, key=errors.get)} has relative error {worst:.1e}")
print(f"OK max rel err = {worst:.0e} over {len(errors)} gradients")
