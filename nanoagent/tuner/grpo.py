"""GRPO (Shao et al. 2024, DeepSeekMath; the group-relative form of TRL's GRPOTrainer), by hand.

One round: for each of P prompts, G replies are sampled with batched decoding (the G samples
of a prompt share one prefill) and scored. Each reward becomes an advantage relative to its
group, A = (r - mean) / (std + eps); a group whose replies all got the same reward says
nothing about which is better and is skipped (and counted). Then the policy update: the forward
pass over prompt + reply (the prompt once per group, its G replies continuing it: model.Prefix),
GRPO's per-token loss on the reply tokens only (the PPO-clipped ratio
to the sampling policy, and beta times the k3 KL to the reference model) through the fused LM
head (loss.py, kind "grpo"), the same backward as SFT, one AdamW step. With `updates` > 1 the
same samples are learned from again, the first pass's log-probabilities standing for the
sampling policy's (the ratio then moves away from 1 and the clipping matters).

Log-probabilities are the model's own (temperature 1): sampling at another temperature makes the
samples slightly off-policy, as in TRL when its logits are not divided by the temperature.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..batch import BatchDecoder
from ..data.batch import Batch, Example, collate
from ..loss import PolicyTerms, lm_head_loss
from ..model import Model, Prefix
from ..optim import AdamWState, adamw_step, clip_scale, global_norm
from ..sampling import SamplingParams
from ..train import EMBED, TrainingError


@dataclass(frozen=True)
class GRPOConfig:
    group: int = 8  # G: replies sampled per prompt
    max_new_tokens: int = 128
    sampling: SamplingParams = SamplingParams(temperature=1.0)  # its seed is set per prompt and round
    clip_eps: float = 0.2  # the ratio is clipped to [1 - eps, 1 + eps]
    beta: float = 0.0  # weight of the KL to the reference model (0: no reference forward at all)
    updates: int = 1  # policy updates on each round's samples (TRL's num_iterations)
    batch_size: int = 4  # sequences per forward/backward
    slots: int = 0  # sequences decoded together (0: every reply of a round at once)
    max_groups: int = 0  # groups the update takes, the first in the prompts' order (0: every one kept)
    adv_eps: float = 1e-4  # A = (r - mean) / (std + adv_eps)
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0

    def __post_init__(self):
        if self.group < 2:
            raise ValueError(f"a group needs at least 2 replies to compare, got {self.group}")
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip epsilon must lie in (0, 1), got {self.clip_eps}")
        if self.beta < 0 or self.updates < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("beta must be >= 0; updates, batch size and max new tokens >= 1")
        if self.max_groups < 0:
            raise ValueError(f"max groups must be >= 0 (0: no limit), got {self.max_groups}")


@dataclass
class Rollout:
    prompt: int  # which of the round's prompts it answers
    reply: list[int]  # the sampled ids, ending with the stop token when it stopped
    finish_reason: str  # "stop" or "length"


# ---- sampling the groups -------------------------------------------------------------------------

def sample_groups(model: Model, prompts: list[list[int]], cfg: GRPOConfig, stop_id: int | None,
                  seeds: list[int]) -> list[list[Rollout]]:
    """prompts (P lists of ids) -> P groups of G rollouts, decoded together, each prompt prefilled once."""
    longest = max(len(p) for p in prompts)
    capacity = min(longest + cfg.max_new_tokens, model.config.max_position_embeddings)
    decoder = BatchDecoder(model, max(cfg.slots or cfg.group * len(prompts), cfg.group), capacity)
    stops = () if stop_id is None else (stop_id,)
    seqs = [decoder.submit(p, cfg.max_new_tokens, replace(cfg.sampling, seed=seed), stops, n=cfg.group)
            for p, seed in zip(prompts, seeds)]
    while decoder.busy:
        decoder.step()
    return [[Rollout(i, s.new + ([stop_id] if s.finish_reason == "stop" else []), s.finish_reason) for s in group]
            for i, group in enumerate(seqs)]


def group_advantages(rewards: np.ndarray, eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """rewards (P,G) -> advantages (P,G), kept (P,) bool: (r - mean) / (std + eps) within each group.

    std is the sample standard deviation (as TRL's); a group with one reward value is not kept (A = 0).
    """
    r = np.asarray(rewards, dtype=np.float64)
    kept = r.max(axis=1) > r.min(axis=1)
    mean = r.mean(axis=1, keepdims=True)
    std = np.where(kept[:, None], r.std(axis=1, ddof=1, keepdims=True) + eps, 1.0)  # (P,1); 1: no 0/0 when eps is 0
    return np.where(kept[:, None], (r - mean) / std, 0.0), kept


def first_kept(kept: np.ndarray, limit: int) -> np.ndarray:
    """kept (P,) bool -> the same with only its first `limit` True (0: all of them).

    Drawing more prompts than the update takes and learning from the first groups whose replies
    differ is DAPO's dynamic sampling (Yu et al. 2025): every update then has its full number of
    groups that carry a signal, where skipped groups would have left it short."""
    if limit <= 0:
        return kept
    return kept & (np.cumsum(kept) <= limit)


@dataclass
class GroupBatches:
    """One kept group laid out for the update: its prompt runs once, its replies continue it."""
    prefix: np.ndarray  # (P-1,) the prompt without its last token: one forward for the whole group
    batches: list[Batch]  # the replies, each row the prompt's last token + the reply (padded)

    @property
    def reply_tokens(self) -> int:
        return sum(int(b["mask"].sum()) for b in self.batches)


def policy_batches(prompts: list[list[int]], groups: list[list[Rollout]], adv: np.ndarray, kept: np.ndarray,
                   pad_id: int, batch_size: int, share_prompt: bool = True) -> list[GroupBatches]:
    """The kept groups -> for each, its prompt (but the last token) and padded batches of its replies
    whose mask counts the reply tokens only, each with "adv" (B,T): its reply's advantage.

    A reply's row starts at the prompt's last token, whose output predicts the reply's first token;
    the rest of the prompt is a shared prefix (model.Prefix) that every row attends to. With
    `share_prompt` False each row is the whole prompt + reply and the prefix is empty (the same
    loss and gradient, G times the prompt's work: `bench grpo` times the two).
    """
    out = []
    for i in np.flatnonzero(kept):
        cut = len(prompts[i]) - 1 if share_prompt else 0  # prompt tokens in the shared prefix
        head = prompts[i][cut:]  # the prompt tokens each row starts with
        examples = [Example(np.asarray(head + r.reply, dtype=np.int64),
                            np.arange(len(head) + len(r.reply)) >= len(head)) for r in groups[i]]
        batches = []
        for a in range(0, len(examples), batch_size):
            b = collate(examples[a:a + batch_size], pad_id)
            b["adv"] = np.repeat(adv[i, a:a + batch_size, None], b["targets"].shape[1], axis=1)  # (B,T)
            batches.append(b)
        out.append(GroupBatches(np.asarray(prompts[i][:cut], dtype=np.int64), batches))
    return out


def run_prefix(model: Model, ids: np.ndarray):
    """A group's prompt (but its last token) through the model once -> (Prefix, its caches); (None, None)
    for an empty one."""
    if len(ids) == 0:
        return None, None
    _, caches = model.forward(ids[None])
    return Prefix(caches), caches


# ---- the policy update ---------------------------------------------------------------------------

@dataclass
class UpdateStats:
    loss: float  # GRPO's loss, mean over the reply tokens
    kl: float | None  # mean k3 estimate of KL(policy || reference) over the reply tokens (None: beta 0)
    clip_frac: float  # share of reply tokens whose ratio was clipped (0 on the first pass over samples)
    grad_norm: float  # before clipping
    n_tokens: int  # reply tokens that carried loss
    n_inputs: int  # input tokens processed (each shared prompt once), padding excluded


def reference_logp(ref: Model, groups: list[GroupBatches]) -> list[list[np.ndarray]]:
    """log p (B,T) of each group's batches' targets under the reference model: forward passes only."""
    out = []
    for gb in groups:
        prefix, _ = run_prefix(ref, gb.prefix)  # only the keys and values stay alive
        out.append([lm_head_loss(ref.forward(b["inputs"], keep_caches=False, prefix=prefix)[0], ref.params[EMBED],
                                 b["targets"], b["mask"], backward=False).logp for b in gb.batches])
    return out


def policy_update(model: Model, groups: list[GroupBatches], state: AdamWState, lr: float, cfg: GRPOConfig,
                  refs: list[list[np.ndarray]] | None = None, olds: list[list[np.ndarray]] | None = None
                  ) -> tuple[UpdateStats, list[list[np.ndarray]]]:
    """GRPO's loss and its gradient over every group's batches (added up), then one AdamW step
    -> (stats, each batch's log p (B,T) before the step, by group). Raises TrainingError, before
    touching the weights, on a NaN/inf loss or gradient.

    Each group's prompt goes forward once; its replies' batches continue it, and their gradient
    at its keys and values goes back through it once, after the last of them.
    """
    denom = max(sum(gb.reply_tokens for gb in groups), 1)  # the mean over all reply tokens of the round
    grads: dict[str, np.ndarray] | None = None
    loss = kl = clipped = 0.0
    n_inputs, logps = 0, []
    for g, gb in enumerate(groups):
        prefix, prefix_caches = run_prefix(model, gb.prefix)
        n_inputs += len(gb.prefix)
        logps.append([])
        for k, b in enumerate(gb.batches):
            ref = None if refs is None else refs[g][k]
            old = None if olds is None else olds[g][k]
            h, caches = model.forward(b["inputs"], prefix=prefix)
            out = lm_head_loss(h, model.params[EMBED], b["targets"], b["mask"], kind="grpo", denom=denom,
                               dwte=None if grads is None else grads[EMBED],
                               terms=PolicyTerms(b["adv"], old, ref, cfg.clip_eps, cfg.beta))
            del h
            if not math.isfinite(out.loss):
                raise TrainingError(f"the loss is {out.loss}")
            m = b["mask"]
            loss += out.loss
            if ref is not None:
                d = np.where(m, ref - out.logp, 0.0)
                kl += float(np.sum(np.exp(d) - d - 1.0))  # k3, zero where the mask does not count
            if old is not None:
                ratio, adv = np.exp(np.where(m, out.logp - old, 0.0)), b["adv"]
                clipped += float(np.sum(m & (((ratio > 1 + cfg.clip_eps) & (adv > 0)) |
                                             ((ratio < 1 - cfg.clip_eps) & (adv < 0)))))
            n_inputs += int(b["lengths"].sum())
            logps[-1].append(out.logp)
            grads = model.backward(out.dh, caches, grads or {EMBED: out.dwte}, free_caches=True,  # the head's dW is in
                                   prefix=prefix)
            del out, caches
        if prefix is not None:
            grads = model.backward_prefix(prefix, prefix_caches, grads, free_caches=True)
        del prefix, prefix_caches
    norm = global_norm(grads)
    if not math.isfinite(norm):
        raise TrainingError(f"the gradient norm is {norm}")
    adamw_step(model.params, grads, state, lr, cfg.beta1, cfg.beta2, 1e-8, cfg.weight_decay,
               clip_scale(norm, cfg.grad_clip))
    return UpdateStats(loss, kl / denom if refs is not None else None, clipped / denom, norm, denom, n_inputs), logps


# ---- one round -------------------------------------------------------------------------------------

@dataclass
class RoundResult:
    rewards: np.ndarray  # (P,G)
    figures: dict[str, float]  # the mean of each figure the reward function returned ("reward", ...)
    kept: int  # groups learned from
    skipped: int  # groups with one reward value
    surplus: int = 0  # groups whose rewards differ, past the update's `max_groups`: not learned from
    updates: list[UpdateStats] = field(default_factory=list)  # empty when every group was skipped
    groups: list[list[Rollout]] = field(default_factory=list)
    reply_tokens: int = 0  # sampled, stop tokens included
    gen_seconds: float = 0.0
    update_seconds: float = 0.0


def grpo_round(model: Model, prompts: list[list[int]], reward_fn: Callable[[int, Rollout], dict],
               cfg: GRPOConfig, state: AdamWState, lr: float, seeds: list[int], pad_id: int,
               stop_id: int | None, ref_model: Model | None = None) -> RoundResult:
    """Sample, score (`reward_fn(prompt index, rollout)` -> {"reward": float, other figures...}),
    compute the group advantages, and update the policy `cfg.updates` times on the kept groups
    (those whose rewards differ; with `cfg.max_groups`, the first so many of them)."""
    t0 = time.perf_counter()
    groups = sample_groups(model, prompts, cfg, stop_id, seeds)
    t1 = time.perf_counter()
    scored = [[reward_fn(i, r) for r in g] for i, g in enumerate(groups)]
    rewards = np.array([[f["reward"] for f in fs] for fs in scored], dtype=np.float64)
    figures = {k: float(np.mean([f[k] for fs in scored for f in fs])) for k in scored[0][0]}
    adv, differ = group_advantages(rewards, cfg.adv_eps)
    kept = first_kept(differ, cfg.max_groups)
    result = RoundResult(rewards, figures, int(kept.sum()), int((~differ).sum()), int((differ & ~kept).sum()),
                         groups=groups, reply_tokens=sum(len(r.reply) for g in groups for r in g),
                         gen_seconds=t1 - t0)
    laid = policy_batches(prompts, groups, adv, kept, pad_id, cfg.batch_size)
    if laid:
        refs = reference_logp(ref_model, laid) if ref_model is not None and cfg.beta else None
        olds = None  # the first pass: the sampling policy is the current one (ratio 1)
        for _ in range(cfg.updates):
            stats, logps = policy_update(model, laid, state, lr, cfg, refs, olds)
            olds = olds or logps
            result.updates.append(stats)
    result.update_seconds = time.perf_counter() - t1
    return result


def round_seeds(seed: int, step: int, n: int) -> list[int]:
    """The sampling seeds of round `step`: a function of (seed, step) only, so a resumed run samples the same."""
    return [int(s) for s in np.random.SeedSequence([seed, step]).generate_state(n)]


__all__ = ["GRPOConfig", "Rollout", "sample_groups", "group_advantages", "first_kept", "GroupBatches", "policy_batches",
           "run_prefix", "UpdateStats",
           "reference_logp", "policy_update", "RoundResult", "grpo_round", "round_seeds"]
