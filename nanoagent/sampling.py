"""Choosing the next token from logits: greedy, or sampled after temperature, top-k, top-p and min-p.

Lesson: lessons/08_kv_cache_and_sampling/README.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 1.0  # keep the fewest tokens whose probabilities add up to p
    min_p: float = 0.0  # keep tokens at least min_p times as likely as the most likely one
    repetition_penalty: float = 1.0  # > 1 makes tokens already seen less likely
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p < 1.0:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def apply_repetition_penalty(logits, seen, penalty):
    """logits (V,) -> a copy where every seen token's logit is divided by `penalty` if positive, else multiplied."""
    out = logits.copy()
    ids = np.unique(np.asarray(seen, dtype=np.int64))
    out[ids] = np.where(out[ids] > 0, out[ids] / penalty, out[ids] * penalty)
    return out


def filter_probs(probs, top_k=0, top_p=1.0, min_p=0.0):
    """probs (V,) -> probs with the tokens outside top-k, top-p and min-p set to 0, renormalised."""
    keep = np.ones(probs.shape, dtype=bool)
    if top_k and top_k < probs.size:
        keep[np.argpartition(-probs, top_k)[top_k:]] = False
    if min_p > 0:
        keep &= probs >= min_p * probs.max()
    if top_p < 1.0:
        order = np.argsort(-np.where(keep, probs, 0.0), kind="stable")
        mass = np.cumsum(probs[order] * keep[order])
        cut = np.searchsorted(mass, top_p * mass[-1]) + 1  # the fewest tokens reaching p
        keep[order[cut:]] = False
    out = np.where(keep, probs, 0.0)
    return out / out.sum()


def sample_next(logits, params: SamplingParams, rng: np.random.Generator, seen=()) -> int:
    """logits (V,) -> the next token id."""
    if params.repetition_penalty != 1.0 and len(seen):
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.temperature == 0.0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / params.temperature
    probs = np.exp(z - z.max())
    probs = filter_probs(probs / probs.sum(), params.top_k, params.top_p, params.min_p)
    return int(rng.choice(probs.size, p=probs))
