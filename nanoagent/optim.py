"""AdamW with decoupled weight decay, global-norm gradient clipping, warmup + cosine schedule.

The optimizer's state is an explicit `AdamWState` (the step count and the two moments, in
dicts keyed like the parameters), so `safetensors` saves it beside a checkpoint and HF tools
can read it. For each parameter p with gradient g, at step t (from 1):

    p <- p - lr * wd * p                       (decoupled decay; only matrices, not norms)
    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)

Lesson: lessons/13_finetune/README.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import kernels


@dataclass
class AdamWState:
    step: int = 0  # updates done so far
    m: dict[str, np.ndarray] = field(default_factory=dict)  # first moments, keyed like params
    v: dict[str, np.ndarray] = field(default_factory=dict)  # second moments


def adamw_init(params: dict[str, np.ndarray]) -> AdamWState:
    """Zero moments shaped like every parameter."""
    return AdamWState(0, {k: np.zeros_like(p) for k, p in params.items()},
                      {k: np.zeros_like(p) for k, p in params.items()})


def decays(p: np.ndarray) -> bool:
    """Weight decay applies to matrices (embedding, projections), not to 1-D norm weights."""
    return p.ndim >= 2


def adamw_step(params, grads, state: AdamWState, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0,
               grad_scale=1.0) -> None:
    """One AdamW update of every parameter in place; the gradients are used times `grad_scale` (clipping)."""
    missing = params.keys() - grads.keys()
    if missing:
        raise KeyError(f"no gradient for {sorted(missing)[:3]}")
    state.step += 1
    for name, p in params.items():
        wd = weight_decay if decays(p) else 0.0
        kernels.adamw(p, grads[name], state.m[name], state.v[name], lr, beta1, beta2, eps, wd, state.step,
                      grad_scale)


# ---- gradient clipping ---------------------------------------------------------------------

def global_norm(grads: dict[str, np.ndarray]) -> float:
    """sqrt(sum of every gradient entry squared), accumulated in float64."""
    return math.sqrt(sum(kernels.sum_squares(g) for g in grads.values()))


def clip_scale(norm: float, max_norm: float | None) -> float:
    """The factor that brings the global norm down to `max_norm` (1 when it is already below, or no clipping)."""
    if not max_norm or norm <= max_norm:
        return 1.0
    return max_norm / (norm + 1e-6)


# ---- learning-rate schedule ------------------------------------------------------------------

def lr_at(step: int, lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """The rate for update `step` (from 0): linear warmup over `warmup` steps, then cosine to lr * min_ratio."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# ---- saving and loading the state ---------------------------------------------------------------

def save_state(state: AdamWState, path: str | Path, metadata: dict | None = None) -> None:
    """The moments as `m/<name>`, `v/<name>` tensors of one safetensors file; the step in its metadata."""
    from safetensors.numpy import save_file
    tensors = {f"m/{k}": np.ascontiguousarray(a) for k, a in state.m.items()}
    tensors |= {f"v/{k}": np.ascontiguousarray(a) for k, a in state.v.items()}
    save_file(tensors, str(path), metadata={"step": str(state.step), "extra": json.dumps(metadata or {})})


def load_state(path: str | Path, params: dict[str, np.ndarray]) -> AdamWState:
    """The state saved by `save_state`, checked against `params` (same names, shapes, dtype)."""
    from safetensors import safe_open
    state = AdamWState()
    with safe_open(str(path), framework="numpy") as f:
        state.step = int(f.metadata()["step"])
        keys = set(f.keys())
        for name, p in params.items():
            for moment, store in (("m", state.m), ("v", state.v)):
                key = f"{moment}/{name}"
                if key not in keys:
                    raise ValueError(f"{path} has no {key}: it is not the optimizer state of this model")
                a = f.get_tensor(key)
                if a.shape != p.shape:
                    raise ValueError(f"{path}: {key} has shape {a.shape}, the parameter has {p.shape}")
                store[name] = np.array(a, dtype=p.dtype, order="C")
    return state


__all__ = ["AdamWState", "adamw_init", "adamw_step", "decays", "global_norm", "clip_scale", "lr_at",
           "save_state", "load_state"]
