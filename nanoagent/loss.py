"""The training losses: token cross-entropy (SFT) and DFT, fused with the tied LM head.

Both score each target token t_i by its log-probability under the model, log p_i with
p_i = softmax(h_i W^T)[t_i], and average over the tokens that count (mask m_i, the
assistant-written tokens):

    SFT (cross-entropy)      L = sum_i m_i * (-log p_i)            / sum_i m_i
    DFT (Dynamic Fine-Tuning) L = sum_i m_i * sg(p_i) * (-log p_i) / sum_i m_i

where sg() is a stop-gradient: DFT weighs each token's cross-entropy by the probability the
model already gives it, held constant, so its gradient is the SFT gradient scaled per token
by p_i. Tokens the model finds very unlikely (p_i -> 0) no longer dominate the update.

With z = h W^T the logits (V per token) and s = softmax(z):
    dL/dz_i = c_i (s_i - onehot(t_i)),   c_i = m_i / sum(m)          (SFT)
                                         c_i = m_i p_i / sum(m)      (DFT)
    dL/dh_i = dL/dz_i W,   dL/dW = sum_i dL/dz_i^T h_i   (the tied embedding's LM-head share)

GRPO (group-relative policy optimisation, Shao et al. 2024) scores sampled reply tokens by
their advantage A_i (the reply's reward, normalised within its group of replies to the same
prompt), through the PPO-clipped ratio to the policy that sampled them (log p_old) and an
optional KL to a reference model (log p_ref) with the k3 estimator:

    r_i = exp(log p_i - log p_old_i),   d_i = log p_ref_i - log p_i
    l_i = -min(r_i A_i, clip(r_i, 1-eps, 1+eps) A_i) + beta (exp(d_i) - d_i - 1)
    L = sum_i m_i l_i / sum_i m_i

Its gradient goes through log p_i alone: dlogp/dz_i = onehot(t_i) - s_i, so with
g_i = dl_i/dlog p_i = -A_i r_i [the unclipped term is the min] + beta (1 - exp(d_i)),
    dL/dz_i = c_i (s_i - onehot(t_i)),   c_i = -m_i g_i / sum(m)      (GRPO)
the SFT gradient with a signed weight on each token: the same chunked head and backward.

`lm_head_loss` computes this in chunks of rows, only for the rows that count, so the full
(T, V) logits never sit in memory. Lesson: lessons/10_losses/README.md.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

KINDS = ("sft", "dft")  # the supervised losses (train's --loss)
ALL_KINDS = (*KINDS, "grpo")  # and the policy-gradient one (rl.py), which needs PolicyTerms


# ---- GRPO's per-token loss and its derivative in log p ------------------------------------

class PolicyTerms(NamedTuple):
    """GRPO's per-token inputs, each (B,T) aligned with the targets (or (N,) with the rows)."""
    adv: np.ndarray  # advantage of the reply each token belongs to
    logp_old: np.ndarray | None = None  # log p under the policy that sampled; None: this one (ratio 1)
    logp_ref: np.ndarray | None = None  # log p under the reference model; None: no KL term
    clip_eps: float = 0.2
    beta: float = 0.0


def grpo_token_loss(logp, adv, logp_old=None, logp_ref=None, clip_eps=0.2, beta=0.0):
    """logp, adv (N,) [, logp_old, logp_ref (N,)] -> l (N,) per-token loss, g (N,) dl/dlogp.

    logp_old None means the sampling policy is this one, held constant: ratio 1 (sg(logp)).
    """
    ratio = np.ones_like(logp) if logp_old is None else np.exp(logp - logp_old)
    unclipped = ratio * adv
    clipped = np.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    take = unclipped <= clipped  # min picks the unclipped term: its gradient flows; else constant
    loss = -np.minimum(unclipped, clipped)
    g = -np.where(take, unclipped, 0.0)  # d(-r A)/dlogp = -r A, since dr/dlogp = r
    if logp_ref is not None and beta:
        d = logp_ref - logp
        ed = np.exp(d)
        loss = loss + beta * (ed - d - 1.0)  # k3 >= 0, an unbiased estimate of KL(new || ref)
        g = g + beta * (1.0 - ed)  # d(exp(d) - d - 1)/dlogp = -exp(d) + 1
    return loss, g


# ---- the plain, unfused version (for the lesson and the tests) -------------------------

def log_softmax(z):
    """z (..., V) -> log softmax (..., V), max-subtracted: z - max - log(sum(exp(z - max)))."""
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_loss_ref(logits, targets, mask, kind="sft", weight=None, terms: PolicyTerms | None = None):
    """logits (N,V), targets (N,) int, mask (N,) -> loss, dlogits (N,V); plain NumPy, all logits at once.

    `weight` (N,) replaces DFT's p as the constant weight (the tests hold it fixed or force it to 1).
    `terms` (arrays of (N,)) are GRPO's inputs when kind is "grpo".
    """
    logp = log_softmax(logits)
    n = np.arange(len(targets))
    logp_t = logp[n, targets]  # (N,) log p of each target
    if kind == "grpo":
        tok_loss, g = grpo_token_loss(logp_t, *terms)
        coef = -(mask * g) / mask.sum()  # dL/dz = dL/dlogp (onehot - s)
        loss = np.sum(mask * tok_loss) / mask.sum()
    else:
        if kind == "sft":
            w = np.ones_like(logp_t)
        else:  # sg(p): a number, not a function of the logits
            w = np.exp(logp_t) if weight is None else weight
        coef = mask * w / mask.sum()  # (N,)
        loss = np.sum(coef * -logp_t)
    dlogits = np.exp(logp) * coef[:, None]  # c_i s_i
    dlogits[n, targets] -= coef  # - c_i onehot(t_i)
    return loss, dlogits


# ---- the fused, chunked version used in training --------------------------------------

class LossOut(NamedTuple):
    loss: float  # the loss that was differentiated: sum(m * w * ce) / denom
    dh: np.ndarray | None  # (B,T,C) dL/dh, zero on rows that do not count
    dwte: np.ndarray | None  # (V,C) dL/dW through the LM head (add it to the embedding's gradient)
    n_tokens: float  # sum(m): the tokens that count
    ce_sum: float  # sum(m * ce): cross-entropy summed, for reporting SFT loss whatever the kind
    p_sum: float  # sum(m * p): target probability summed, for the mean target probability
    logp: np.ndarray | None = None  # (B,T) log p of each target where mask counts, else 0 (GRPO's old/ref)


def chunk_log_softmax(hs, wte, tgt):
    """hs (n,C), wte (V,C), tgt (n,) -> e (n,V), total (n,), logp_t (n,): with z = hs wte^T the chunk's
    logits, e = exp(z - max) (z's own buffer, kept for the backward), total = sum(e), and log p of each target."""
    z = hs @ wte.T  # (n,V) logits of this chunk
    zmax = z.max(axis=1)
    z_t = z[np.arange(len(tgt)), tgt] - zmax  # (n,) the targets' logits, max-subtracted
    z -= zmax[:, None]
    np.exp(z, out=z)  # z now holds exp(z - max)
    total = z.sum(axis=1)
    return z, total, z_t - np.log(total)


def chunk_coef(kind, logp_t, p_t, m, denom, w_fixed=None, terms: PolicyTerms | None = None):
    """logp_t, p_t, m (n,) [, w_fixed (n,), terms of (n,)] -> coef (n,), loss: the chunk's share of L, and
    c_i of dL/dz_i = c_i (softmax_i - onehot_i), per kind as in the module's docstring."""
    if kind == "grpo":
        tok_loss, g = grpo_token_loss(logp_t, *terms)
        coef = -m * g / denom  # (n,) dL/dz_i = dL/dlogp_i (onehot_i - softmax_i)
        return coef, float(np.sum(m * tok_loss)) / denom
    w = np.ones_like(p_t) if kind == "sft" else (p_t if w_fixed is None else w_fixed)  # sg(p)
    coef = m * w / denom  # (n,)
    return coef, float(np.sum(coef * -logp_t))


def chunk_backward(e, total, coef, tgt, hs, wte, dwte):
    """e (n,V) = exp(z - max) (overwritten), total (n,), coef (n,), tgt (n,), hs (n,C), wte (V,C) -> dhs (n,C);
    adds the chunk's dL/dW into dwte (V,C)."""
    e *= (coef / total)[:, None]  # exp(z - max) / total = softmax, times coef
    e[np.arange(len(tgt)), tgt] -= coef  # dz = coef * (softmax - onehot)
    dhs = (wte.T @ e.T).T  # (n,V) @ (V,C): this operand order is the fast one for BLAS
    for v in range(0, wte.shape[0], 8192):  # dW += dz^T h, a vocab slice at a time (no (V,C) temporary)
        dwte[v:v + 8192] += e[:, v:v + 8192].T @ hs  # fan-out: the tied head adds into dwte
    return dhs


def terms_at(terms: PolicyTerms, index, dtype=None) -> PolicyTerms:
    """PolicyTerms with each array (adv, logp_old, logp_ref) flattened and indexed by `index`: (B,T) -> (N,)
    with the counted rows, or (N,) -> (n,) with a chunk's slice. None stays None."""
    def pick(x):
        return None if x is None else np.asarray(x, dtype=dtype).reshape(-1)[index]
    return terms._replace(adv=pick(terms.adv), logp_old=pick(terms.logp_old), logp_ref=pick(terms.logp_ref))


def lm_head_loss(h, wte, targets, mask, kind="sft", denom=None, backward=True, dwte=None,
                 weight=None, chunk=256, terms: PolicyTerms | None = None):
    """h (B,T,C) final hidden, wte (V,C) tied head, targets (B,T) int, mask (B,T) -> LossOut.

    Position (b, t) predicts targets[b, t] and counts with weight mask[b, t] (0 or 1, or any
    non-negative number). `denom` (default sum(mask)) divides the sum: pass the count over all
    micro-batches of an accumulated step so they add up to the mean over the whole step.
    `dwte`, if given, is added into in place (gradient accumulation, the tied embedding's
    fan-out) and returned. `weight` (B,T) replaces DFT's p as the constant per-token weight.
    kind "grpo" takes `terms` (PolicyTerms of (B,T) arrays): l_i and c_i as in the module's docstring.
    `chunk` rows of logits (chunk x V) are alive at a time.
    """
    if kind not in ALL_KINDS:
        raise ValueError(f"loss kind must be one of {ALL_KINDS}, got {kind!r}")
    if (kind == "grpo") != (terms is not None):
        raise ValueError("PolicyTerms go with kind 'grpo', and only with it")
    B, T, C = h.shape
    V = wte.shape[0]
    mask = np.asarray(mask).reshape(-1)
    rows = np.flatnonzero(mask)  # only the rows that count need logits
    m = mask[rows].astype(h.dtype)
    tgt = np.asarray(targets).reshape(-1)[rows]
    n_tokens = float(mask.sum())
    denom = n_tokens if denom is None else float(denom)
    if np.any((tgt < 0) | (tgt >= V)):
        raise ValueError(f"target ids must lie in [0, {V}); got {tgt.min()}..{tgt.max()}")
    hs = h.reshape(-1, C)[rows]  # (N,C) the counted rows
    dhs = np.empty_like(hs) if backward else None
    if backward and dwte is None:
        dwte = np.zeros_like(wte)
    w_fixed = None if weight is None else np.asarray(weight, dtype=h.dtype).reshape(-1)[rows]
    terms = None if terms is None else terms_at(terms, rows, h.dtype)  # each (B,T) array -> its counted rows (N,)
    logp = np.zeros(B * T, dtype=h.dtype)
    loss = ce_sum = p_sum = 0.0
    for a in range(0, len(rows), chunk):
        rs = slice(a, min(a + chunk, len(rows)))  # this chunk's rows
        e, total, logp_t = chunk_log_softmax(hs[rs], wte, tgt[rs])
        p_t = np.exp(logp_t)
        logp[rows[rs]] = logp_t
        coef, chunk_loss = chunk_coef(kind, logp_t, p_t, m[rs], denom, None if w_fixed is None else w_fixed[rs],
                                      None if terms is None else terms_at(terms, rs))
        loss += chunk_loss
        ce_sum += float(np.sum(m[rs] * -logp_t))
        p_sum += float(np.sum(m[rs] * p_t))
        if backward:
            dhs[rs] = chunk_backward(e, total, coef, tgt[rs], hs[rs], wte, dwte)
    if not backward:
        return LossOut(loss, None, None, n_tokens, ce_sum, p_sum, logp.reshape(B, T))
    dh = np.zeros_like(h)
    dh.reshape(-1, C)[rows] = dhs
    return LossOut(loss, dh, dwte, n_tokens, ce_sum, p_sum, logp.reshape(B, T))


__all__ = ["lm_head_loss", "LossOut", "token_loss_ref", "log_softmax", "KINDS", "ALL_KINDS", "PolicyTerms",
           "grpo_token_loss"]
