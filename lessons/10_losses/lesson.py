# %% [markdown]
# # Lesson 10: cross-entropy and DFT
#
# The losses of fine-tuning on a real tool-calling chat: which tokens count, cross-entropy
# by hand, its gradient (softmax minus one-hot), DFT (cross-entropy times the model's own,
# constant, probability), and the package's fused, chunked version that never holds all
# logits. The derivation is in README.md beside this file.

# %%
import numpy as np

import nanoagent
from nanoagent.loss import lm_head_loss, log_softmax

lm = nanoagent.load()  # the network and its tokenizer
model, tok = lm.model, lm.tokenizer
W = model.params["model.embed_tokens.weight"]  # (V,C) the tied embedding / LM head

# %% [markdown]
# ## 1. A tool chat, and the tokens that carry loss
# `encode_chat` marks the tokens an assistant wrote (content and closing `<|im_end|>`).
# Position t predicts token t+1, so the targets are ids[1:] and their mask is mask[1:].

# %%
tools = [{"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
messages = [
    {"role": "user", "content": "Is it raining in Lisbon?"},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]},
    {"role": "tool", "content": '{"rain": false, "temp_c": 19}'},
    {"role": "assistant", "content": "No, it is dry in Lisbon, 19 degrees."},
]
ids, mask = tok.encode_chat(messages, tools, add_generation_prompt=False)
ids = np.array(ids)
inputs, targets, m = ids[:-1], ids[1:], mask[1:].astype(np.float64)  # (T,)
T = len(inputs)
print(f"{len(ids)} tokens, {int(m.sum())} targets count")
print("what the loss sees:", repr("".join(tok.decode([t]) for t, c in zip(targets, m) if c)))

# %% [markdown]
# ## 2. Cross-entropy by hand (float64)
# z = h W^T; log p_t = z[y_t] - logsumexp(z) through a max-subtracted log-softmax;
# ce_t = -log p_t; the loss is the mean over the tokens that count.

# %%
h, _ = model.forward(inputs[None])  # (1,T,C) final-normed hidden states
h64, W64 = h[0].astype(np.float64), W.astype(np.float64)
z = h64 @ W64.T  # (T,V) all logits: fine for one short chat, not for training
logp_t = log_softmax(z)[np.arange(T), targets]  # (T,) log p of each target
ce = -logp_t
p = np.exp(logp_t)
sft = np.sum(m * ce) / m.sum()
dft = np.sum(m * p * ce) / m.sum()
print(f"SFT loss {sft:.4f}   DFT loss {dft:.4f}   mean target probability {np.sum(m * p) / m.sum():.3f}")
print("lowest-probability assistant tokens (these dominate SFT, DFT turns them down):")
for t in np.argsort(np.where(m > 0, p, np.inf))[:5]:
    print(f"  {tok.decode([targets[t]])!r:>14}  p = {p[t]:.4f}  ce = {ce[t]:6.3f}  p*ce = {p[t] * ce[t]:.4f}")

# %% [markdown]
# ## 3. The gradient with respect to the logits
# dL/dz_t = c_t (softmax(z_t) - onehot(y_t)), c_t = m_t w_t / sum(m), w_t = 1 (SFT) or the
# constant p_t (DFT). Checked against central differences on a few logits.

# %%
s = np.exp(log_softmax(z))  # (T,V)


def dlogits(w):
    c = m * w / m.sum()  # (T,)
    g = s * c[:, None]
    g[np.arange(T), targets] -= c
    return g


def row_loss(zt, t, w):
    """Token t's share of the loss from its logits zt (V,): only row t depends on z[t]."""
    return m[t] * w[t] * -log_softmax(zt)[targets[t]] / m.sum()


g_sft, g_dft = dlogits(np.ones(T)), dlogits(p)
rng = np.random.default_rng(0)
rows = np.flatnonzero(m)[rng.integers(0, int(m.sum()), 6)]
cols = np.concatenate([targets[rows], rng.integers(0, z.shape[1], 6)])  # the targets and random logits
worst_fd = 0.0
for w, g in ((np.ones(T), g_sft), (p, g_dft)):  # DFT: p held fixed while differencing (stop-gradient)
    fd, an = [], []
    for t, v in zip(np.concatenate([rows, rows]), cols):
        zp, zm = z[t].copy(), z[t].copy()
        zp[v] += 1e-5
        zm[v] -= 1e-5
        fd.append((row_loss(zp, t, w) - row_loss(zm, t, w)) / 2e-5)
        an.append(g[t, v])
    fd, an = np.array(fd), np.array(an)
    worst_fd = max(worst_fd, np.abs(fd - an).max() / np.abs(an).max())  # relative to the largest entry checked
print(f"finite differences vs analytic dL/dz: max rel err {worst_fd:.1e}")
print(f"DFT gradient = p times the SFT gradient, row by row: "
      f"max|diff| = {np.abs(g_dft - g_sft * p[:, None]).max():.1e}")

# %% [markdown]
# ## 4. The fused, chunked version
# `lm_head_loss` computes the same loss, dL/dh and the LM head's dL/dW from h and W, 256
# rows of logits at a time and only for the rows that count.

# %%
worst = 0.0
for kind, g, ref_loss in (("sft", g_sft, sft), ("dft", g_dft, dft)):
    out = lm_head_loss(h64[None], W64, targets[None], m[None], kind=kind, chunk=16)
    err_loss = abs(out.loss - ref_loss) / ref_loss
    err_dh = np.abs(out.dh[0] - g @ W64).max() / np.abs(g @ W64).max()
    err_dw = np.abs(out.dwte - g.T @ h64).max() / np.abs(g.T @ h64).max()
    worst = max(worst, err_loss, err_dh, err_dw)
    print(f"{kind}: loss {out.loss:.6f}; rel err loss {err_loss:.0e}, dh {err_dh:.0e}, dW {err_dw:.0e}")
ones = lm_head_loss(h64[None], W64, targets[None], m[None], kind="dft", weight=np.ones((1, T)), backward=False)
print(f"DFT with p forced to 1: {ones.loss:.6f} = SFT {sft:.6f}")
print(f"all logits of a 1024-token sequence: {1024 * W.shape[0] * 4 / 2**20:.0f} MiB; "
      f"one chunk of 256 rows: {256 * W.shape[0] * 4 / 2**20:.0f} MiB")

# %% [markdown]
# ## Check

# %%
if worst > 1e-10 or worst_fd > 1e-6 or abs(ones.loss - sft) > 1e-12 * sft:
    raise AssertionError(f"losses disagree: fused vs hand {worst:.1e}, finite differences {worst_fd:.1e}, "
                         f"DFT(p=1) - SFT {ones.loss - sft:.1e}")
print(f"OK max rel err = {max(worst, worst_fd):.0e} (fused vs hand, finite differences)")
