# %% [markdown]
# # Lesson 13: AdamW and a fine-tune
#
# AdamW by hand against the package, the warmup + cosine schedule, then a few steps of
# full fine-tuning of SmolLM2 on one tool-calling chat. The derivation is in README.md
# beside this file.

# %%
import math
import os

import numpy as np

import nanoagent
from nanoagent.optim import adamw_init, adamw_step, lr_at
from nanoagent.data.batch import Example, collate
from nanoagent.generate import ChatModel
from nanoagent.train import train_step

QUICK = os.environ.get("NANOAGENT_LESSON_QUICK") == "1"  # three steps, no "before" reply

# %% [markdown]
# ## 1. AdamW by hand
# m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr m̂ / (sqrt(v̂) + eps) after p -= lr wd p
# (matrices only). Three steps on random parameters, against `adamw_step`.

# %%
rng = np.random.default_rng(0)
params = {"proj.weight": rng.normal(size=(4, 6)), "norm.weight": 1 + 0.1 * rng.normal(size=6)}
hand = {k: p.copy() for k, p in params.items()}
m = {k: np.zeros_like(p) for k, p in params.items()}
v = {k: np.zeros_like(p) for k, p in params.items()}
state = adamw_init(params)
lr, b1, b2, eps, wd = 1e-2, 0.9, 0.95, 1e-8, 0.1
for t in range(1, 4):
    grads = {k: rng.normal(size=p.shape) for k, p in params.items()}
    for k, g in grads.items():
        if hand[k].ndim >= 2:
            hand[k] -= lr * wd * hand[k]  # decoupled weight decay
        m[k] = b1 * m[k] + (1 - b1) * g
        v[k] = b2 * v[k] + (1 - b2) * g * g
        hand[k] -= lr * (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
    adamw_step(params, grads, state, lr, b1, b2, eps, wd)
adam_diff = max(np.abs(hand[k] - params[k]).max() for k in params)
print(f"AdamW by hand vs adamw_step after 3 steps: max|diff| = {adam_diff:.1e}")

# %% [markdown]
# ## 2. The learning rate: linear warmup, then cosine down to 10%

# %%
print(" ".join(f"{lr_at(s, 5e-5, warmup=3, total=30):.1e}" for s in range(0, 30, 3)))

# %% [markdown]
# ## 3. Fine-tune SmolLM2 on one tool call
# The parameters are copied into writable arrays (`train.load_model`), the chat tokenized
# with its assistant mask, and a few full steps taken: forward, loss, backward, AdamW.

# %%
from nanoagent.checkpoint import read_tokenizer
from nanoagent.train import load_model
from nanoagent.weights import resolve

model = load_model(resolve(None))
tok = read_tokenizer(resolve(None))
tools = [{"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
question = [{"role": "user", "content": "Is it raining in Lisbon?"}]
chat = question + [{"role": "assistant", "content": "",
                    "tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]}]
if not QUICK:
    print("before:", repr(ChatModel(model, tok).chat(question, tools=tools, max_new_tokens=30)))

ids, mask = tok.encode_chat(chat, tools, add_generation_prompt=False)
batch = collate([Example(np.array(ids), mask)], pad_id=tok.im_end_id)
state = adamw_init(model.params)
losses = []
steps = 3 if QUICK else 4
for step in range(steps):
    r = train_step(model, [batch], state, lr=lr_at(step, 1e-4, warmup=1, total=steps), kind="sft")
    losses.append(r.loss)
    print(f"step {step + 1}: loss {r.loss:.4f} (geometric-mean target probability {math.exp(-r.loss):.3f}), "
          f"grad norm {r.grad_norm:.2f}")
answer = ChatModel(model, tok).chat(question, tools=tools, max_new_tokens=40)
print("after: ", repr(answer))

# %% [markdown]
# ## Check

# %%
h, _ = model.forward(batch["inputs"])
final = nanoagent.loss.lm_head_loss(h, model.params["model.embed_tokens.weight"], batch["targets"], batch["mask"],
                                    backward=False).loss
if adam_diff > 1e-12:
    raise AssertionError(f"AdamW differs from the hand version by {adam_diff:.1e}")
if not final < 0.5 * losses[0]:
    raise AssertionError(f"the fine-tune did not learn: loss {losses[0]:.3f} -> {final:.3f}")
print(f"OK AdamW max|diff| = {adam_diff:.0e}; loss {losses[0]:.3f} -> {final:.3f} in {len(losses)} steps")
