# %% [markdown]
# # Lesson 16: GRPO, the policy gradient with a group baseline
#
# From the log-likelihood trick to GRPO (Shao et al. 2024, DeepSeekMath): rewards for
# tool-call replies, advantages relative to a group of replies to the same prompt, the
# clipped ratio and the k3 KL, and the gradient of the whole loss, which is the SFT
# gradient with a signed weight on each token. Everything runs on the tiny random model
# of the tests (no real weights). The derivation is in README.md beside this file.

# %%
import json
import os
from pathlib import Path

import numpy as np

from nanoagent.checkpoint import check_params, read_safetensors
from nanoagent.config import ModelConfig
from nanoagent.gradcheck import numeric_grad, rel_err  # central differences, shared with the tests
from nanoagent.data.batch import Example, collate
from nanoagent.tuner.grpo import GRPOConfig, group_advantages, grpo_round, policy_batches, round_seeds, run_prefix, sample_groups
from nanoagent.loss import PolicyTerms, lm_head_loss
from nanoagent.model import Model
from nanoagent.optim import adamw_init
from nanoagent.tuner.rewards import reward
from nanoagent.sampling import SamplingParams

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
TINY = HERE.parents[1] / "tests" / "fixtures" / "tiny"  # 2 blocks, C = 64, V = 128, random weights
EMBED = "model.embed_tokens.weight"
QUICK = os.environ.get("NANOAGENT_LESSON_QUICK") == "1"  # fewer entries in the finite-difference check

errors = {}  # name -> measured error; the last cell checks them all


def load_tiny(dtype):
    cfg = ModelConfig.from_json(TINY / "config.json")
    params = check_params(read_safetensors(TINY / "model.safetensors"), cfg, TINY)
    return Model(cfg, {k: v.astype(dtype) for k, v in params.items()})


# %% [markdown]
# ## 1. The log-likelihood trick on one categorical distribution
# A "policy" over K outcomes with logits z, pi = softmax(z), a reward r(y) per outcome.
# grad_z E[r] = E[r grad_z log pi(y)], and grad_z log pi(y) = onehot(y) - pi, so the exact
# gradient is pi * (r - E[r]). Then the same from samples, in groups of G: plain REINFORCE,
# with the group mean as a baseline, and with GRPO's normalised advantage.

# %%
rng = np.random.default_rng(0)
K, G = 6, 4
z = rng.normal(size=K)
r = np.array([0.0, 0.2, 1.0, 0.0, 0.7, 1.2])  # one reward per outcome


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


pi = softmax(z)
exact = pi * (r - pi @ r)  # sum_y pi(y) r(y) (onehot(y) - pi)
fd = numeric_grad(lambda: softmax(z) @ r, z)  # d E[r] / dz by central differences
errors["log-likelihood trick"] = rel_err(exact, fd)
print(f"E[r grad log pi] vs finite differences of E[r]: rel err {errors['log-likelihood trick']:.0e}")

N = 50_000  # groups of G samples
y = rng.choice(K, size=(N, G), p=pi)  # (N,G) sampled outcomes
score = np.eye(K)[y] - pi  # (N,G,K) grad_z log pi(y) of each sample


def estimate(weights):
    """weights (N,G) -> per-sample estimates (N*G,K) of the gradient: weight * grad log pi."""
    return (weights[..., None] * score).reshape(-1, K)


rs = r[y]  # (N,G) rewards of the samples
centred = rs - rs.mean(axis=1, keepdims=True)
std = rs.std(axis=1, ddof=1, keepdims=True)
grpo_adv = np.where(std > 0, centred / (std + 1e-4), 0.0)
print(f"{'estimator':36s} {'mean vs target':>15s}  {'noise / signal':>14s}")
rows = {"REINFORCE, r": (rs, exact), "REINFORCE, r + 5 (a shifted reward)": (rs + 5, exact),
        "group mean baseline, r - mean": (centred, (G - 1) / G * exact),
        "group mean baseline, r + 5 - mean": (centred, (G - 1) / G * exact),  # the shift cancels exactly
        "GRPO, (r - mean) / (std + eps)": (grpo_adv, None)}
noise = {}
for name, (wts, target) in rows.items():
    est = estimate(wts)
    mean = est.mean(axis=0)
    noise[name] = est.var(axis=0).sum() / (mean @ mean)  # one sample's variance over the squared mean: scale-free
    if target is not None:
        se = est.std(axis=0).max() / np.sqrt(len(est))  # the Monte Carlo standard error
        errors[f"unbiased: {name}"] = np.abs(mean - target).max() / se / 5  # <= 1 within 5 standard errors
        err = f"{np.abs(mean - target).max():.4f}"
    else:  # biased (std depends on the sample itself), yet it points the same way here
        err = f"cos {mean @ exact / np.linalg.norm(mean) / np.linalg.norm(exact):.4f}"
    print(f"{name:36s} {err:>15s}  {noise[name]:14.1f}")

# %% [markdown]
# Every row but the last is unbiased: its mean matches its target within sampling noise.
# The mean-centred estimator targets (G-1)/G times the gradient: r_i - mean equals (G-1)/G
# times r_i minus the mean of the *other* G-1 rewards, a baseline independent of y_i. The
# noise column (variance of one sample's estimate over the squared mean, so that scale does
# not count) shows what the baseline buys, and that plain REINFORCE gets worse when a
# constant is added to every reward while the centred estimators do not change at all.

# %% [markdown]
# ## 2. Rewards for tool-call replies
# reward = correct + 0.2 * format (`nanoagent/tuner/rewards.py`): 1 for the exact call, partial credit
# from 0.5 for the right functions with wrong arguments, 0 otherwise; format 1 when the reply
# ended at <|im_end|> and is plain text or one strict `<tool_call>` JSON list at its end.

# %%
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
tools = [WEATHER]


def call(*cities):
    """The reply a well-behaved model writes: one <tool_call> tag holding a JSON list."""
    calls = [{"name": "get_weather", "arguments": {"city": c}} for c in cities]
    return "<tool_call>" + json.dumps(calls) + "</tool_call>"


LISBON = [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]
BOTH = LISBON + [{"name": "get_weather", "arguments": {"city": "Porto"}}]
cases = [  # (what it is, reply text, finish reason, reference calls, expected total)
    ("the exact call", call("Lisbon"), "stop", LISBON, 1.2),
    ("wrong argument", call("Porto"), "stop", LISBON, 0.7),
    ("a lone object, not a list", '<tool_call>{"name": "get_weather", "arguments": {"city": "Lisbon"}}</tool_call>',
     "stop", LISBON, 1.0),
    ("malformed JSON", call("Lisbon")[:-15] + "]</tool_call>", "stop", LISBON, 0.0),
    ("cut off (max tokens)", call("Lisbon")[:30], "length", LISBON, 0.0),
    ("prose instead of a call", "It is sunny in Lisbon.", "stop", LISBON, 0.2),
    ("parallel, other order", call("Porto", "Lisbon"), "stop", BOTH, 1.2),
    ("parallel, one call wrong", call("Lisbon", "Lisbon"), "stop", BOTH, 0.95),
    ("no call needed, none made", "I can only look up the weather.", "stop", [], 1.2),
    ("no call needed, one made", call("Lisbon"), "stop", [], 0.2),
]
print(f"{'reply':28s} {'correct':>7s} {'format':>6s} {'total':>5s}  reason")
reward_err = 0.0
for what, text, finish, reference, expected in cases:
    rw = reward(text, finish, reference, tools)
    reward_err = max(reward_err, abs(rw.total - expected))
    print(f"{what:28s} {rw.correct:7.2f} {rw.format:6.0f} {rw.total:5.2f}  {rw.reason[:70]}")
errors["rewards"] = reward_err
print("e.g. malformed:", repr(cases[3][1]))

# %% [markdown]
# ## 3. Group advantages
# A_i = (r_i - mean) / (std + 1e-4) within the G replies of one prompt, std the sample
# standard deviation (ddof 1); a group with one reward value is skipped.

# %%
R = np.array([[1.2, 0.7, 0.0, 0.2],  # four replies to the Lisbon question (rows of section 2)
              [1.2, 1.2, 1.2, 1.2],  # all exact: nothing to prefer, skipped
              [1.2, 0.95, 0.0, 0.2]])  # the parallel question
hand = np.zeros_like(R)
hand_kept = R.max(axis=1) != R.min(axis=1)
for i in np.flatnonzero(hand_kept):
    mean, std = R[i].mean(), np.sqrt(np.sum((R[i] - R[i].mean()) ** 2) / (G - 1))
    hand[i] = (R[i] - mean) / (std + 1e-4)
adv, kept = group_advantages(R, eps=1e-4)
errors["advantages"] = np.abs(adv - hand).max() + float(np.any(kept != hand_kept))
for i in range(len(R)):
    print(f"rewards {R[i]} -> A {np.round(adv[i], 3)}" + ("" if kept[i] else "  (skipped)"))
print(f"by hand vs group_advantages: max|diff| = {np.abs(adv - hand).max():.0e}")

# %% [markdown]
# ## 4. Replies from the tiny model, and GRPO's loss by hand
# Two prompts, G = 4 replies each, sampled by the package (`sample_groups`, the batched
# decoder). The reward here is a toy: the share of a reply's tokens in the lower half of
# the vocabulary (the loss only ever sees the advantages). Each kept reply is laid out as
# prompt + reply with a mask on the reply tokens and each token's advantage (section 7 runs
# the prompt once for its whole group instead, as the package does).

# %%
model32 = load_tiny(np.float32)  # samples
model = load_tiny(np.float64)  # the same weights in float64, for the checks
V = model.config.vocab_size
STOP = 2  # the tiny config's eos id: a reply that samples it ends there
cfg = GRPOConfig(group=G, max_new_tokens=6, sampling=SamplingParams(temperature=1.0), batch_size=2 * G)
prompts = [[1, 20, 31, 7], [1, 45, 3]]
groups = sample_groups(model32, prompts, cfg, STOP, round_seeds(0, 0, len(prompts)))
rewards = np.array([[np.mean(np.array(rep.reply) < V // 2) for rep in g] for g in groups])
adv, kept = group_advantages(rewards, cfg.adv_eps)
rows = [(i, g) for i in np.flatnonzero(kept) for g in range(G)]  # the kept groups' replies
batch = collate([Example(np.array(prompts[i] + groups[i][g].reply), np.arange(len(prompts[i]) + len(groups[i][g].reply))
                         >= len(prompts[i])) for i, g in rows], pad_id=0)
for i, g in enumerate(groups):
    print(f"prompt {prompts[i]}: " + "  ".join(f"{rep.reply} r={rw:.2f} A={a:+.2f}"
                                                for rep, rw, a in zip(g, rewards[i], adv[i])))
inputs, targets, mask = batch["inputs"], batch["targets"], batch["mask"]  # (B,T) each
A = np.repeat(np.array([adv[i, g] for i, g in rows])[:, None], targets.shape[1], axis=1)  # (B,T): the reply's A
print(f"batch {inputs.shape}, {int(mask.sum())} reply tokens carry loss")

# %% [markdown]
# Three cases. On-policy (the first pass over fresh samples): log p_old = log p, ratio 1.
# Clipped: as if the policy had moved since sampling, log p_old = log p - delta with ratios
# e^±0.5 (outside [0.8, 1.2]) and e^±0.05 (inside), far from the edges so a finite
# difference never crosses one. Clipped + KL: a reference model (the tiny model with its
# weights perturbed) and beta = 0.1.

# %%
W = model.params[EMBED]  # (V,C) the tied head
h, caches = model.forward(inputs)  # (B,T,C)


def hand_logp(h):
    """h (B,T,C) -> log p (B,T) of each target: logits through the tied head, a max-subtracted log-softmax."""
    z = h @ W.T  # (B,T,V)
    z = z - z.max(axis=-1, keepdims=True)
    logsm = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return np.take_along_axis(logsm, targets[..., None], axis=-1)[..., 0], np.exp(logsm)


def hand_grpo(logp, old, ref, beta, eps=cfg.clip_eps):
    """log p, log p_old, log p_ref (B,T) -> per-token loss l (B,T), dl/dlog p (B,T), clipped (B,T) bool."""
    ratio = np.exp(logp - old)
    # the min picks the clipped term (a constant: no gradient) exactly when the ratio has left the
    # trust region in the direction the advantage pushes it
    clipped = ((A > 0) & (ratio > 1 + eps)) | ((A < 0) & (ratio < 1 - eps))
    loss = -np.where(clipped, np.clip(ratio, 1 - eps, 1 + eps), ratio) * A
    dl = np.where(clipped, 0.0, -ratio * A)  # d(-ratio A)/dlog p = -ratio A
    if beta:
        d = ref - logp  # log(p_ref / p)
        loss = loss + beta * (np.exp(d) - d - 1)  # k3 >= 0
        dl = dl + beta * (1 - np.exp(d))  # d(e^d - d - 1)/dlog p, with dd/dlog p = -1
    return loss, dl, clipped & mask


logp, probs = hand_logp(h)  # (B,T), (B,T,V)
ref_model = Model(model.config, {k: v + 0.02 * rng.normal(size=v.shape) for k, v in model.params.items()})
logp_ref = lm_head_loss(ref_model.forward(inputs, keep_caches=False)[0], ref_model.params[EMBED], targets, mask,
                        backward=False).logp  # (B,T), 0 where the mask does not count
delta = np.where(mask, rng.choice([-0.5, -0.05, 0.05, 0.5], size=logp.shape), 0.0)
settings = {"on-policy": (logp.copy(), None, 0.0),  # (log p_old held fixed, log p_ref, beta)
            "clipped": (logp - delta, None, 0.0),
            "clipped + KL": (logp - delta, logp_ref, 0.1)}
m = mask.astype(np.float64)
denom = m.sum()
results = {}
for name, (old, ref, beta) in settings.items():
    loss_t, dl, clipped = hand_grpo(logp, old, ref, beta)
    loss = np.sum(m * loss_t) / denom
    # dL/dz = dL/dlog p * (onehot - softmax) = c (softmax - onehot), c = -m dl / denom
    c = -m * dl / denom  # (B,T)
    dz = probs * c[..., None]
    np.put_along_axis(dz, targets[..., None], np.take_along_axis(dz, targets[..., None], -1) - c[..., None], -1)
    dh_hand, dW_hand = dz @ W, np.einsum("btv,btc->vc", dz, h)
    terms = PolicyTerms(A, None if name == "on-policy" else old, ref, cfg.clip_eps, beta)
    out = lm_head_loss(h, W, targets, mask, kind="grpo", terms=terms, chunk=5)
    errors[f"loss by hand, {name}"] = abs(out.loss - loss) / max(abs(loss), 1e-12)
    errors[f"dh by hand, {name}"] = rel_err(out.dh, dh_hand)
    errors[f"dW by hand, {name}"] = rel_err(out.dwte, dW_hand)
    results[name] = (terms._replace(logp_old=old), out, dl, clipped)  # the FD check holds old fixed
    kl = "" if ref is None else f", mean k3 {np.sum(m * (np.exp(ref - logp) - (ref - logp) - 1)) / denom:.4f}"
    print(f"{name:13s} loss {loss:+.6f} (package {out.loss:+.6f}), {int(clipped.sum())} of {int(denom)} "
          f"tokens clipped{kl}; rel err loss {errors[f'loss by hand, {name}']:.0e}, "
          f"dh {errors[f'dh by hand, {name}']:.0e}, dW {errors[f'dW by hand, {name}']:.0e}")

# %% [markdown]
# On-policy the loss value is -mean(A) over the tokens, a constant: only its gradient means
# anything. It is not zero here because replies of different lengths weigh differently.

# %% [markdown]
# ## 5. The gradient through the whole model, against central differences
# `Model.backward` from the loss's dL/dh (the head's dL/dW added into the embedding's), every
# parameter tensor compared by name on a sample of its entries (its largest one included),
# with log p_old and log p_ref held fixed while differencing: they are numbers, not functions
# of the weights (on-policy, log p_old = sg(log p)).

# %%
n_entries = 6 if QUICK else 24
for name, (terms, out, _, _) in results.items():
    grads = model.backward(out.dh, caches, {EMBED: out.dwte.copy()})
    assert set(grads) == set(model.params)
    f = lambda terms=terms: lm_head_loss(model.forward(inputs, keep_caches=False)[0], W, targets, mask,
                                         kind="grpo", terms=terms, backward=False).loss
    worst = 0.0
    for pname, x in model.params.items():
        g = grads[pname].reshape(-1)
        entries = np.unique(np.append(rng.choice(x.size, min(x.size, n_entries - 1), replace=False),
                                      np.argmax(np.abs(g))))
        worst = max(worst, rel_err(g[entries], numeric_grad(f, x, entries)))
    errors[f"finite differences, {name}"] = worst
    print(f"{name:13s} {len(grads)} tensors x {n_entries} entries: max rel err {worst:.0e}")

# %% [markdown]
# ## 6. GRPO's gradient is the SFT gradient with a weight on each token
# SFT with constant per-token weights w: L = sum m w (-log p) / sum m, dL/dz = (m w / sum m)
# (softmax - onehot). With w = -dl/dlog p = A ratio [not clipped] + beta (e^d - 1), that is
# GRPO's gradient: the package's weighted cross-entropy (kind "dft" with `weight` given) and
# the same backward give the same gradients, though the two loss *values* differ.

# %%
for name, (terms, out, dl, clipped) in results.items():
    w = -dl  # (B,T) the per-token weight of the cross-entropy
    sft = lm_head_loss(h, W, targets, mask, kind="dft", weight=w, chunk=5)
    g_sft = model.backward(sft.dh, caches, {EMBED: sft.dwte.copy()})
    g_grpo = model.backward(out.dh, caches, {EMBED: out.dwte.copy()})
    errors[f"weighted SFT = GRPO, {name}"] = max(rel_err(g_sft[k], g_grpo[k]) for k in g_grpo)
    print(f"{name:13s} weighted-SFT vs GRPO gradients, all {len(g_grpo)} tensors: "
          f"max rel err {errors[f'weighted SFT = GRPO, {name}']:.0e}  (loss values {sft.loss:+.4f} vs {out.loss:+.4f})")

terms, out, dl, clipped = results["clipped + KL"]
ratio = np.exp(logp - terms.logp_old)
d = logp_ref - logp
b = int(np.argmax(mask.sum(axis=1)))  # the longest reply
print(f"\nreply {b} in the clipped + KL case, token by token:")
print(f"{'target':>6s} {'A':>6s} {'ratio':>6s} {'clipped':>7s} {'A*ratio':>8s} {'beta(e^d-1)':>11s} {'w':>7s}")
for t in np.flatnonzero(mask[b]):
    pg = 0.0 if clipped[b, t] else A[b, t] * ratio[b, t]
    print(f"{targets[b, t]:6d} {A[b, t]:+6.2f} {ratio[b, t]:6.3f} {'yes' if clipped[b, t] else '':>7s} {pg:+8.4f} "
          f"{0.1 * (np.exp(d[b, t]) - 1):+11.4f} {-dl[b, t]:+7.4f}")
print("(A*ratio is 0 where the token is clipped; w = -dl/dlog p is their sum)")

# %% [markdown]
# ## 7. The prompt once for its group
# A group's G replies all continue one prompt, and nothing of the prompt depends on the
# reply: its keys and values at every layer are the same for all G. So the package runs the
# prompt (but its last token) once (`run_prefix` -> a `model.Prefix`), and each reply's row
# starts at the prompt's last token (whose output predicts the reply's first token) and
# attends to the prefix's keys and values laid before its own. Backward, each layer's
# gradient at the prefix's keys and values is summed over the rows that read them, and then
# carried once through the prompt's own layers (`Model.backward_prefix`). The gradient is
# the same as over whole prompt + reply rows; the tokens processed are not.

# %%
on_policy = results["on-policy"][1]
want = model.backward(on_policy.dh, caches, {EMBED: on_policy.dwte.copy()})
grads, shared_loss, shared_tokens = None, 0.0, 0
for gb in policy_batches(prompts, groups, adv, kept, pad_id=0, batch_size=G):
    prefix, prefix_caches = run_prefix(model, gb.prefix)  # (P-1 positions, once)
    shared_tokens += len(gb.prefix)
    for b in gb.batches:
        hb, cb = model.forward(b["inputs"], prefix=prefix)  # rows: the prompt's last token + the reply
        o = lm_head_loss(hb, W, b["targets"], b["mask"], kind="grpo", denom=int(mask.sum()),
                         dwte=None if grads is None else grads[EMBED], terms=PolicyTerms(b["adv"]))
        shared_loss += o.loss
        shared_tokens += int(b["lengths"].sum())
        grads = model.backward(o.dh, cb, grads or {EMBED: o.dwte}, prefix=prefix)  # adds into prefix.grad
    grads = model.backward_prefix(prefix, prefix_caches, grads)  # the prompt's layers, once
errors["shared prompt = whole rows"] = max(rel_err(grads[k], want[k]) for k in want)
errors["shared prompt = whole rows: loss"] = abs(shared_loss - on_policy.loss) / max(abs(on_policy.loss), 1e-12)
print(f"tokens through the model: {int(batch['lengths'].sum())} as whole rows, {shared_tokens} with each prompt once; "
      f"all {len(want)} gradients max rel err {errors['shared prompt = whole rows']:.0e}")

# %% [markdown]
# ## 8. A toy run: the reward is emitting one fixed token
# `grpo_round` samples 8 replies of 4 tokens to each of 4 prompts, scores each by the share
# of its tokens equal to one token the starting model gives under 1%, and takes two GRPO
# updates on each round's samples (the second with log p_old from the first: the ratio
# leaves 1 and clipping happens) with a KL to the starting model, beta = 0.04.

# %%
policy, start = load_tiny(np.float32), load_tiny(np.float32)
toy_prompts = [[1, 5 + i, 9, 12] for i in range(4)]
target = int(np.argsort(-policy.logits(toy_prompts[0])[-1])[20])  # the 21st likeliest next token
p0 = float(softmax(policy.logits(toy_prompts[0])[-1].astype(np.float64))[target])
toy = GRPOConfig(group=8, max_new_tokens=4, batch_size=8, updates=2, beta=0.04)
state = adamw_init(policy.params)
score_fn = lambda i, rollout: {"reward": float(np.mean([t == target for t in rollout.reply]))}
curve = []
print(f"target token {target} (p = {p0:.4f} after the first prompt at the start)")
ROUNDS = 40
for step in range(ROUNDS):
    res = grpo_round(policy, toy_prompts, score_fn, toy, state, 1e-3, round_seeds(0, step, 4), 0, None, start)
    curve.append(res.figures["reward"])
    if step % 5 == 0 or step == ROUNDS - 1:
        u = res.updates[-1] if res.updates else None
        more = "no group kept" if u is None else (f"KL {u.kl:.4f}, clipped on the 2nd pass "
                                                  f"{u.clip_frac:.0%}, grad norm {u.grad_norm:.2f}")
        print(f"round {step + 1:2d}: mean reward {curve[-1]:.3f}, groups kept {res.kept}, skipped {res.skipped}; "
              f"{more}")
first, last = np.mean(curve[:3]), np.mean(curve[-5:])
print(f"mean reward: first 3 rounds {first:.3f}, last 5 rounds {last:.3f}")

# %% [markdown]
# ## Check

# %%
TOLERANCE = {"finite differences": 1e-6, "log-likelihood trick": 1e-6,  # central differences: ~1e-9 at best
             "loss by hand": 1e-10, "dh by hand": 1e-10, "dW by hand": 1e-10, "advantages": 1e-12,
             "weighted SFT = GRPO": 1e-10, "rewards": 1e-12, "shared prompt = whole rows": 1e-9,
             "unbiased": 1.0}  # (mean - target) / (5 standard errors)
bad = {k: v for k, v in errors.items() if not v <= TOLERANCE[k.split(":")[0].split(",")[0]]}
if bad:
    raise AssertionError(f"comparisons failed: {bad}")
if not (first < 0.15 and last > 0.8):
    raise AssertionError(f"the toy reward did not rise: {first:.3f} -> {last:.3f}")
worst = {kind: max(v for k, v in errors.items() if k.startswith(kind))
         for kind in ("loss by hand", "dh by hand", "dW by hand", "finite differences", "weighted SFT")}
print(f"OK max rel err = {max(worst['loss by hand'], worst['dh by hand'], worst['dW by hand']):.0e} (hand vs package), "
      f"{worst['finite differences']:.0e} (finite differences), {worst['weighted SFT']:.0e} (weighted SFT vs GRPO); "
      f"toy reward {first:.2f} -> {last:.2f}")
